//! A node restart under a cluster with storage: every container is killed and the node comes
//! back with the same pods, which reload their data from their claims. It takes the node down
//! for every other test too, so it runs alone, after the others (`make e2e-local`), and only
//! where the test can restart the node: `K8S_LOCAL_NODE_SCRIPT` names the local cluster's
//! `start-node.sh`.

mod node {
    use std::process::Command;

    use e2e::{NAME, Operator, Setup, StatusLog, TestResult, real_node_or_skip, test_keys};
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
        let restarts_before: i32 = setup.live_pods().await?.iter().map(restarts).sum();

        let log = StatusLog::start(&setup.clusters, NAME);
        node_script("stop")?;
        node_script("start")?;
        setup.wait_recovered(log, 3).await?;
        let pods = setup.live_pods().await?;
        let restarts_after: i32 = pods.iter().map(restarts).sum();
        assert!(
            restarts_after >= restarts_before + 3,
            "every container was restarted: {restarts_before} → {restarts_after} on {:?}",
            pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
        );
        setup.assert_every_pod_holds(&keys).await?;
        Ok(())
    }

    fn restarts(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |statuses| statuses.iter().map(|c| c.restart_count).sum())
    }
}
