//! One Redis service per RedisCluster, on pods that really run: a primary and replicas linked
//! to it, keys written through `<name>-primary` and read through `<name>-replicas` and in
//! every pod, scaling up and down, and the adoption of a cluster the previous release made.

use std::time::Instant;

use e2e::{
    NAME, Operator, Setup, StatusLog, TestResult, kubectl, real_node_or_skip, redis_cli, test_keys,
    wait_for,
};
use k8s_openapi::api::core::v1::{ExecAction, Probe};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use rediscluster_crd::Phase;
use serde_json::json;

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn the_sample_is_one_primary_whose_keys_every_replica_serves() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("replication", 3).await? else {
        return Ok(());
    };
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    assert_eq!(
        primary,
        format!("{NAME}-0"),
        "a new cluster's primary is pod 0, not whichever pod answered first"
    );
    let table = kubectl(["get", "redis", NAME, "-n", &setup.namespace.name]).await?;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("PRIMARY") && table.contains(&primary),
        "{table}"
    );

    let keys = test_keys(1000);
    let started = Instant::now();
    setup.write_through_primary_service(&keys).await?;
    setup.assert_every_pod_holds(&keys).await?;
    println!(
        "1000 keys written through {NAME}-primary and read back in every pod and through \
         {NAME}-replicas in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    // A replica refuses writes: the -replicas Service is for reads only.
    let replica = setup
        .live_pods()
        .await?
        .iter()
        .map(ResourceExt::name_any)
        .find(|name| *name != primary)
        .ok_or("no replica")?;
    let refused = redis_cli(&setup.namespace.name, &replica, &["set", "k", "v"]).await?;
    assert!(refused.starts_with("READONLY"), "{refused}");
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn scaling_3_to_5_to_2_keeps_every_key_on_every_pod() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("replication-scale", 3).await? else {
        return Ok(());
    };
    let keys = test_keys(1000);
    setup.write_through_primary_service(&keys).await?;
    let primary = setup.assert_one_primary_and_linked_replicas().await?;

    let started = Instant::now();
    setup.patch_spec(json!({"replicas": 5})).await?;
    setup.wait_running(5).await?;
    println!("3 -> 5 Running in {:.1}s", started.elapsed().as_secs_f64());
    // The new replicas counted as ready only once synced: they hold every key right now.
    let expected: Vec<String> = keys.iter().map(|(_, value)| value.clone()).collect();
    for pod in [format!("{NAME}-3"), format!("{NAME}-4")] {
        assert_eq!(
            setup.read_keys(&pod, None, &keys).await?,
            expected,
            "{pod} holds every key as soon as the cluster is Running"
        );
    }
    setup.assert_every_pod_holds(&keys).await?;
    assert_eq!(
        setup.assert_one_primary_and_linked_replicas().await?,
        primary,
        "scaling up leaves the primary where it is"
    );

    let started = Instant::now();
    setup.patch_spec(json!({"replicas": 2})).await?;
    setup.wait_running(2).await?;
    println!("5 -> 2 Running in {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(setup.live_pods().await?.len(), 2);
    setup.assert_every_pod_holds(&keys).await?;
    Ok(())
}

/// The readiness probe of the release before replication: Redis answers PING.
fn previous_release_readiness() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "sh",
                    "-c",
                    "timeout 2 redis-cli -p 6379 ping | grep -q PONG",
                ]
                .map(String::from)
                .to_vec(),
            ),
        }),
        initial_delay_seconds: Some(2),
        period_seconds: Some(5),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_cluster_of_the_previous_release_is_adopted_with_its_data() -> TestResult {
    let setup = Setup::new("replication-adopt").await?;
    if !real_node_or_skip(&setup.client, "adopt").await? {
        return Ok(());
    }
    if e2e::in_cluster() {
        println!(
            "SKIPPED adopt: needs the operator to start after the previous release's \
             StatefulSet exists, which the deployed operator does not wait for"
        );
        return Ok(());
    }
    let ns = setup.namespace.name.clone();
    // What the previous release made: the StatefulSet with Redis as independent primaries
    // (no arguments, readiness by PING), the headless Service, a Running status.
    setup.create_cluster("redis:7.0", 3).await?;
    let cluster = setup.clusters.get(NAME).await?;
    let mut previous = redis_operator::desired::initial_statefulset(&cluster)?;
    let container = previous
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
        .map(|pod| &mut pod.containers[0])
        .ok_or("no container")?;
    container.args = None;
    container.readiness_probe = Some(previous_release_readiness());
    // Nor did it say what its pods were made for.
    if let Some(metadata) = previous
        .spec
        .as_mut()
        .and_then(|spec| spec.template.metadata.as_mut())
    {
        metadata.annotations = None;
    }
    setup
        .statefulsets
        .create(&PostParams::default(), &previous)
        .await?;
    let [headless, ..] = redis_operator::desired::services(&cluster)?;
    setup
        .services
        .create(&PostParams::default(), &headless)
        .await?;
    wait_for(
        &setup.statefulsets,
        NAME,
        "the previous release's pods ready",
        |sts| {
            sts.and_then(|s| s.status.as_ref())
                .is_some_and(|s| s.ready_replicas == Some(3))
        },
    )
    .await?;
    let status = json!({
        "apiVersion": "cache.example.com/v1alpha1", "kind": "RedisCluster",
        "status": {"phase": "Running", "readyReplicas": 3, "replicas": 3, "updatedReplicas": 3,
                   "observedGeneration": cluster.metadata.generation},
    });
    setup
        .clusters
        .patch_status(
            NAME,
            &PatchParams::apply("previous-release").force(),
            &Patch::Apply(&status),
        )
        .await?;
    // Keys written to pod 0, as a client of the previous release might have.
    let keys = test_keys(1000);
    let pod0 = format!("{NAME}-0");
    let mut mset = vec!["mset"];
    for (key, value) in &keys {
        mset.extend([key.as_str(), value.as_str()]);
    }
    assert_eq!(redis_cli(&ns, &pod0, &mset).await?, "OK");
    let old_uids: Vec<String> = setup
        .live_pods()
        .await?
        .iter()
        .filter_map(ResourceExt::uid)
        .collect();

    let log = StatusLog::start(&setup.clusters, NAME);
    let started = Instant::now();
    let _operator = Operator::start(&ns)?;
    // Running again only after the operator has rolled every pod onto the new template.
    wait_for(
        &setup.clusters,
        NAME,
        "Running with a primary, every pod rolled",
        |c| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.phase == Phase::Running && s.ready_replicas == 3 && s.primary.is_some()
            })
        },
    )
    .await?;
    let seen = log.stop();
    let rolled = setup.live_pods().await?;
    assert!(
        rolled
            .iter()
            .all(|pod| !old_uids.contains(&pod.uid().unwrap_or_default())),
        "every pod was replaced to take the new arguments"
    );
    assert!(
        seen.iter()
            .filter_map(|c| c.status.as_ref())
            .any(|s| s.phase != Phase::Running),
        "the operator reported the adoption before Running"
    );
    println!(
        "adopted and rolled 3 pods in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    setup.wait_running(3).await?;
    setup.assert_every_pod_holds(&keys).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_statefulset_of_the_previous_release_switches_to_on_delete_without_a_restart()
-> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("upgrade-strategy", 3).await? else {
        return Ok(());
    };
    let pods_before = setup.pod_uids().await?;
    let statuses = StatusLog::start(&setup.clusters, NAME);
    // What the previous release left: RollingUpdate, the partition owned by another writer
    // than the operator's apply (it created the StatefulSet), so an apply cannot drop it.
    let previous = json!({"spec": {"updateStrategy": {
        "type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}});
    setup
        .statefulsets
        .patch(
            NAME,
            &PatchParams {
                field_manager: Some("previous-release".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&previous),
        )
        .await?;
    wait_for(
        &setup.statefulsets,
        NAME,
        "switched to OnDelete",
        |sts: Option<&k8s_openapi::api::apps::v1::StatefulSet>| {
            sts.and_then(|s| s.spec.as_ref())
                .and_then(|s| s.update_strategy.as_ref())
                .is_some_and(|u| {
                    u.type_.as_deref() == Some("OnDelete") && u.rolling_update.is_none()
                })
        },
    )
    .await?;
    setup.wait_running(3).await?;
    let seen = statuses.stop();
    assert!(
        seen.iter()
            .filter_map(|c| c.status.as_ref())
            .all(|s| s.phase != Phase::Failed),
        "never Failed (the API server refuses rollingUpdate beside OnDelete)"
    );
    let pods_after = setup.pod_uids().await?;
    assert_eq!(pods_after, pods_before, "no pod was replaced");
    Ok(())
}
