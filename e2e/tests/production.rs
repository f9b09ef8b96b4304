//! Production pods on a real node: data on PersistentVolumeClaims that outlives every pod,
//! claim retention on scale-down, a memory limit that Redis keeps to, and a disruption budget
//! that lets evictions take one pod at a time. (Storage added to a running cluster is measured
//! with a writer, among the failover scenarios.)

use std::time::Duration;

use e2e::{
    NAME, Setup, StatusLog, TestResult, cli_login, exec, password_volume, redis_cli, reports,
    test_keys, wait_for,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};
use rediscluster_crd::{Phase, RedisCluster};
use serde_json::json;

const STORAGE: &str = "64Mi";

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn keys_outlive_every_pod_of_a_cluster_with_storage() -> TestResult {
    let storage = json!({"storage": {"size": STORAGE}});
    let Some((setup, _operator)) = Setup::running_on_real_pods("keep-data", 3, storage).await?
    else {
        return Ok(());
    };
    assert_eq!(setup.mounted_claims().await?, e2e::claims_of_pods(3));
    let claims_before = setup.claim_uids().await?;
    let keys = test_keys(200);
    setup.write_through_primary_service(&keys).await?;
    setup.assert_every_pod_holds(&keys).await?;
    let pods_before: Vec<String> = setup
        .live_pods()
        .await?
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    let log = StatusLog::start(&setup.clusters, NAME);

    // Every pod at once: no Redis is left to copy the data from.
    setup
        .pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("app.kubernetes.io/instance={NAME}")),
        )
        .await?;
    setup.wait_recovered(log, 3).await?;
    let pods_after: Vec<String> = setup
        .live_pods()
        .await?
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    assert!(
        pods_after.iter().all(|uid| !pods_before.contains(uid)),
        "every pod was replaced"
    );
    assert_eq!(setup.claim_uids().await?, claims_before, "the same claims");
    setup.assert_every_pod_holds(&keys).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn claims_are_kept_on_scale_down_and_reused_on_scale_up_or_deleted_if_asked() -> TestResult {
    let storage = json!({"storage": {"size": STORAGE}});
    let Some((setup, _operator)) = Setup::running_on_real_pods("retain-claims", 3, storage).await?
    else {
        return Ok(());
    };
    let keys = test_keys(100);
    setup.write_through_primary_service(&keys).await?;
    let claims_before = setup.claim_uids().await?;
    assert_eq!(claims_before.len(), 3);

    setup.patch_spec(json!({"replicas": 1})).await?;
    setup.wait_phase(Phase::Running, 1).await?;
    assert_eq!(
        setup.claim_uids().await?,
        claims_before,
        "scale-down retains the claims by default"
    );
    setup.patch_spec(json!({"replicas": 3})).await?;
    setup.wait_phase(Phase::Running, 3).await?;
    setup.wait_running(3).await?;
    assert_eq!(
        setup.claim_uids().await?,
        claims_before,
        "the same claims, reused"
    );
    assert_eq!(setup.mounted_claims().await?, e2e::claims_of_pods(3));
    setup.assert_every_pod_holds(&keys).await?;

    // Asked to delete them on scale-down, the StatefulSet controller does.
    setup
        .patch_spec(
            json!({"storage": {"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}},
                           "replicas": 1}),
        )
        .await?;
    setup.wait_phase(Phase::Running, 1).await?;
    let deadline = tokio::time::Instant::now() + e2e::WAIT;
    loop {
        let left = setup.claim_uids().await?;
        if left.keys().collect::<Vec<_>>() == [&format!("data-{NAME}-0")] {
            assert_eq!(
                left[&format!("data-{NAME}-0")],
                claims_before[&format!("data-{NAME}-0")]
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "claims left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    setup.assert_every_pod_holds(&keys).await?;
    Ok(())
}

/// A pod with redis-cli and no memory limit of its own, to fill a Redis from outside its
/// container: a client run inside the container would count against the limit under test.
async fn client_pod(setup: &Setup) -> TestResult<String> {
    let (volume, mount) = password_volume(NAME);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "filler"},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "redis", "image": "redis:7.0", "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "volumeMounts": [mount],
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}}
            }],
            "volumes": [volume]
        }
    }))?;
    setup.pods.create(&Default::default(), &pod).await?;
    wait_for(&setup.pods, "filler", "running", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.pod_ip.as_ref()).is_some()
            && p.and_then(|p| p.status.as_ref()?.phase.clone()).as_deref() == Some("Running")
    })
    .await?;
    Ok("filler".to_owned())
}

