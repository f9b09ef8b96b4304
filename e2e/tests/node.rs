//! A node restart under a cluster with storage: every container is killed and the node comes
//! back with the same pods, which reload their data from their claims. It takes the node down
//! for every other test too, so it runs alone, after the others (`make e2e-local`), and only
//! where the test can restart the node: `K8S_LOCAL_NODE_SCRIPT` names the local cluster's
//! `start-node.sh`.

mod node {
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::time::Duration;

    use e2e::{Operator, Setup, TestResult, real_node_or_skip, test_keys};
    use kube::ResourceExt;
    use serde_json::json;

    fn node_script(action: &str) -> TestResult {
        let script = std::env::var("K8S_LOCAL_NODE_SCRIPT")?;
        let status = Command::new(&script).arg(action).status()?;
        if !status.success() {
            return Err(format!("{script} {action}: {status}").into());
        }
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn keys_outlive_a_node_restart() -> TestResult {
        let client = e2e::client().await?;
        if !real_node_or_skip(&client, "node-restart").await? {
            return Ok(());
        }
        if std::env::var_os("K8S_LOCAL_NODE_SCRIPT").is_none() {
            eprintln!("skipped: set K8S_LOCAL_NODE_SCRIPT to the local cluster's start-node.sh");
            return Ok(());
        }
        let setup = Setup::new("node-restart").await?;
        let _operator = Operator::start(&setup.namespace.name)?;
        setup
            .create_cluster_with("redis:7.0", 3, json!({"storage": {"size": "64Mi"}}))
            .await?;
        setup.wait_running(3).await?;
        let keys = test_keys(200);
        setup.write_through_primary_service(&keys).await?;
        setup.assert_every_pod_holds(&keys).await?;
        let before = run_ids(&setup).await?;

        node_script("stop")?;
        node_script("start")?;
        // The node is back within seconds, often before a probe or a pod status shows the
        // outage, so the proof is in Redis rather than in the status: every Redis is a new
        // process (the kubelet's restart counts lag behind), and they are one primary with
        // linked replicas again, which only the operator makes of Redis that start unassigned.
        let deadline = tokio::time::Instant::now() + e2e::WAIT;
        loop {
            let restarted = match run_ids(&setup).await {
                Ok(after) => {
                    after.len() == 3 && after.iter().all(|(pod, id)| before.get(pod) != Some(id))
                }
                Err(_) => false,
            };
            if restarted && replicated(&setup).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not come back as one primary with linked replicas"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        setup.wait_running(3).await?;
        setup.assert_every_pod_holds(&keys).await?;
        Ok(())
    }

    /// Whether the pods' Redis are one primary and replicas linked to it.
    async fn replicated(setup: &Setup) -> bool {
        let Ok(pods) = setup.live_pods().await else {
            return false;
        };
        let mut primaries = 0;
        for pod in pods {
            let Ok(info) = e2e::replication_info(&setup.namespace.name, &pod.name_any()).await
            else {
                return false;
            };
            match info.get("role").map(String::as_str) {
                Some("master") => primaries += 1,
                Some("slave")
                    if info.get("master_link_status").map(String::as_str) == Some("up") => {}
                _ => return false,
            }
        }
        primaries == 1
    }

    /// Each pod's Redis `run_id`, new with every Redis process.
    async fn run_ids(setup: &Setup) -> TestResult<BTreeMap<String, String>> {
        let mut ids = BTreeMap::new();
        for pod in setup.live_pods().await? {
            let name = pod.name_any();
            let info = e2e::redis_cli(&setup.namespace.name, &name, &["info", "server"]).await?;
            let run_id = info
                .lines()
                .find_map(|line| line.trim().strip_prefix("run_id:"))
                .ok_or("no run_id")?
                .to_owned();
            ids.insert(name, run_id);
        }
        Ok(ids)
    }
}
