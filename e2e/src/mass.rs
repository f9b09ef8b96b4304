//! Many real clusters on one node (`bench --mass-failover`): what the operator's probes cost
//! in steady state, by route, how long until every cluster takes writes again when every
//! primary's Redis is killed at once, and how an image change of every cluster at once goes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use rediscluster_crd::Phase;
use serde::Serialize;
use serde_json::json;

use crate::faults::{Write, clock, figures, redis_pid};
use crate::fencing::PooledWriter;
use crate::metrics::{by_labels, http_get, metric};
use crate::{
    Operator, Setup, TestResult, cluster_pods, password, redis_cluster, redis_url, reports,
};

/// What one route's probes cost, measured over a quiet window.
#[derive(Debug, Serialize)]
pub struct ProbeCost {
    pub route: String,
    pub window_seconds: f64,
    /// Redis commands (pipelines) the operator sent per second, over every pod.
    pub redis_commands_per_second: f64,
    /// The same per pod and probe interval: 1 is one round trip per pod per probe.
    pub per_pod_per_interval: f64,
    pub cpu_percent: f64,
    pub rss_mib: f64,
}

/// How the clusters came back after every primary's Redis was killed at once.
#[derive(Debug, Serialize)]
pub struct MassFailover {
    pub clusters: usize,
    /// Per cluster: seconds from the kill to its first acknowledged write after it.
    pub writable_after: BTreeMap<String, f64>,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Per cluster: seconds from the kill to the operator's promotion of a replica
    /// (`redis_cluster_last_failover_timestamp_seconds`); the rest of `writable_after` is the
    /// Service's routing following the label, and the client reconnecting.
    pub promoted_after: BTreeMap<String, f64>,
    pub promoted_p50: f64,
    pub promoted_max: f64,
    /// Writes acknowledged more than a second before the kill and missing afterwards.
    pub lost_older_than_1s: usize,
    /// Writes acknowledged within the last second before the kill and missing afterwards
    /// (the replication window).
    pub lost_last_second: usize,
    pub acknowledged: usize,
}

/// How the clusters went through a new image for all of them at once.
#[derive(Debug, Serialize)]
pub struct MassRoll {
    pub image: String,
    /// From the change to the last cluster Running on the new image.
    pub roll_seconds: f64,
    /// Per cluster: the longest time between two acknowledged writes during the roll.
    pub longest_pause: BTreeMap<String, f64>,
    pub pause_p50: f64,
    pub pause_max: f64,
    /// Acknowledged writes the new primary does not have.
    pub lost: usize,
    pub acknowledged: usize,
}

#[derive(Debug, Serialize)]
pub struct MassFigures {
    pub clusters: usize,
    pub pods: usize,
    pub to_running_seconds: f64,
    pub probes: Vec<ProbeCost>,
    pub failover: MassFailover,
    pub roll: MassRoll,
}

/// The image every cluster rolls to after the mass failover.
const ROLL_IMAGE: &str = "redis:7.2";

const PROBE_INTERVAL: Duration = Duration::from_secs(5);

fn cluster_name(i: usize) -> String {
    format!("mass-{i:02}")
}

/// `count` clusters of `replicas` on the real node: steady-state probe cost on both routes,
/// then every primary killed, then a new image for all.
pub async fn run(count: usize, replicas: i32, window: Duration) -> TestResult<MassFigures> {
    let setup = Setup::new("bench-mass").await?;
    let ns = setup.namespace.name.clone();
    let mut operator = start(&ns, "direct")?;
    let created = Instant::now();
    for i in 0..count {
        let mut cluster = redis_cluster(&cluster_name(i), "redis:7.0", replicas)?;
        // 2 CPUs: the default 100m request fits about 19 pods.
        cluster.spec.resources = serde_json::from_value(json!({
            "requests": {"cpu": "10m", "memory": "32Mi"}
        }))?;
        setup
            .clusters
            .create(&PostParams::default(), &cluster)
            .await?;
    }
    all_running(&setup, count, replicas, "Running").await?;
    let to_running = created.elapsed().as_secs_f64();
    println!("{count} clusters of {replicas} Running after {to_running:.1} s");
    let pods = count * usize::try_from(replicas)?;
    let mut probes = vec![probe_cost(&mut operator, "direct", pods, window).await?];
    drop(operator);
    let mut forwarded = start(&ns, "port-forward")?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    probes.push(probe_cost(&mut forwarded, "port-forward", pods, window).await?);
    drop(forwarded);
    let mut operator = start(&ns, "direct")?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let failover = kill_every_primary(&setup, count, replicas, operator.http_port()?).await?;
    let roll = roll_every_cluster(&setup, count, replicas).await?;
    Ok(MassFigures {
        clusters: count,
        pods,
        to_running_seconds: to_running,
        probes,
        failover,
        roll,
    })
}

fn start(namespace: &str, route: &str) -> TestResult<Operator> {
    Operator::start_with(
        namespace,
        &format!("operator-{route}"),
        &["--redis-route", route, "--concurrency", "8"],
    )
}

