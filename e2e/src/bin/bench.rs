//! `make bench`: the operator measured side by side with the API server's own floor, on whatever
//! cluster KUBECONFIG points to. The operator runs as a local child process (so its memory can be
//! read), scoped to the benchmark's namespace. Prints a table and writes JSON.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::faults::{Fault, Figures};
use e2e::{Operator, TestNamespace, TestResult, client, http_get, reconciles_total, redis_cluster};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use redis_operator::desired;
use rediscluster_crd::{Phase, RedisCluster};
use serde::Serialize;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Benchmark redis-operator against the API server's floor")]
struct Args {
    /// RedisClusters to create at once.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Reconcile concurrency of the operator, and write concurrency of the floor client.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Replicas of each RedisCluster.
    #[arg(long, default_value_t = 1)]
    replicas: i32,
    /// spec.replicas changes for the scale-latency figure (p99 needs at least 100).
    #[arg(long, default_value_t = 100)]
    scale_changes: usize,
    /// Length of the idle window, in seconds.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// The operator's --resync-interval, in seconds: shorter than the idle window, so that the
    /// window shows that a resync of every cluster sends nothing.
    #[arg(long, default_value_t = 20)]
    resync_seconds: u64,
    /// Stop convergence at the StatefulSets and skip the figures that need ready pods (Running,
    /// settled scale latency): for a cluster without a kubelet, or with the fake one paused.
    #[arg(long)]
    skip_running: bool,
    /// The fake kubelet runs a real Redis per pod (`K8S_LOCAL_FAKE_KUBELET_REDIS=1`), with no
    /// node: clusters reach Running, the operator dials pod IPs (`--redis-route direct`), and
    /// the clusters run without auth, since that kubelet starts `redis-server` without the
    /// pods' start script that reads the password.
    #[arg(long)]
    fake_redis: bool,
    /// Instead of the scale benchmark: the failover and handover figures on a node where pods
    /// really run (each fault of the live suite on its own 3-pod cluster, one at a time),
    /// beside Redis Sentinel's default detection time.
    #[arg(long)]
    failover: bool,
    /// Instead of the scale benchmark: `--count` clusters of `--replicas` on a node where pods
    /// really run (30 of 3 fit at a 10m CPU request): the probes' cost by route, then every
    /// primary's Redis killed at once.
    #[arg(long)]
    mass_failover: bool,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench.json")]
    output: PathBuf,
}

#[tokio::main]
async fn main() -> TestResult {
    let mut args = Args::parse();
    let client = client().await?;
    if args.failover {
        return failover_figures(&args, &client).await;
    }
    if args.mass_failover {
        if !e2e::has_real_node(&client).await? {
            return Err(
                "--mass-failover needs a node where pods really run (start-node.sh)".into(),
            );
        }
        let window = Duration::from_secs(args.idle_seconds);
        let figures = e2e::mass::run(args.count, args.replicas, window).await?;
        println!(
            "
{}",
            serde_json::to_string_pretty(&figures)?
        );
        let output = args.output.with_file_name("bench-mass-failover.json");
        std::fs::write(&output, serde_json::to_string_pretty(&figures)?)?;
        println!("figures written to {}", output.display());
        return Ok(());
    }
    if !args.skip_running && !args.fake_redis && !e2e::has_real_node(&client).await? {
        // No Redis runs in the pods (the fake kubelet): the operator gives no roles, so no
        // cluster reaches Running; the figures that need it are left out, and said to be.
        println!("no node runs pods here: convergence stops at the StatefulSets (--skip-running)");
        args.skip_running = true;
    }
    let results = run(&args, &client).await?;
    print_table(&args, &results);
    std::fs::write(&args.output, serde_json::to_string_pretty(&results)?)?;
    println!("\nfigures written to {}", args.output.display());
    Ok(())
}

/// Redis Sentinel's default `down-after-milliseconds`: how long a primary must not answer
/// before Sentinel even starts a failover (which then needs a quorum of sentinels).
const SENTINEL_DETECTION_SECONDS: f64 = 30.0;

