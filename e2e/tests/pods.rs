//! What only pods that really run can show: a deleted pod, a Redis process that exits inside its
//! pod, an image roll watched pod by pod, the security context, and the readiness probe gating
//! readiness. On the fake kubelet the scenarios that need a Redis process say so and stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{NAME, Setup, StatusLog, TestResult, cluster_pods, exec, redis_cli, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use rediscluster_crd::conditions::READY;
use rediscluster_crd::{Phase, RedisCluster};
use serde_json::json;

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn redis_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "redis"))
        .map_or(0, |c| c.restart_count)
}

fn phases(log: &[RedisCluster]) -> Vec<(Phase, i32)> {
    let mut seen: Vec<(Phase, i32)> = Vec::new();
    for status in log.iter().filter_map(|c| c.status.as_ref()) {
        let entry = (status.phase, status.ready_replicas);
        if seen.last() != Some(&entry) {
            seen.push(entry);
        }
    }
    seen
}

/// The status never says Running with fewer ready pods than asked for, at any step.
fn assert_never_running_short(log: &[RedisCluster]) {
    for cluster in log {
        if let Some(status) = cluster
            .status
            .as_ref()
            .filter(|s| s.phase == Phase::Running)
        {
            assert_eq!(
                status.ready_replicas, cluster.spec.replicas,
                "Running with {} of {} ready: {status:?}",
                status.ready_replicas, cluster.spec.replicas
            );
        }
    }
}

/// Waits until the log shows Scaling, then Running with `ready` again after it; stops the log
/// and returns what it saw, which never says Running with fewer ready pods than asked for.
async fn wait_scaling_then_running(
    setup: &Setup,
    log: StatusLog,
    ready: i32,
) -> TestResult<Vec<RedisCluster>> {
    let deadline = Instant::now() + e2e::WAIT;
    while Instant::now() < deadline {
        let seen = phases(&log.snapshot());
        let scaling = seen.iter().position(|(phase, _)| *phase == Phase::Scaling);
        if let Some(at) = scaling
            && seen[at..].contains(&(Phase::Running, ready))
        {
            let seen = log.stop();
            assert_never_running_short(&seen);
            return Ok(seen);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let current = setup.clusters.get(NAME).await?;
    Err(format!(
        "no Scaling then Running({ready}) within {:?}: {:?}; now {:?}",
        e2e::WAIT,
        phases(&log.snapshot()),
        current.status
    )
    .into())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_deleted_redis_pod_is_recreated_and_the_status_says_so_throughout() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("poddelete", 3).await? else {
        return Ok(());
    };
    let victim = format!("{NAME}-1");
    let old_uid = setup.pods.get(&victim).await?.uid();
    let log = StatusLog::start(&setup.clusters, NAME);
    let deleted = Instant::now();
    setup.pods.delete(&victim, &DeleteParams::default()).await?;
    wait_for(&setup.pods, &victim, "recreated", |pod: Option<&Pod>| {
        pod.is_some_and(|p| p.uid() != old_uid)
    })
    .await?;
    let seen = wait_scaling_then_running(&setup, log, 3).await?;
    let recovered = deleted.elapsed();
    assert!(
        phases(&seen)
            .iter()
            .any(|(p, r)| *p == Phase::Scaling && *r < 3),
        "{:?}",
        phases(&seen)
    );
    e2e::assert_redis_serves(&setup.client, &setup.namespace.name, NAME, 3).await?;
    println!(
        "pod deleted -> Running again: {recovered:?}; statuses {:?}",
        phases(&seen)
    );
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_redis_process_that_exits_is_restarted_and_shows_in_the_status() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("restart-redis", 3).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    let victim = format!("{NAME}-2");
    let restarts_before = redis_restarts(&setup.pods.get(&victim).await?);
    let log = StatusLog::start(&setup.clusters, NAME);
    let killed = Instant::now();
    // The Redis process ends (PID 1 of the container); the kubelet restarts the container.
    // The connection drops as Redis exits, so the command's own result says nothing.
    let _ = redis_cli(&ns, &victim, &["shutdown", "nosave"]).await;
    wait_for(
        &setup.pods,
        &victim,
        "container restarted",
        |pod: Option<&Pod>| pod.is_some_and(|p| redis_restarts(p) > restarts_before),
    )
    .await?;
    let seen = wait_scaling_then_running(&setup, log, 3).await?;
    let recovered = killed.elapsed();

    // The restart is visible: in the Ready condition's message while it lasted, and as an event.
    let restart_said = format!("{victim} (container redis restarted");
    let messages: Vec<String> = seen
        .iter()
        .filter_map(|c| c.status.as_ref()?.condition(READY))
        .map(|c| c.message.clone())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains(&restart_said)),
        "no status message says {restart_said}: {messages:#?}"
    );
    let events: Api<Event> = Api::namespaced(setup.client.clone(), &ns);
    let warnings = events
        .list(&ListParams::default().fields("reason=ReplicaNotReady"))
        .await?;
    assert!(
        warnings
            .items
            .iter()
            .any(|e| e.message.as_deref().is_some_and(|m| m.contains(&victim))),
        "no ReplicaNotReady event names {victim}: {:#?}",
        warnings.items
    );
    // No thrashing: a handful of status writes for one restart, not one per look. Each step
    // back into the replica role (not answering, restarted, re-pointed, syncing, linked) is
    // a state of its own that the status says.
    let versions: std::collections::BTreeSet<_> =
        seen.iter().filter_map(|c| c.resource_version()).collect();
    assert!(
        versions.len() <= 10,
        "{} status versions: {messages:#?}",
        versions.len()
    );
    e2e::assert_redis_serves(&setup.client, &ns, NAME, 3).await?;
    println!(
        "Redis exited -> Running again: {recovered:?}; statuses {:?}",
        phases(&seen)
    );
    Ok(())
}