/// The operator's Redis commands per second, CPU and RSS over `window`.
async fn probe_cost(
    operator: &mut Operator,
    route: &str,
    pods: usize,
    window: Duration,
) -> TestResult<ProbeCost> {
    let port = operator.http_port()?;
    let read = || -> TestResult<(f64, f64, f64)> {
        let text = http_get(port, "/metrics")?;
        let commands: f64 = by_labels(
            &text,
            "redis_operator_redis_requests_total",
            &["command", "result"],
        )
        .values()
        .sum();
        let cpu = metric(&text, "process_cpu_seconds").unwrap_or_default();
        let rss = metric(&text, "process_resident_memory_bytes").unwrap_or_default();
        Ok((commands, cpu, rss))
    };
    // Past start-up: every cluster reconciled and probed once.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (commands_before, cpu_before, _) = read()?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let (commands_after, cpu_after, rss) = read()?;
    let seconds = started.elapsed().as_secs_f64();
    let per_second = (commands_after - commands_before) / seconds;
    let cost = ProbeCost {
        route: route.to_owned(),
        window_seconds: seconds,
        redis_commands_per_second: per_second,
        per_pod_per_interval: per_second * PROBE_INTERVAL.as_secs_f64() / pods as f64,
        cpu_percent: (cpu_after - cpu_before) / seconds * 100.0,
        rss_mib: rss / 1024.0 / 1024.0,
    };
    println!("{cost:?}");
    Ok(cost)
}

/// A pooled writer on one cluster's primary Service (a SET every 100 ms), with what it takes
/// to read the keys back.
struct ClusterWriter {
    name: String,
    address: String,
    password: Option<String>,
    writer: PooledWriter,
}

/// A writer for each of the `count` clusters, all in this process: a pod each would take 30
/// of the kubelet's 110 pods.
async fn start_writers(setup: &Setup, count: usize) -> TestResult<Vec<ClusterWriter>> {
    let ns = &setup.namespace.name;
    let services: Api<Service> = Api::namespaced(setup.client.clone(), ns);
    let mut writers = Vec::new();
    for i in 0..count {
        let name = cluster_name(i);
        let address = services
            .get(&format!("{name}-primary"))
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or("no ClusterIP")?;
        let secret = password(&setup.client, ns, &name).await?;
        let writer =
            PooledWriter::start_every(&address, secret.as_deref(), Duration::from_millis(100))
                .await?
                .ok_or_else(|| format!("{name}: no connection to {address}"))?;
        writers.push(ClusterWriter {
            name,
            address,
            password: secret,
            writer,
        });
    }
    Ok(writers)
}

/// Writers on every cluster's primary Service, every primary's Redis killed (SIGKILL from the
/// host) at the same moment, and how each cluster came back.
async fn kill_every_primary(
    setup: &Setup,
    count: usize,
    replicas: i32,
    metrics_port: u16,
) -> TestResult<MassFailover> {
    let ns = &setup.namespace.name;
    let writers = start_writers(setup, count).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut pids = Vec::new();
    for i in 0..count {
        let name = cluster_name(i);
        let cluster = setup.clusters.get(&name).await?;
        let primary = cluster.status.and_then(|s| s.primary).ok_or("no primary")?;
        let pod = cluster_pods(&setup.client, ns, &name)
            .await?
            .into_iter()
            .find(|p| p.name_any() == primary)
            .ok_or("no primary pod")?;
        pids.push(redis_pid(&pod).ok_or("the primary's Redis is not visible from here")?);
    }
    // One kill(1) for all: the signals go out microseconds apart, not a process spawn apart.
    let mut args = vec!["-KILL".to_owned()];
    args.extend(pids.iter().map(i32::to_string));
    let status = std::process::Command::new("kill").args(&args).status()?;
    // Counted from when kill(1) returned: every signal is delivered by then, while starting
    // it can take longer than a writer's 100 ms on a loaded node, and writes sent before the
    // signals landed were acknowledged by Redis that were still running.
    let killed = clock()?;
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    if !status.success() {
        return Err(format!("kill {args:?} failed").into());
    }
    println!("killed {} primaries' Redis at once", pids.len());
    // Every cluster back to Running (it went Scaling on the way), the writers on meanwhile.
    tokio::time::sleep(Duration::from_secs(10)).await;
    all_running(setup, count, replicas, "Running again").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut writable_after = BTreeMap::new();
    let (mut lost_older, mut lost_last, mut acknowledged) = (0, 0, 0);
    for cluster in writers {
        let writes = cluster.writer.stop().await?;
        let back = writes
            .iter()
            .filter(|w| w.acknowledged && w.sent > killed)
            .map(|w| w.answered - killed)
            .fold(f64::INFINITY, f64::min);
        writable_after.insert(cluster.name.clone(), back);
        let present = present(&cluster.address, cluster.password.as_deref(), &writes).await?;
        for write in writes
            .iter()
            .filter(|w| w.acknowledged && w.answered < killed)
        {
            if !present.contains(&write.key) {
                if write.answered < killed - 1.0 {
                    lost_older += 1;
                } else {
                    lost_last += 1;
                }
            }
        }
        acknowledged += writes.iter().filter(|w| w.acknowledged).count();
    }
    let times: Vec<f64> = writable_after.values().copied().collect();
    let promoted_after: BTreeMap<String, f64> = by_labels(
        &http_get(metrics_port, "/metrics")?,
        "redis_cluster_last_failover_timestamp_seconds",
        &["cluster"],
    )
    .into_iter()
    .map(|(cluster, at)| (cluster, at - killed_at.as_secs_f64()))
    .collect();
    let promoted: Vec<f64> = promoted_after.values().copied().collect();
    Ok(MassFailover {
        clusters: count,
        promoted_p50: quantile(&promoted, 0.5),
        promoted_max: quantile(&promoted, 1.0),
        promoted_after,
        p50: quantile(&times, 0.5),
        p99: quantile(&times, 0.99),
        max: quantile(&times, 1.0),
        writable_after,
        lost_older_than_1s: lost_older,
        lost_last_second: lost_last,
        acknowledged,
    })
}

