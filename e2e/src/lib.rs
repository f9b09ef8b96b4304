//! Helpers for the live suite: a namespace per test (deleted afterwards, even on failure), the
//! operator as a child process scoped to that namespace, and watch-based waits with timeouts.
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` stays hermetic; `make e2e-local`
//! runs them against the current kubeconfig.

use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource};
use rediscluster_crd::RedisCluster;
use serde_json::json;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

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
            "metadata": {"name": name, "labels": {"e2e.redis-operator/test": test}}
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

/// The operator binary run as a child process, watching one namespace; killed when dropped.
pub struct Operator {
    child: Child,
    namespace: String,
}

impl Operator {
    pub fn start(namespace: &str) -> TestResult<Self> {
        let binary = std::env::var_os("REDIS_OPERATOR_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/redis-operator"),
            PathBuf::from,
        );
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("{namespace}.operator.log")))?;
        let child = Command::new(&binary)
            .args([
                "run",
                "--namespace",
                namespace,
                "--failure-grace-period",
                "10s",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (run `cargo build -p redis-operator`)",
                    binary.display()
                )
            })?;
        Ok(Self {
            child,
            namespace: namespace.to_owned(),
        })
    }

    /// Kills the process at once, the way a node failure would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(
            std::env::temp_dir().join(format!("{}.operator.log", self.namespace)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits, by watching, until `condition` holds for the named object; fails after `WAIT`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> TestResult<Option<K>>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            let current = api.get_opt(name).await?;
            Err(format!(
                "timed out after {WAIT:?} waiting for {name}: {what}; last seen: {current:#?}"
            )
            .into())
        }
    }
}

/// A RedisCluster manifest as JSON.
pub fn redis_cluster(name: &str, image: &str, replicas: i32) -> TestResult<RedisCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cache.example.com/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": name},
        "spec": {"image": image, "replicas": replicas},
    }))?)
}