/// How many of `replicas` ordinals lack a ready pod, from a pod watch, at worst.
struct Unready {
    worst: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Unready {
    fn watch(pods: &Api<Pod>, replicas: usize) -> Self {
        let worst = Arc::new(Mutex::new(0));
        let config =
            watcher::Config::default().labels(&format!("app.kubernetes.io/instance={NAME}"));
        let stream = watcher(pods.clone(), config);
        let record = worst.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut ready: BTreeMap<String, bool> = BTreeMap::new();
            let mut synced = false;
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        ready.insert(pod.name_any(), is_ready(&pod));
                    }
                    watcher::Event::Delete(pod) => {
                        ready.remove(&pod.name_any());
                    }
                    watcher::Event::Init => ready.clear(),
                    watcher::Event::InitDone => synced = true,
                }
                if synced {
                    let unready = replicas.saturating_sub(ready.values().filter(|r| **r).count());
                    if let Ok(mut worst) = record.lock() {
                        *worst = (*worst).max(unready);
                    }
                }
            }
        });
        Self { worst, task }
    }

    fn stop(self) -> usize {
        self.task.abort();
        self.worst.lock().map(|w| *w).unwrap_or(usize::MAX)
    }
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_image_roll_replaces_one_pod_at_a_time_and_is_running_only_when_done() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("roll", 3).await? else {
        return Ok(());
    };
    let unready = Unready::watch(&setup.pods, 3);
    let log = StatusLog::start(&setup.clusters, NAME);
    let started = Instant::now();
    setup.patch_spec(json!({"image": "redis:7.2"})).await?;
    let generation = setup.clusters.get(NAME).await?.metadata.generation;

    setup.wait_phase(Phase::Running, 3).await?;
    let rolled = started.elapsed();
    // Right as Running is reported for the new spec, every pod runs the new image and is ready.
    let pods = cluster_pods(&setup.client, &setup.namespace.name, NAME).await?;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers[0].image.clone());
        assert_eq!(image.as_deref(), Some("redis:7.2"), "{}", pod.name_any());
        assert!(is_ready(pod), "{} is not ready", pod.name_any());
    }
    let worst = unready.stop();
    assert!(worst <= 1, "{worst} pods were unready at once");
    let seen = log.stop();
    assert_never_running_short(&seen);
    // The operator itself reported the roll: Scaling for the new generation, then Running.
    let for_new_spec: Vec<Phase> = seen
        .iter()
        .filter_map(|c| c.status.as_ref())
        .filter(|s| s.observed_generation == generation)
        .map(|s| s.phase)
        .collect();
    assert_eq!(
        for_new_spec.first(),
        Some(&Phase::Scaling),
        "{for_new_spec:?}"
    );
    assert_eq!(
        for_new_spec.last(),
        Some(&Phase::Running),
        "{for_new_spec:?}"
    );
    e2e::assert_redis_serves(&setup.client, &setup.namespace.name, NAME, 3).await?;
    if e2e::has_real_node(&setup.client).await? {
        for pod in &pods {
            let info =
                redis_cli(&setup.namespace.name, &pod.name_any(), &["info", "server"]).await?;
            assert!(info.contains("redis_version:"), "{info}");
        }
    }
    println!("roll of 3 pods: Running on redis:7.2 after {rolled:?}; worst unready {worst}");
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn pods_run_as_redis_read_only_and_readiness_follows_redis() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("podsecurity", 2).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    for pod in cluster_pods(&setup.client, &ns, NAME).await? {
        let pod = pod.name_any();
        assert_eq!(exec(&ns, &pod, &["id", "-u"]).await?, "999", "{pod}");
        let root = exec(&ns, &pod, &["touch", "/written-by-e2e"]).await;
        assert!(
            root.as_ref()
                .is_err_and(|e| e.to_string().contains("Read-only file system")),
            "{pod}: the root filesystem took a write: {root:?}"
        );
        exec(&ns, &pod, &["touch", "/data/written-by-e2e"]).await?;
    }

    // A Redis that stops answering (every client paused) must turn its pod unready, and the
    // status must show it; once Redis answers again, Running comes back.
    let victim = format!("{NAME}-1");
    let log = StatusLog::start(&setup.clusters, NAME);
    let paused = Instant::now();
    assert_eq!(
        redis_cli(&ns, &victim, &["client", "pause", "30000", "all"]).await?,
        "OK"
    );
    wait_for(&setup.pods, &victim, "unready", |pod: Option<&Pod>| {
        pod.is_some_and(|p| !is_ready(p))
    })
    .await?;
    let unready_after = paused.elapsed();
    // The operator's own probe times out on the paused Redis within seconds, before the
    // kubelet's does; with the suite's 10 s grace the cluster may have gone on from Scaling to
    // Failed/NoProgress by now. Either way it says one pod is ready, not two.
    wait_for(&setup.clusters, NAME, "1 ready, not Running", |c| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.ready_replicas == 1 && s.phase != Phase::Running)
    })
    .await?;
    wait_scaling_then_running(&setup, log, 2).await?;
    println!(
        "paused Redis: pod unready after {unready_after:?}, Running again after {:?}",
        paused.elapsed()
    );
    Ok(())
}