/// The `q` quantile of `values`; infinite when there are none (JSON shows it as null).
fn quantile(values: &[f64], q: f64) -> f64 {
    crate::quantile(values, q).unwrap_or(f64::INFINITY)
}

/// Waits until each of the `count` clusters reports Running with every pod ready, for its
/// latest spec.
async fn all_running(setup: &Setup, count: usize, replicas: i32, what: &str) -> TestResult {
    for i in 0..count {
        crate::wait_for_within(
            Duration::from_secs(900),
            &setup.clusters,
            &cluster_name(i),
            what,
            reports(Phase::Running, replicas),
        )
        .await?;
    }
    Ok(())
}

/// Writers on every cluster's primary Service while every cluster gets a new image at the
/// same moment (the operator paces the rolls, `--max-concurrent-rolls`): how long until all
/// run it, each cluster's longest pause between acknowledged writes, and what was lost.
async fn roll_every_cluster(setup: &Setup, count: usize, replicas: i32) -> TestResult<MassRoll> {
    let writers = start_writers(setup, count).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changed = clock()?;
    let started = Instant::now();
    let patch = kube::api::Patch::Merge(json!({"spec": {"image": ROLL_IMAGE}}));
    let patches = (0..count).map(|i| {
        let (clusters, patch) = (&setup.clusters, &patch);
        async move {
            let params = kube::api::PatchParams::default();
            clusters.patch(&cluster_name(i), &params, patch).await
        }
    });
    futures::future::try_join_all(patches).await?;
    println!("changed the image of {count} clusters to {ROLL_IMAGE} at once");
    all_running(setup, count, replicas, &format!("Running on {ROLL_IMAGE}")).await?;
    let roll_seconds = started.elapsed().as_secs_f64();
    println!("every cluster Running on {ROLL_IMAGE} after {roll_seconds:.1} s");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut longest_pause = BTreeMap::new();
    let (mut lost, mut acknowledged) = (0, 0);
    for cluster in writers {
        let writes = cluster.writer.stop().await?;
        let present = present(&cluster.address, cluster.password.as_deref(), &writes).await?;
        let figures = figures(
            &cluster.name,
            &writes,
            changed,
            &present,
            (0, Duration::ZERO),
        );
        longest_pause.insert(cluster.name, figures.longest_gap);
        lost += figures.lost.len();
        acknowledged += figures.acknowledged;
    }
    let pauses: Vec<f64> = longest_pause.values().copied().collect();
    Ok(MassRoll {
        image: ROLL_IMAGE.to_owned(),
        roll_seconds,
        pause_p50: quantile(&pauses, 0.5),
        pause_max: quantile(&pauses, 1.0),
        longest_pause,
        lost,
        acknowledged,
    })
}

/// Which of the acknowledged `writes` the primary behind `address` has.
async fn present(
    address: &str,
    password: Option<&str>,
    writes: &[Write],
) -> TestResult<BTreeSet<String>> {
    let client = ::redis::Client::open(redis_url(address, password))?;
    let mut connection: MultiplexedConnection = client.get_multiplexed_async_connection().await?;
    let role: Vec<::redis::Value> = ::redis::cmd("ROLE").query_async(&mut connection).await?;
    if role.first() != Some(&::redis::Value::BulkString(b"master".to_vec())) {
        return Err(format!("{address} does not reach a primary: {role:?}").into());
    }
    let acknowledged: Vec<&Write> = writes.iter().filter(|w| w.acknowledged).collect();
    let mut pipe = ::redis::pipe();
    for write in &acknowledged {
        pipe.cmd("EXISTS").arg(&write.key);
    }
    let exists: Vec<i64> = pipe.query_async(&mut connection).await?;
    Ok(acknowledged
        .iter()
        .zip(exists)
        .filter(|(_, exists)| *exists == 1)
        .map(|(write, _)| write.key.clone())
        .collect())
}