/// Each fault of the live suite on its own Running 3-pod cluster, one after the other, with a
/// writer through the primary Service; prints and writes the figures.
async fn failover_figures(args: &Args, client: &Client) -> TestResult {
    if !e2e::has_real_node(client).await? {
        return Err("--failover needs a node where pods really run (start-node.sh)".into());
    }
    let mut results = Vec::new();
    for fault in Fault::ALL {
        let Some((setup, _operator)) = e2e::Setup::sample_on_real_pods("bench-failover", 3).await?
        else {
            continue;
        };
        match e2e::faults::inflict(&setup, fault).await? {
            Some(outcome) => results.push(outcome),
            None => println!(
                "{}: skipped (the node's processes are not visible here)",
                fault.describe()
            ),
        }
    }
    println!("\n{}", Figures::table_header());
    for outcome in &results {
        println!("{}", outcome.figures.table_row());
    }
    println!(
        "{:<56} {:>8.2}   (detection alone, before any failover)",
        "Redis Sentinel, default down-after-milliseconds", SENTINEL_DETECTION_SECONDS
    );
    println!(
        "\nRedis Sentinel with its defaults starts a failover only after a primary has not \
         answered for {SENTINEL_DETECTION_SECONDS} s (down-after-milliseconds), with at least \
         three sentinels for a quorum."
    );
    let output = args.output.with_file_name("bench-failover.json");
    std::fs::write(
        &output,
        serde_json::to_string_pretty(&json!({
            "sentinel_detection_seconds": SENTINEL_DETECTION_SECONDS,
            "faults": results,
        }))?,
    )?;
    println!("figures written to {}", output.display());
    Ok(())
}

