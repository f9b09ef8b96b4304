//! The cluster the suite runs against: a client for it, a namespace per test (deleted
//! afterwards, even on failure), and whether pods really run there.

use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use rediscluster_crd::RedisCluster;
use serde_json::json;

use crate::TestResult;

/// A client for the current kubeconfig, or one line saying why there is none.
pub async fn client() -> TestResult<Client> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("e2e: no reachable cluster ({e}); point KUBECONFIG at one (make e2e-local)")
    };
    let client = Client::try_default().await.map_err(|e| unreachable(&e))?;
    let api = Api::<RedisCluster>::all(client.clone());
    let params = ListParams::default().limit(1);
    tokio::time::timeout(Duration::from_secs(10), api.list_metadata(&params))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    Ok(client)
}

/// A namespace of its own for one test; deleted when dropped, also when the test panics.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> TestResult<Self> {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("e2e-{test}-{suffix:x}");
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "e2e.redis-operator/test": test,
                // The Redis pods the operator creates must be admitted at the strictest level.
                "pod-security.kubernetes.io/enforce": "restricted",
            }}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(Self { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the cluster has a node whose kubelet really runs pods. The development control
/// plane's fake kubelet only marks pods Ready and registers no Node: there, scenarios that need
/// a Redis process are skipped (with a message), never passed silently.
pub async fn has_real_node(client: &Client) -> TestResult<bool> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(nodes.items.iter().any(|node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
    }))
}

/// True when pods really run; otherwise prints why `test` stops here and returns false, so
/// that the caller returns early. The message is the skip: cargo has no runtime skip.
pub async fn real_node_or_skip(client: &Client, test: &str) -> TestResult<bool> {
    let real = has_real_node(client).await?;
    if !real {
        eprintln!(
            "SKIPPED {test}: needs a node that runs pods (no Ready Node; the fake kubelet only \
             marks pods Ready). Start one with ../shared/k8s-local/start-node.sh, or use make e2e."
        );
    }
    Ok(real)
}