/// Fills the Redis at `address` with `megabytes` of 1000-byte values, a megabyte per EVAL
/// sent from `client`; returns the replies that were not a count of keys set.
async fn fill(
    setup: &Setup,
    client: &str,
    address: &str,
    megabytes: u32,
) -> TestResult<Vec<String>> {
    let script = "for i=1,1000 do redis.call('set', 'fill:'..ARGV[1]..':'..i, string.rep('x', 1000)) end return 1000";
    let shell = format!(
        "{}i=0; while [ $i -lt {megabytes} ]; do i=$((i+1)); redis-cli -h {address} eval \"{script}\" 0 $i; done",
        cli_login()
    );
    let out = exec(&setup.namespace.name, client, &["sh", "-c", &shell]).await?;
    Ok(out
        .lines()
        .filter(|line| line.trim() != "1000")
        .map(str::to_owned)
        .collect())
}

async fn info_field(setup: &Setup, pod: &str, section: &str, field: &str) -> TestResult<String> {
    let info = redis_cli(&setup.namespace.name, pod, &["info", section]).await?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{field}:")))
        .map(str::to_owned)
        .ok_or_else(|| format!("no {field} in INFO {section}").into())
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |statuses| statuses.iter().map(|c| c.restart_count).sum())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_memory_limit_makes_redis_evict_or_refuse_writes_instead_of_being_killed() -> TestResult {
    let limited =
        json!({"resources": {"limits": {"memory": "64Mi"}}, "maxmemoryPolicy": "allkeys-lru"});
    let Some((setup, _operator)) = Setup::running_on_real_pods("memory-limit", 1, limited).await?
    else {
        return Ok(());
    };
    let pod = format!("{NAME}-0");
    let client = client_pod(&setup).await?;
    let address = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default()
    };
    // 80% of what 24Mi leaves of 64Mi.
    assert_eq!(
        info_field(&setup, &pod, "memory", "maxmemory").await?,
        "33554432"
    );
    let failed = fill(&setup, &client, &address(&setup.pods.get(&pod).await?), 60).await?;
    assert!(
        failed.is_empty(),
        "allkeys-lru takes every write: {failed:?}"
    );
    let evicted: u64 = info_field(&setup, &pod, "stats", "evicted_keys")
        .await?
        .parse()?;
    assert!(evicted > 0, "keys were evicted");
    let used: u64 = info_field(&setup, &pod, "memory", "used_memory")
        .await?
        .parse()?;
    assert!(
        used <= 33_554_432 + 2_000_000,
        "used_memory {used} stays near maxmemory"
    );
    assert_eq!(
        restarts(&setup.pods.get(&pod).await?),
        0,
        "never OOM-killed"
    );

    // noeviction (a new pod: the policy is part of what it was made for).
    setup
        .patch_spec(json!({"maxmemoryPolicy": "noeviction"}))
        .await?;
    wait_for(
        &setup.clusters,
        NAME,
        "Running with 1 for generation 2",
        |c: Option<&RedisCluster>| {
            reports(Phase::Running, 1)(c) && c.is_some_and(|c| c.metadata.generation == Some(2))
        },
    )
    .await?;
    let failed = fill(&setup, &client, &address(&setup.pods.get(&pod).await?), 60).await?;
    assert!(
        failed.iter().any(|reply| reply.contains("OOM")),
        "writes past maxmemory get Redis's OOM error: {failed:?}"
    );
    assert_eq!(
        info_field(&setup, &pod, "stats", "evicted_keys").await?,
        "0"
    );
    let answer = redis_cli(&setup.namespace.name, &pod, &["set", "one-more", "x"]).await?;
    assert!(answer.contains("OOM"), "{answer}");
    assert_eq!(
        redis_cli(&setup.namespace.name, &pod, &["ping"]).await?,
        "PONG"
    );
    assert_eq!(
        restarts(&setup.pods.get(&pod).await?),
        0,
        "never OOM-killed"
    );
    Ok(())
}