/// `value` to `places` decimal places, so the JSON carries figures rather than float noise.
fn rounded(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

fn ratio(measured: Duration, floor: Duration) -> f64 {
    rounded(measured.as_secs_f64() / floor.as_secs_f64(), 2)
}

fn seconds(duration: Duration) -> f64 {
    rounded(duration.as_secs_f64(), 3)
}

/// The figures of one `make bench` run; written as JSON under these names.
#[derive(Serialize)]
struct Results {
    count: usize,
    concurrency: usize,
    replicas: i32,
    floor_seconds: f64,
    floor_before_seconds: f64,
    floor_after_seconds: f64,
    /// The floor as it was before `-primary` and `-replicas`: the headless Service only.
    floor_one_service_seconds: f64,
    convergence_statefulsets_seconds: f64,
    convergence_running_seconds: Option<f64>,
    convergence_statefulsets_over_floor: f64,
    convergence_statefulsets_over_one_service_floor: f64,
    /// What the operator wrote during convergence, by verb, per cluster.
    operator_writes_per_cluster: BTreeMap<String, f64>,
    /// The same, by verb and resource: what each write was for.
    operator_writes_per_cluster_by_resource: BTreeMap<String, f64>,
    /// By series (`settled`, `back_to_back`, their floors), and each also by direction
    /// (`settled_up`, `settled_down`...): a scale-down waits for the primary to answer first.
    scale_latency_ms: BTreeMap<String, Percentiles>,
    idle_requests: BTreeMap<String, f64>,
    idle_redis_commands_per_cluster_minute: BTreeMap<String, f64>,
    idle_redis_commands_per_second: f64,
    /// The operator's CPU over the idle window (probes and resyncs), in % of one core.
    idle_cpu_percent: f64,
    memory_mib: MemoryMib,
    startup_to_ready_seconds: f64,
    startup_to_all_reconciled_seconds: f64,
    resync_seconds: u64,
}

#[derive(Serialize)]
struct MemoryMib {
    empty_rss: f64,
    empty_hwm: f64,
    converged_rss: f64,
    converged_hwm: f64,
    restarted_ready_hwm: f64,
    per_cluster_kib: f64,
}

/// Latencies in milliseconds; no p99 of fewer than 100 samples (it would be the maximum).
#[derive(Serialize)]
struct Percentiles {
    samples: usize,
    p50: f64,
    p90: f64,
    p99: Option<f64>,
    max: f64,
}

/// The operator under test, with the port it serves /metrics on.
struct Measured {
    operator: Operator,
    port: u16,
}

async fn run(args: &Args, client: &Client) -> TestResult<Results> {
    let floor_ns = TestNamespace::create(client, "bench-floor").await?;
    let operator_ns = TestNamespace::create(client, "bench").await?;
    // Memory of an operator with nothing to do.
    let measured = start_operator(&operator_ns.name, "bench-operator", args, 30).await?;
    let memory_empty = memory(&measured.operator)?;
    let converged = converge(args, client, &floor_ns.name, &operator_ns.name, &measured).await?;
    let memory_full = memory(&measured.operator)?;
    let idle = idle(args, &measured).await?;
    let scale_latency_ms = scale(args, client, &operator_ns.name, &floor_ns.name).await?;
    // Start-up with every cluster present.
    measured.operator.kill();
    let started = Instant::now();
    let restarted = start_operator(&operator_ns.name, "bench-operator-restarted", args, 60).await?;
    let startup = started.elapsed();
    wait_reconciled(restarted.port, args.count, Duration::from_secs(120)).await?;
    let startup_reconciled = started.elapsed();
    println!(
        "start-up: ready after {:.3} s, every cluster reconciled after {:.3} s",
        startup.as_secs_f64(),
        startup_reconciled.as_secs_f64()
    );
    // The high-water mark of a start with every cluster present holds the initial lists' peak.
    let memory_restarted = memory(&restarted.operator)?;
    let kib = |k: i64| k as f64 / 1024.0;
    Ok(Results {
        count: args.count,
        concurrency: args.concurrency,
        replicas: args.replicas,
        floor_seconds: seconds(converged.floor),
        floor_before_seconds: seconds(converged.floor_before),
        floor_after_seconds: seconds(converged.floor_after),
        floor_one_service_seconds: seconds(converged.floor_one_service),
        convergence_statefulsets_seconds: seconds(converged.to_statefulsets),
        convergence_running_seconds: converged.to_running.map(seconds),
        convergence_statefulsets_over_floor: ratio(converged.to_statefulsets, converged.floor),
        convergence_statefulsets_over_one_service_floor: ratio(
            converged.to_statefulsets,
            converged.floor_one_service,
        ),
        operator_writes_per_cluster: converged.writes_per_cluster,
        operator_writes_per_cluster_by_resource: converged.writes_by_resource,
        scale_latency_ms,
        idle_requests: idle.requests,
        idle_redis_commands_per_cluster_minute: idle.redis_per_cluster_minute,
        idle_redis_commands_per_second: idle.redis_per_second,
        idle_cpu_percent: idle.cpu_percent,
        memory_mib: MemoryMib {
            empty_rss: kib(memory_empty.0),
            empty_hwm: kib(memory_empty.1),
            converged_rss: kib(memory_full.0),
            converged_hwm: kib(memory_full.1),
            restarted_ready_hwm: kib(memory_restarted.1),
            per_cluster_kib: rounded(
                (memory_full.0 - memory_empty.0) as f64 / args.count as f64,
                1,
            ),
        },
        startup_to_ready_seconds: seconds(startup),
        startup_to_all_reconciled_seconds: seconds(startup_reconciled),
        resync_seconds: args.resync_seconds,
    })
}

/// How long convergence took, beside the floor measured before and after it.
struct Converged {
    floor: Duration,
    floor_before: Duration,
    floor_after: Duration,
    floor_one_service: Duration,
    to_statefulsets: Duration,
    to_running: Option<Duration>,
    writes_per_cluster: BTreeMap<String, f64>,
    writes_by_resource: BTreeMap<String, f64>,
}

/// The writes the floor client makes for each cluster besides its StatefulSet and status.
#[derive(Clone, Copy)]
enum FloorServices {
    /// The headless Service only, as before `-primary` and `-replicas` existed.
    One,
    /// The headless, `-primary` and `-replicas` Services, as the operator makes today.
    Three,
}

/// The floor is measured before and after the operator's run, in namespaces of its own; the
/// ratio is taken on their mean (the API server slows as it grows).
async fn converge(
    args: &Args,
    client: &Client,
    floor_ns: &str,
    operator_ns: &str,
    measured: &Measured,
) -> TestResult<Converged> {
    let one_service_ns = TestNamespace::create(client, "bench-floor-one").await?;
    let floor_one_service = floor(client, &one_service_ns.name, args, FloorServices::One).await?;
    println!(
        "floor with one Service: {:.3} s",
        floor_one_service.as_secs_f64()
    );
    let floor_before = floor(client, floor_ns, args, FloorServices::Three).await?;
    println!(
        "floor before: {:.3} s for {} clusters",
        floor_before.as_secs_f64(),
        args.count
    );
    let requests_before = e2e::request_counts_by_resource(measured.port)?;
    let (to_statefulsets, to_running) = convergence(client, operator_ns, args).await?;
    println!(
        "convergence: StatefulSets {:.3} s, Running {:?}",
        to_statefulsets.as_secs_f64(),
        to_running
    );
    // What the operator wrote to get there, against the floor's 5 per cluster (StatefulSet, 3 Services, status).
    let writes = writes_since(measured.port, &requests_before)?;
    let per_cluster = |n: f64| rounded(n / args.count as f64, 2);
    let writes_by_resource: BTreeMap<String, f64> = writes
        .iter()
        .map(|(key, n)| (key.clone(), per_cluster(*n)))
        .collect();
    let writes_per_cluster: BTreeMap<String, f64> = by_verb(&writes, |_| true)
        .into_iter()
        .map(|(verb, n)| (verb, per_cluster(n)))
        .collect();
    println!("operator writes per cluster during convergence: {writes_by_resource:?}");
    let floor_after_ns = TestNamespace::create(client, "bench-floor-after").await?;
    let floor_after = floor(client, &floor_after_ns.name, args, FloorServices::Three).await?;
    println!("floor after: {:.3} s", floor_after.as_secs_f64());
    Ok(Converged {
        floor: (floor_before + floor_after) / 2,
        floor_before,
        floor_after,
        floor_one_service,
        to_statefulsets,
        to_running,
        writes_per_cluster,
        writes_by_resource,
    })
}

/// What the operator sent while nothing changed.
struct Idle {
    /// Requests to the API server, by verb, leaving out Lease renewals.
    requests: BTreeMap<String, f64>,
    /// Redis commands (the periodic probe), by command and result, per cluster per minute.
    redis_per_cluster_minute: BTreeMap<String, f64>,
    /// Every Redis command, per second.
    redis_per_second: f64,
    cpu_percent: f64,
}

async fn idle(args: &Args, measured: &Measured) -> TestResult<Idle> {
    let port = measured.port;
    let redis_before = e2e::redis_command_counts(port)?;
    let before = e2e::request_counts_by_resource(port)?;
    let cpu_seconds = || -> TestResult<f64> {
        let text = http_get(port, "/metrics")?;
        Ok(e2e::metric(&text, "process_cpu_seconds").ok_or("no process_cpu_seconds")?)
    };
    let cpu_before = cpu_seconds()?;
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let cpu_percent = rounded(
        (cpu_seconds()? - cpu_before) / args.idle_seconds as f64 * 100.0,
        2,
    );
    let requests = by_verb(&requests_since(port, &before)?, |resource| {
        resource != "leases"
    });
    println!("idle requests in {} s: {requests:?}", args.idle_seconds);
    let per_cluster_minute = args.count as f64 * args.idle_seconds as f64 / 60.0;
    let redis_deltas: BTreeMap<String, f64> = e2e::redis_command_counts(port)?
        .into_iter()
        .map(|(series, n)| {
            let delta = n - redis_before.get(&series).copied().unwrap_or(0.0);
            (series, delta)
        })
        .collect();
    let redis_per_second = rounded(
        redis_deltas.values().sum::<f64>() / args.idle_seconds as f64,
        1,
    );
    let redis_per_cluster_minute: BTreeMap<String, f64> = redis_deltas
        .into_iter()
        .map(|(series, n)| (series, rounded(n / per_cluster_minute, 2)))
        .collect();
    println!(
        "idle Redis commands: {redis_per_second}/s, per cluster per minute {redis_per_cluster_minute:?}"
    );
    Ok(Idle {
        requests,
        redis_per_cluster_minute,
        redis_per_second,
        cpu_percent,
    })
}

/// Scale latency through the operator and, for the floor, on the StatefulSet directly; each
/// settled and back to back.
async fn scale(
    args: &Args,
    client: &Client,
    operator_ns: &str,
    floor_ns: &str,
) -> TestResult<BTreeMap<String, Percentiles>> {
    let mut scale = BTreeMap::new();
    for (key, namespace, through, pace) in [
        ("settled", operator_ns, Through::Operator, Pace::Settled),
        (
            "settled_floor",
            floor_ns,
            Through::StatefulSet,
            Pace::Settled,
        ),
        (
            "back_to_back",
            operator_ns,
            Through::Operator,
            Pace::BackToBack,
        ),
        (
            "back_to_back_floor",
            floor_ns,
            Through::StatefulSet,
            Pace::BackToBack,
        ),
    ] {
        if pace == Pace::Settled && args.skip_running {
            continue;
        }
        let changes = scale_latency(client, namespace, args.scale_changes, through, pace).await?;
        // Every change, then the scale-ups only, then the scale-downs only.
        for (series, up) in [
            (key.to_owned(), None),
            (format!("{key}_up"), Some(true)),
            (format!("{key}_down"), Some(false)),
        ] {
            let latencies: Vec<Duration> = changes
                .iter()
                .filter(|change| up.is_none_or(|up| change.up == up))
                .map(|change| change.latency)
                .collect();
            let figures = percentiles(&latencies);
            println!(
                "scale latency {series}: p50 {} p90 {} p99 {:?} max {} ms ({} samples)",
                figures.p50, figures.p90, figures.p99, figures.max, figures.samples
            );
            scale.insert(series, figures);
        }
    }
    Ok(scale)
}

/// Starts the operator under test (`name` names its log file) and waits, up to
/// `ready_within` seconds, until it is ready.
async fn start_operator(
    namespace: &str,
    name: &str,
    args: &Args,
    ready_within: u64,
) -> TestResult<Measured> {
    let concurrency = args.concurrency.to_string();
    let resync = format!("{}s", args.resync_seconds);
    let mut flags = vec!["--concurrency", &concurrency, "--resync-interval", &resync];
    if args.fake_redis {
        // Clusters reach Running here, so the operator's own default progress deadline
        // applies, not the live suite's short one: a kubelet slower than 20 s to start 1000
        // pods would otherwise fail clusters on the way, and count their events and statuses.
        flags.extend(["--redis-route", "direct", "--progress-deadline", "10m"]);
    }
    let mut operator = Operator::start_with(namespace, name, &flags)?;
    let port = operator.http_port()?;
    wait_ready(port, Duration::from_secs(ready_within)).await?;
    Ok(Measured { operator, port })
}

/// Waits until the operator has finished `count` reconciles (of any result): after a start
/// with `count` clusters present, until each has been looked at once.
async fn wait_reconciled(port: u16, count: usize, limit: Duration) -> TestResult {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if reconciles_total(&http_get(port, "/metrics")?) >= count as f64 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("not every cluster was reconciled within {limit:?}").into())
}

