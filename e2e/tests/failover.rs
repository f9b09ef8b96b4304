//! Failover and planned handover on pods that really run, measured by a client: a writer sets
//! a new key about every 20 ms through `<name>-primary` while the primary's pod is deleted, its
//! Redis killed or stopped, the image rolled, the cluster scaled down under its primary, or
//! storage added to it (see `e2e::faults`). Each scenario checks that no acknowledged key older than 1 s is lost and
//! that no two pods that take writes carry the primary label, and prints its figures.

// In a module so that `cargo test --skip failover::` can leave these to a run of their own.
mod failover {
    use e2e::faults::{Fault, Outcome, inflict};
    use e2e::{NAME, Setup, TestResult, reports, test_keys, wait_for};
    use rediscluster_crd::{Phase, RedisCluster};

    /// The operator's default `--failover-after`.
    const FAILOVER_AFTER: f64 = 5.0;
    /// The operator's default `--redis-probe-interval`: a primary that stops answering right
    /// after a probe is noticed this much later.
    const PROBE_INTERVAL: f64 = 5.0;

    /// A Running 3-pod sample in its own namespace, the fault inflicted; None (said) where
    /// pods do not really run or the fault cannot be made here.
    async fn run(test: &str, fault: Fault) -> TestResult<Option<(Setup, Outcome)>> {
        let Some((setup, _operator)) = Setup::sample_on_real_pods(test, 3).await? else {
            return Ok(None);
        };
        let Some(outcome) = inflict(&setup, fault).await? else {
            eprintln!(
                "skipped: this test cannot signal the node's processes (they run elsewhere, or it is not root)"
            );
            return Ok(None);
        };
        Ok(Some((setup, outcome)))
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_deleted_primary_pod_fails_over_within_seconds_without_losing_writes() -> TestResult {
        let Some((_setup, outcome)) = run("failover-delete", Fault::PodDeleted).await? else {
            return Ok(());
        };
        let figures = &outcome.figures;
        // Its Redis still answered: it handed its last writes over before the new one took
        // over, so nothing acknowledged is lost.
        figures.assert_handed_over_without_loss();
        assert_ne!(outcome.new_primary, outcome.old_primary);
        assert!(
            figures.back_after < 5.0,
            "writes back {:.2}s after the primary's pod was deleted",
            figures.back_after
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_killed_primary_redis_is_serving_again_within_seconds_with_every_write() -> TestResult
    {
        let Some((_setup, outcome)) = run("failover-kill", Fault::RedisKilled).await? else {
            return Ok(());
        };
        let figures = &outcome.figures;
        figures.assert_no_loss_and_one_primary();
        assert!(
            figures.lost.is_empty(),
            "the restarted primary reloads its append-only file, or a replica takes over: \
             nothing acknowledged is lost, lost {:?}",
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
        let Some((_setup, outcome)) = run("failover-hung", Fault::RedisStopped).await? else {
            return Ok(());
        };
        let figures = &outcome.figures;
        // The stopped Redis woke believing it is the primary: it follows the new one now
        // (inflict waited for that), and it never carried the label beside it.
        assert_ne!(outcome.new_primary, outcome.old_primary);
        figures.assert_no_loss_and_one_primary();
        println!(
            "figures: stopped primary: {} labelled primary {:.2}s after the stop; the old \
             primary followed it {:.2}s after it woke",
            outcome.new_primary,
            outcome.replaced_after.unwrap_or_default(),
            outcome.rejoined_after.unwrap_or_default()
        );
        // Noticed within a probe interval (plus its 1 s timeout), replaced after
        // --failover-after, routed within about 2 s.
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
        let Some((setup, outcome)) = run("failover-roll", Fault::ImageRolled).await? else {
            return Ok(());
        };
        for pod in setup.live_pods().await? {
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            assert_eq!(image.as_deref(), Some("redis:7.2"), "every pod rolled");
        }
        assert_ne!(
            outcome.new_primary, outcome.old_primary,
            "the primary handed over to an updated replica"
        );
        let figures = &outcome.figures;
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
        let Some((_setup, outcome)) = run("failover-scale", Fault::ScaledTo1).await? else {
            return Ok(());
        };
        assert_ne!(outcome.old_primary, format!("{NAME}-0"));
        assert_eq!(outcome.new_primary, format!("{NAME}-0"));
        let figures = &outcome.figures;
        figures.assert_handed_over_without_loss();
        assert!(
            figures.longest_gap < 2.0,
            "writes failed for {:.2}s during the scale-down",
            figures.longest_gap
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn a_primary_lost_with_its_data_loses_at_most_the_last_moment_of_writes() -> TestResult {
        let Some((_setup, outcome)) = run("failover-lost", Fault::PrimaryLost).await? else {
            return Ok(());
        };
        let figures = &outcome.figures;
        // Asynchronous replication: what the replicas had not received when the primary died
        // is gone; it must be no more than the last moment's writes.
        figures.assert_no_loss_and_one_primary();
        assert!(
            figures.back_after < 5.0,
            "writes back {:.2}s after the primary was lost",
            figures.back_after
        );
        Ok(())
    }

    #[tokio::test]
    #[ignore = "live: needs a cluster (make e2e-local)"]
    async fn storage_added_to_a_running_cluster_moves_its_data_onto_claims_while_it_serves()
    -> TestResult {
        let Some((setup, _operator)) = Setup::sample_on_real_pods("add-storage", 3).await? else {
            return Ok(());
        };
        assert!(setup.claim_uids().await?.is_empty());
        let keys = test_keys(200);
        setup.write_through_primary_service(&keys).await?;
        let measurement = e2e::faults::Measurement::start(&setup, "redis:7.0").await?;
        let changed = e2e::faults::clock()?;
        setup
            .patch_spec(serde_json::json!({"storage": {"size": "64Mi"}}))
            .await?;
        // Generation 2 Running: every pod replaced, each on its claim.
        wait_for(
            &setup.clusters,
            NAME,
            "Running with 3 for generation 2",
            |c: Option<&RedisCluster>| {
                reports(Phase::Running, 3)(c) && c.is_some_and(|c| c.metadata.generation == Some(2))
            },
        )
        .await?;
        let figures = measurement.finish(&setup, "storage added", changed).await?;
        assert_eq!(setup.mounted_claims().await?, e2e::claims_of_pods(3));
        figures.assert_handed_over_without_loss();
        assert!(
            figures.longest_gap < 2.0,
            "writes paused at most for a switchover: longest gap {:.2}s",
            figures.longest_gap
        );
        setup.wait_running(3).await?;
        setup.assert_every_pod_holds(&keys).await?;
        Ok(())
    }
}