/// Evicts `pod` through the Eviction API, once (as `kubectl drain` does, before it retries).
async fn evict(setup: &Setup, pod: &str) -> TestResult {
    let body = std::env::temp_dir().join(format!("{}-{pod}.eviction.json", setup.namespace.name));
    std::fs::write(
        &body,
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
               "metadata": {"name": pod, "namespace": setup.namespace.name}})
        .to_string(),
    )?;
    let path = format!(
        "/api/v1/namespaces/{}/pods/{pod}/eviction",
        setup.namespace.name
    );
    let result = e2e::kubectl(["create", "--raw", &path, "-f", &body.display().to_string()]).await;
    std::fs::remove_file(&body)?;
    result.map(|_| ())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn evictions_take_one_pod_at_a_time() -> TestResult {
    let Some((setup, _operator)) = Setup::running_on_real_pods("evictions", 3, json!({})).await?
    else {
        return Ok(());
    };
    let budgets: Api<PodDisruptionBudget> =
        Api::namespaced(setup.client.clone(), &setup.namespace.name);
    let budget = wait_for(
        &budgets,
        NAME,
        "one disruption allowed",
        |b: Option<&PodDisruptionBudget>| {
            b.and_then(|b| b.status.as_ref())
                .is_some_and(|s| s.disruptions_allowed == 1 && s.current_healthy == 3)
        },
    )
    .await?
    .ok_or("no PodDisruptionBudget")?;
    assert!(
        budget
            .owner_references()
            .iter()
            .any(|o| o.kind == "RedisCluster" && o.controller == Some(true))
    );

    // A drain evicts pod after pod: the first goes, the second is refused while it is down.
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    let mut replicas: Vec<String> = setup
        .live_pods()
        .await?
        .iter()
        .map(|p| p.name_any())
        .filter(|name| *name != primary)
        .collect();
    replicas.sort();
    let log = StatusLog::start(&setup.clusters, NAME);
    evict(&setup, &replicas[0]).await?;
    // Through kubectl: the kube client retries a 429 until the budget allows it.
    let refused = evict(&setup, &replicas[1])
        .await
        .expect_err("the second eviction is refused while the first pod is down")
        .to_string();
    assert!(
        refused.contains("TooManyRequests") && refused.contains("disruption budget"),
        "{refused}"
    );
    // Once the first is back, ready in its role, the next may go.
    setup.wait_recovered(log, 3).await?;
    wait_for(
        &budgets,
        NAME,
        "one disruption allowed again",
        |b: Option<&PodDisruptionBudget>| {
            b.and_then(|b| b.status.as_ref())
                .is_some_and(|s| s.disruptions_allowed == 1)
        },
    )
    .await?;
    evict(&setup, &replicas[1]).await?;

    // Scaled to one pod, the budget goes: a single pod has nothing to keep available.
    setup.patch_spec(json!({"replicas": 1})).await?;
    setup.wait_phase(Phase::Running, 1).await?;
    wait_for(
        &budgets,
        NAME,
        "deleted",
        |b: Option<&PodDisruptionBudget>| b.is_none(),
    )
    .await?;
    Ok(())
}