async fn wait_ready(port: u16, limit: Duration) -> TestResult {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if http_get(port, "/readyz").is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("operator not ready within {limit:?}").into())
}

/// VmRSS and VmHWM of the operator process, in KiB.
fn memory(operator: &Operator) -> TestResult<(i64, i64)> {
    let pid = operator.pid().ok_or("no operator process")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> TestResult<i64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .ok_or(key.to_owned())?;
        Ok(line.split_whitespace().next().ok_or("empty")?.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// The `i`th cluster of a run.
fn bench_cluster(i: usize, args: &Args) -> TestResult<RedisCluster> {
    let mut cluster = redis_cluster(&format!("r{i:04}"), "redis:7.0", args.replicas)?;
    if args.fake_redis {
        cluster.spec.auth = Some(rediscluster_crd::Auth {
            insecure_allow_unauthenticated: Some(true),
            ..Default::default()
        });
    }
    Ok(cluster)
}

async fn create_clusters(api: &Api<RedisCluster>, args: &Args, in_flight: usize) -> TestResult {
    stream::iter(0..args.count)
        .map(|i| async move {
            let cluster = bench_cluster(i, args)?;
            api.create(&PostParams::default(), &cluster).await?;
            TestResult::Ok(())
        })
        .buffer_unordered(in_flight)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The writes a cluster needs, made by a plain client: the user's create of each RedisCluster
/// (the operator's window holds it too, at the same 32 in flight), and as each one exists the
/// writes the operator makes for it, at the same concurrency: apply the StatefulSet the operator
/// would apply, apply the Service, write the status. No operator watches this namespace. The
/// StatefulSets ask for the same replicas as the operator's, so the pods they set off (the
/// controller manager creating them, the kubelet starting them) load the API server in this
/// window as they do in the operator's; afterwards they are scaled to 0 and their pods drained,
/// so that neither run pays for the other's pods.
async fn floor(
    client: &Client,
    namespace: &str,
    args: &Args,
    kind: FloorServices,
) -> TestResult<Duration> {
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let apply = PatchParams::apply("bench-floor").force();
    let (created, created_stream) = futures::channel::mpsc::unbounded::<RedisCluster>();
    let started = Instant::now();
    let creates = stream::iter(0..args.count)
        .map(|i| {
            let (clusters, created) = (&clusters, created.clone());
            async move {
                let cluster = bench_cluster(i, args)?;
                let cluster = clusters.create(&PostParams::default(), &cluster).await?;
                created.unbounded_send(cluster)?;
                TestResult::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>();
    let writes = created_stream
        .take(args.count)
        .map(|cluster| {
            let (statefulsets, services, clusters, apply) =
                (&statefulsets, &services, &clusters, &apply);
            async move {
                let name = cluster.name_any();
                statefulsets
                    .patch(
                        &name,
                        apply,
                        &Patch::Apply(&desired::initial_statefulset(&cluster)?),
                    )
                    .await?;
                let all = desired::services(&cluster)?;
                let made = match kind {
                    FloorServices::One => &all[..1],
                    FloorServices::Three => &all[..],
                };
                for service in made {
                    services
                        .patch(&service.name_any(), apply, &Patch::Apply(service))
                        .await?;
                }
                let status = json!({
                    "apiVersion": "cache.example.com/v1alpha1", "kind": "RedisCluster",
                    "status": {"phase": "Running", "readyReplicas": 0, "replicas": 0},
                });
                clusters
                    .patch_status(&name, apply, &Patch::Apply(&status))
                    .await?;
                TestResult::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>();
    futures::try_join!(creates, writes)?;
    let elapsed = started.elapsed();
    drop(created);
    drain_pods(&statefulsets, client, namespace).await?;
    Ok(elapsed)
}

/// Scales every StatefulSet in the namespace to 0 and waits until the StatefulSet controller
/// has acted on that and no pod is left.
async fn drain_pods(
    statefulsets: &Api<StatefulSet>,
    client: &Client,
    namespace: &str,
) -> TestResult {
    let names: Vec<String> = statefulsets
        .list_metadata(&Default::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    let scale_to_zero = Patch::Merge(json!({"spec": {"replicas": 0}}));
    let scale_to_zero = &scale_to_zero;
    stream::iter(&names)
        .map(|name| async move {
            statefulsets
                .patch(name, &PatchParams::default(), scale_to_zero)
                .await?;
            TestResult::Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let scaled_down = statefulsets
            .list(&Default::default())
            .await?
            .items
            .iter()
            .all(|sts| {
                let status = sts.status.as_ref();
                status.and_then(|s| s.observed_generation) == sts.metadata.generation
                    && status.is_some_and(|s| s.replicas == 0)
            });
        if scaled_down
            && pods
                .list_metadata(&Default::default())
                .await?
                .items
                .is_empty()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("the pods in {namespace} were not drained within 10 minutes").into())
}

/// Creates every cluster at once; returns the time until all have their StatefulSet at the
/// desired replicas, and until all are Running.
async fn convergence(
    client: &Client,
    namespace: &str,
    args: &Args,
) -> TestResult<(Duration, Option<Duration>)> {
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let sts_done = {
        let replicas = args.replicas;
        let count = args.count;
        tokio::spawn(count_until(
            statefulsets,
            count,
            move |sts: &StatefulSet| sts.spec.as_ref().and_then(|s| s.replicas) == Some(replicas),
        ))
    };
    let running_done = {
        let count = args.count;
        tokio::spawn(count_until(clusters.clone(), count, |c: &RedisCluster| {
            c.status.as_ref().is_some_and(|s| s.phase == Phase::Running)
        }))
    };
    create_clusters(&clusters, args, 32).await?;
    let limit = Duration::from_secs(600);
    let to_sts = tokio::time::timeout(limit, sts_done).await???;
    if args.skip_running {
        running_done.abort();
        // Still wait for every pod to be ready: a kubelet that is still starting pods moves
        // the counts of clusters that cannot reach Running, and each move restarts their
        // progress deadline (Pending, then Failed again, with an event): figures taken while
        // that goes on, the idle window above all, would measure the kubelet, not the operator.
        let replicas = args.replicas;
        let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
        let pods_ready = count_until(statefulsets, args.count, move |sts: &StatefulSet| {
            sts.status.as_ref().and_then(|s| s.ready_replicas) == Some(replicas)
        });
        let pods_ready = tokio::time::timeout(limit, pods_ready).await??;
        println!(
            "every pod ready (kubelet) after {:.3} s",
            (pods_ready - started).as_secs_f64()
        );
        tokio::time::sleep(e2e::progress_deadline() + Duration::from_secs(1)).await;
        return Ok((to_sts - started, None));
    }
    let to_running = tokio::time::timeout(limit, running_done).await???;
    Ok((to_sts - started, Some(to_running - started)))
}

/// Watches `api` until `count` distinct objects satisfy `done`; returns when that happened.
async fn count_until<K>(
    api: Api<K>,
    count: usize,
    done: impl Fn(&K) -> bool + Send + 'static,
) -> TestResult<Instant>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut seen = HashSet::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    while let Some(object) = events.try_next().await? {
        if done(&object) {
            seen.insert(object.name_any());
            if seen.len() >= count {
                return Ok(Instant::now());
            }
        }
    }
    Err("watch ended".into())
}

/// `counts` by `verb resource` added up by verb, over the resources `keep` takes.
fn by_verb(counts: &BTreeMap<String, f64>, keep: impl Fn(&str) -> bool) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for (key, n) in counts {
        let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
        if keep(resource) {
            *totals.entry(verb.to_owned()).or_insert(0.0) += n;
        }
    }
    totals
}

/// The writes among the requests since `before`, by `verb resource`.
fn writes_since(port: u16, before: &BTreeMap<String, f64>) -> TestResult<BTreeMap<String, f64>> {
    Ok(requests_since(port, before)?
        .into_iter()
        .filter(|(key, n)| {
            let verb = key.split(' ').next().unwrap_or_default();
            *n > 0.0 && ["create", "patch", "update", "delete"].contains(&verb)
        })
        .collect())
}

/// Requests the operator sent since it had sent `before`, by `verb resource`.
fn requests_since(port: u16, before: &BTreeMap<String, f64>) -> TestResult<BTreeMap<String, f64>> {
    Ok(e2e::request_counts_by_resource(port)?
        .into_iter()
        .map(|(verb, n)| {
            let delta = n - before.get(&verb).copied().unwrap_or(0.0);
            (verb, delta)
        })
        .collect())
}

/// Where a scale change is written: the RedisCluster (through the operator) or, for the API
/// server's own floor, the StatefulSet itself.
#[derive(Clone, Copy, PartialEq)]
enum Through {
    Operator,
    StatefulSet,
}

/// When the next change is written.
#[derive(Clone, Copy, PartialEq)]
enum Pace {
    /// Once everything the last change set off is finished (pods ready, status written): each
    /// change meets an otherwise idle cluster. The target applies to this one.
    Settled,
    /// As soon as the last change reached the StatefulSet, while its pods and status are still
    /// being worked on.
    BackToBack,
}

/// The latest version of one object, kept current by a watch.
fn latest<K>(api: Api<K>, name: &str) -> (tokio::sync::watch::Receiver<Option<K>>, AbortOnDrop)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync,
    K: 'static,
{
    let (sender, receiver) = tokio::sync::watch::channel(None);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).applied_objects());
        while let Ok(Some(object)) = events.try_next().await {
            sender.send_replace(Some(object));
        }
    });
    (receiver, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Changes spec.replicas of one cluster `changes` times; for each, the time from the write to
/// the StatefulSet's new spec.replicas arriving on a watch that was open all along.
/// One `spec.replicas` change: how long until the StatefulSet showed it, and whether it
/// scaled up.
struct Change {
    latency: Duration,
    up: bool,
}

async fn scale_latency(
    client: &Client,
    namespace: &str,
    changes: usize,
    through: Through,
    pace: Pace,
) -> TestResult<Vec<Change>> {
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), namespace);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let name = "r0000";
    let (mut statefulset, _sts_watch) = latest(statefulsets.clone(), name);
    // Only a settled change through the operator waits for the cluster's status.
    let mut cluster = (through == Through::Operator && pace == Pace::Settled)
        .then(|| latest(clusters.clone(), name));
    let limit = Duration::from_secs(60);
    let replicas = |sts: &Option<StatefulSet>| sts.as_ref().and_then(|s| s.spec.as_ref()?.replicas);
    let first = tokio::time::timeout(limit, statefulset.wait_for(Option::is_some))
        .await??
        .clone();
    let mut current = replicas(&first).unwrap_or(1);
    let mut latencies = Vec::with_capacity(changes);
    for _ in 0..changes {
        // Between 1 and 2 replicas: every write is a real change.
        let target = if current == 1 { 2 } else { 1 };
        let patch = Patch::Merge(json!({"spec": {"replicas": target}}));
        let written = Instant::now();
        match through {
            Through::Operator => {
                clusters
                    .patch(name, &PatchParams::default(), &patch)
                    .await?;
            }
            Through::StatefulSet => {
                statefulsets
                    .patch(name, &PatchParams::default(), &patch)
                    .await?;
            }
        }
        tokio::time::timeout(limit, statefulset.wait_for(|s| replicas(s) == Some(target)))
            .await??;
        latencies.push(Change {
            latency: written.elapsed(),
            up: target > current,
        });
        current = target;
        if pace == Pace::Settled {
            tokio::time::timeout(
                limit,
                statefulset.wait_for(|s| is_settled(s.as_ref(), target)),
            )
            .await??;
        }
        if let Some((cluster, _)) = cluster.as_mut() {
            tokio::time::timeout(limit, cluster.wait_for(|c| is_running(c.as_ref(), target)))
                .await??;
        }
    }
    Ok(latencies)
}

/// The StatefulSet controller has acted on the latest spec and every pod is ready.
fn is_settled(sts: Option<&StatefulSet>, replicas: i32) -> bool {
    let Some(sts) = sts else { return false };
    let status = sts.status.as_ref();
    status.and_then(|s| s.observed_generation) == sts.metadata.generation
        && status.and_then(|s| s.ready_replicas) == Some(replicas)
        && status.map(|s| s.replicas) == Some(replicas)
}

/// The operator has written the status for the latest spec, and it says Running.
fn is_running(cluster: Option<&RedisCluster>, replicas: i32) -> bool {
    let Some(cluster) = cluster else { return false };
    cluster.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Running
            && s.ready_replicas == replicas
            && s.observed_generation == cluster.metadata.generation
    })
}

fn percentiles(latencies: &[Duration]) -> Percentiles {
    let ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let at = |p: f64| e2e::quantile(&ms, p).map_or(0.0, |v| rounded(v, 1));
    Percentiles {
        samples: ms.len(),
        p50: at(0.5),
        p90: at(0.9),
        p99: (ms.len() >= 100).then(|| at(0.99)),
        max: at(1.0),
    }
}

fn scale_row(r: &Results, name: &'static str, key: &str, floor_key: &str) -> Row {
    let figures = r.scale_latency_ms.get(key);
    let value = figures.map_or_else(
        || "-".to_owned(),
        |f| {
            let p99 = f.p99.map_or_else(|| "-".to_owned(), |p| p.to_string());
            format!("{} / {} / {p99} / {}", f.p50, f.p90, f.max)
        },
    );
    let floor_p99 = r.scale_latency_ms.get(floor_key).and_then(|f| f.p99);
    let target = match (figures.and_then(|f| f.p99), floor_p99) {
        (Some(p99), Some(floor)) => target("p99 <= 2 x floor's", p99 <= 2.0 * floor),
        _ => String::new(),
    };
    (name, value, target)
}

/// A row of the table: what, the figure, and its target with whether it was met.
type Row = (&'static str, String, String);

/// A target and whether the figure met it.
fn target(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "MISSED" })
}

/// A figure as JSON writes it: `null` when there is none.
fn shown<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn print_table(args: &Args, r: &Results) {
    println!(
        "\nredis-operator benchmark: {} RedisClusters x {} replica(s), concurrency {}",
        args.count, args.replicas, args.concurrency
    );
    for (name, value, target) in convergence_rows(r).into_iter().chain(steady_rows(r)) {
        println!("  {name:<52} {value:<40} {target}");
    }
}

fn convergence_rows(r: &Results) -> Vec<Row> {
    let writes: f64 = r.operator_writes_per_cluster.values().sum();
    vec![
        (
            "floor: create, StatefulSet, 3 Services, status (s)",
            format!(
                "{} ({} / {})",
                r.floor_seconds, r.floor_before_seconds, r.floor_after_seconds
            ),
            "mean (before / after)".to_owned(),
        ),
        (
            "floor with one Service, as before replication (s)",
            r.floor_one_service_seconds.to_string(),
            String::new(),
        ),
        (
            "convergence to StatefulSets (s)",
            r.convergence_statefulsets_seconds.to_string(),
            String::new(),
        ),
        (
            "  / floor",
            r.convergence_statefulsets_over_floor.to_string(),
            target("<= 1.3", r.convergence_statefulsets_over_floor <= 1.3),
        ),
        (
            "  / floor with one Service",
            r.convergence_statefulsets_over_one_service_floor
                .to_string(),
            String::new(),
        ),
        (
            "convergence to Running (s)",
            shown(&r.convergence_running_seconds),
            String::new(),
        ),
        (
            "operator writes per cluster, by verb",
            shown(&r.operator_writes_per_cluster),
            target("<= 8 in all", writes <= 8.0),
        ),
        (
            "  by verb and resource",
            shown(&r.operator_writes_per_cluster_by_resource),
            String::new(),
        ),
    ]
}

fn steady_rows(r: &Results) -> Vec<Row> {
    let m = &r.memory_mib;
    let idle: f64 = r.idle_requests.values().sum();
    vec![
        scale_row(
            r,
            "scale latency, settled: p50/p90/p99/max (ms)",
            "settled",
            "settled_floor",
        ),
        scale_row(r, "  scale-ups only", "settled_up", "settled_floor_up"),
        scale_row(
            r,
            "  scale-downs only (the primary answers first)",
            "settled_down",
            "settled_floor_down",
        ),
        scale_row(
            r,
            "  floor: StatefulSet patched directly",
            "settled_floor",
            "",
        ),
        scale_row(
            r,
            "scale latency, back to back (ms)",
            "back_to_back",
            "back_to_back_floor",
        ),
        scale_row(
            r,
            "  floor: StatefulSet patched directly",
            "back_to_back_floor",
            "",
        ),
        (
            "idle requests but Leases (by verb), resync every N s",
            format!("{} (N = {})", shown(&r.idle_requests), r.resync_seconds),
            target("0", idle == 0.0),
        ),
        (
            "idle Redis commands per second, in all",
            r.idle_redis_commands_per_second.to_string(),
            String::new(),
        ),
        (
            "  per cluster per minute",
            shown(&r.idle_redis_commands_per_cluster_minute),
            String::new(),
        ),
        (
            "operator CPU while idle (% of a core)",
            r.idle_cpu_percent.to_string(),
            String::new(),
        ),
        (
            "RSS empty / converged (MiB)",
            format!("{:.1} / {:.1}", m.empty_rss, m.converged_rss),
            target("<= 40 at 1000", m.converged_rss <= 40.0),
        ),
        (
            "HWM converged / restarted, at ready (MiB)",
            format!("{:.1} / {:.1}", m.converged_hwm, m.restarted_ready_hwm),
            String::new(),
        ),
        (
            "memory per cluster (KiB)",
            m.per_cluster_kib.to_string(),
            String::new(),
        ),
        (
            "start-up with all present: ready / all reconciled (s)",
            format!(
                "{} / {}",
                r.startup_to_ready_seconds, r.startup_to_all_reconciled_seconds
            ),
            target("ready <= 1 s", r.startup_to_ready_seconds <= 1.0),
        ),
    ]
}
