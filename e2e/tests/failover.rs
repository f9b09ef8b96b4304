//! Failover and planned switchover on pods that really run, measured by a client: a writer
//! sets a new key about every 10 ms through `<name>-primary` while the primary's pod is deleted,
//! its Redis killed or stopped, the image rolled, the cluster scaled down under its primary.
//! Each scenario checks that no key acknowledged more than 1 s before the fault is lost and
//! that no two pods carry the primary label at once, and prints its figures.

// In a module so that `cargo test --skip failover::` can leave these to a run of their own.
mod failover {
    use std::time::Duration;

    use e2e::faults::{Measurement, clock, redis_pid, signal, wait_primary_other_than};
    use e2e::{NAME, Setup, TestResult, replication_info, wait_for};
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::DeleteParams;
    use serde_json::json;

    /// The operator's default `--failover-after`.
    const FAILOVER_AFTER: f64 = 5.0;
    /// The operator's default `--redis-probe-interval`: a primary that stops answering right after
    /// a probe is noticed this much later.
    const PROBE_INTERVAL: f64 = 5.0;

    fn restarts(pod: Option<&Pod>) -> i32 {
        pod.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map_or(0, |c| c.restart_count)
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_deleted_primary_pod_fails_over_within_seconds_without_losing_writes() -> TestResult {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("failover-delete", 3).await?
        else {
            return Ok(());
        };
        let old = setup.assert_one_primary_and_linked_replicas().await?;
        let measurement = Measurement::start(&setup, "redis:7.0").await?;
        let fault = clock()?;
        setup.pods.delete(&old, &DeleteParams::default()).await?;
        let new = wait_primary_other_than(&setup, &old).await?;
        setup.wait_running(3).await?;
        let figures = measurement
            .finish(&setup, "primary pod deleted", fault)
            .await?;
        figures.assert_handed_over_without_loss();
        assert!(
            figures.back_after < 5.0,
            "writes back {:.2}s after the primary's pod was deleted",
            figures.back_after
        );
        // The pod the StatefulSet recreated under the old name is a replica of the new primary.
        assert_eq!(
            setup.assert_one_primary_and_linked_replicas().await?,
            new,
            "the recreated {old} is not a second primary"
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_killed_primary_redis_is_serving_again_within_seconds_with_every_write() -> TestResult
    {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("failover-kill", 3).await? else {
            return Ok(());
        };
        let old = setup.assert_one_primary_and_linked_replicas().await?;
        let pod = setup.pods.get(&old).await?;
        let Some(pid) = redis_pid(&pod) else {
            eprintln!("skipped: this test cannot see the node's processes to kill Redis");
            return Ok(());
        };
        let before = restarts(Some(&pod));
        let measurement = Measurement::start(&setup, "redis:7.0").await?;
        let fault = clock()?;
        signal(pid, "-KILL").await?;
        wait_for(&setup.pods, &old, "its Redis container restarted", |p| {
            restarts(p) > before
        })
        .await?;
        // The restarted Redis comes back unassigned: Running again means the operator gave it (or
        // a replica) the primary role after the kill.
        setup.wait_running(3).await?;
        let figures = measurement
            .finish(&setup, "primary Redis killed (container restart)", fault)
            .await?;
        figures.assert_no_loss_and_one_primary();
        assert!(
            figures.lost.is_empty(),
            "the restarted primary reloads its append-only file: nothing acknowledged is lost, \
             lost {:?}",
            figures.lost
        );
        assert!(
            figures.back_after < 5.0,
            "writes back {:.2}s after the primary's Redis was killed",
            figures.back_after
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_hung_primary_is_replaced_and_rejoins_as_a_replica_when_it_wakes() -> TestResult {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("failover-hung", 3).await? else {
            return Ok(());
        };
        let old = setup.assert_one_primary_and_linked_replicas().await?;
        let pod = setup.pods.get(&old).await?;
        let Some(pid) = redis_pid(&pod) else {
            eprintln!("skipped: this test cannot see the node's processes to stop Redis");
            return Ok(());
        };
        let measurement = Measurement::start(&setup, "redis:7.0").await?;
        let fault = clock()?;
        signal(pid, "-STOP").await?;
        let replaced = wait_primary_other_than(&setup, &old).await;
        let replaced_after = clock()? - fault;
        // Wake it whatever happened, so that the namespace can go.
        tokio::time::sleep(Duration::from_secs(2)).await;
        signal(pid, "-CONT").await?;
        let woke = clock()?;
        let new = replaced?;
        // It still believes it is the primary: the operator must make it follow the new one.
        let new_ip = setup
            .pods
            .get(&new)
            .await?
            .status
            .and_then(|s| s.pod_ip)
            .ok_or("no IP")?;
        let deadline = tokio::time::Instant::now() + e2e::WAIT;
        loop {
            let info = replication_info(&setup.namespace.name, &old).await?;
            if info.get("role").map(String::as_str) == Some("slave")
                && info.get("master_host") == Some(&new_ip)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{old} did not rejoin as a replica of {new}: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rejoined = clock()? - woke;
        setup.wait_running(3).await?;
        let figures = measurement
            .finish(&setup, "primary Redis stopped (SIGSTOP)", fault)
            .await?;
        println!(
            "figures: stopped primary: {new} labelled primary {replaced_after:.2}s after the stop; \
             the old primary followed it {rejoined:.2}s after it woke"
        );
        figures.assert_no_loss_and_one_primary();
        // Noticed within a probe interval (plus its 1 s timeout), replaced after --failover-after,
        // routed within about 2 s.
        let bound = FAILOVER_AFTER + PROBE_INTERVAL + 4.0;
        assert!(
            figures.back_after < bound,
            "writes back {:.2}s after the primary hung (at most --failover-after, plus a probe \
             interval and a timeout to notice, plus routing: {bound}s)",
            figures.back_after
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn an_image_roll_hands_the_primary_over_with_under_two_seconds_of_failed_writes()
    -> TestResult {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("failover-roll", 3).await? else {
            return Ok(());
        };
        let old = setup.assert_one_primary_and_linked_replicas().await?;
        let measurement = Measurement::start(&setup, "redis:7.0").await?;
        let fault = clock()?;
        setup.patch_spec(json!({ "image": "redis:7.2" })).await?;
        setup.wait_running(3).await?;
        let figures = measurement
            .finish(&setup, "image roll (planned switchover)", fault)
            .await?;
        let pods = setup.live_pods().await?;
        for pod in &pods {
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref());
            assert_eq!(image, Some("redis:7.2"), "every pod rolled");
        }
        let new = setup.assert_one_primary_and_linked_replicas().await?;
        assert_ne!(new, old, "the primary handed over to an updated replica");
        figures.assert_handed_over_without_loss();
        assert!(
            figures.longest_gap < 2.0,
            "writes failed for {:.2}s during the roll",
            figures.longest_gap
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn scaling_3_to_1_hands_the_primary_over_to_pod_0_first() -> TestResult {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("failover-scale", 3).await?
        else {
            return Ok(());
        };
        // Make the primary a pod that the scale-down removes.
        let zero = format!("{NAME}-0");
        if setup.assert_one_primary_and_linked_replicas().await? == zero {
            setup.pods.delete(&zero, &DeleteParams::default()).await?;
            wait_primary_other_than(&setup, &zero).await?;
            setup.wait_running(3).await?;
        }
        let old = setup.assert_one_primary_and_linked_replicas().await?;
        let measurement = Measurement::start(&setup, "redis:7.0").await?;
        let fault = clock()?;
        setup.patch_spec(json!({ "replicas": 1 })).await?;
        setup.wait_running(1).await?;
        let figures = measurement
            .finish(&setup, &format!("scale 3 to 1 with {old} primary"), fault)
            .await?;
        assert_eq!(setup.assert_one_primary_and_linked_replicas().await?, zero);
        figures.assert_handed_over_without_loss();
        assert!(
            figures.longest_gap < 2.0,
            "writes failed for {:.2}s during the scale-down",
            figures.longest_gap
        );
        Ok(())
    }
}
