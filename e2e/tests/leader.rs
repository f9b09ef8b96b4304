//! Leader election against a live API server: two operators, one Lease; only the leader
//! reconciles, a killed leader is replaced after its lease expires, and a leader stopped with
//! SIGTERM releases the lease so that the standby takes over at once.

use std::time::{Duration, Instant};

use e2e::{
    Operator, TestNamespace, TestResult, client, http_get, metric, reconciles_total, redis_cluster,
    wait_for,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use rediscluster_crd::RedisCluster;

const LEASE: &str = "redis-operator-leader";
const LEASE_SECONDS: u64 = 6;

struct Candidate {
    identity: &'static str,
    port: u16,
    operator: Operator,
}

fn candidate(namespace: &str, identity: &'static str) -> TestResult<Candidate> {
    let mut operator = Operator::candidate(namespace, identity, LEASE_SECONDS, &[], &[])?;
    let port = operator.http_port()?;
    Ok(Candidate {
        identity,
        port,
        operator,
    })
}

fn holder(lease: Option<&Lease>) -> Option<&str> {
    lease?.spec.as_ref()?.holder_identity.as_deref()
}

/// Whether the candidate's /metrics says it leads (None if it does not answer).
fn leads(candidate: &Candidate) -> Option<bool> {
    let text = http_get(candidate.port, "/metrics").ok()?;
    metric(&text, "redis_operator_leader").map(|v| v == 1.0)
}

/// Every reconcile the candidate ran, whatever its result.
fn reconciles(candidate: &Candidate) -> TestResult<f64> {
    Ok(reconciles_total(&http_get(candidate.port, "/metrics")?))
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn one_leader_reconciles_and_hands_over() -> TestResult {
    if e2e::in_cluster() {
        return deployed_leader_reconciles_and_hands_over().await;
    }
    let client = client().await?;
    if !e2e::real_node_or_skip(&client, "leader").await? {
        return Ok(());
    }
    let namespace = TestNamespace::create(&client, "leader").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace.name);
    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), &namespace.name);

    let a = candidate(&namespace.name, "candidate-a")?;
    let b = candidate(&namespace.name, "candidate-b")?;
    // Both turn ready (a standby is ready as a standby); exactly one says it leads, and the
    // Lease names it. Who leads is what the candidates say, not the first holder the Lease
    // shows: two candidates starting together may each hold it for a moment.
    for c in [&a, &b] {
        wait_until(|| http_get(c.port, "/readyz").is_ok()).await?;
    }
    wait_until(|| leads(&a) == Some(true) || leads(&b) == Some(true)).await?;
    let (leader, standby) = if leads(&a) == Some(true) {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leads(&standby), Some(false));
    let lease = leases.get(LEASE).await?;
    assert_eq!(holder(Some(&lease)), Some(leader.identity));

    // Exactly one reconciles.
    let cluster = redis_cluster("test-redis", "redis:7.0", 2)?;
    clusters.create(&PostParams::default(), &cluster).await?;
    wait_for(
        &clusters,
        "test-redis",
        "Running",
        |c: Option<&RedisCluster>| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.phase == rediscluster_crd::Phase::Running)
        },
    )
    .await?;
    assert!(reconciles(&leader)? > 0.0);
    assert_eq!(reconciles(&standby)?, 0.0, "the standby must not reconcile");

    // SIGTERM: the leader releases the lease, and the standby takes it well before expiry.
    let stopped = Instant::now();
    let status = leader.operator.terminate()?;
    assert!(status.success(), "leader exited with {status}");
    let standby_identity = standby.identity;
    wait_for(&leases, LEASE, "the standby leads", |l| {
        holder(l) == Some(standby_identity)
    })
    .await?;
    let takeover = stopped.elapsed();
    // Waiting for expiry would take up to LEASE_SECONDS; a release is seen at once.
    assert!(
        takeover < Duration::from_secs(2),
        "takeover took {takeover:?}; a released lease must not wait for expiry"
    );
    wait_until(|| leads(&standby) == Some(true)).await?;
    println!("SIGTERM handover took {takeover:?}");

    // A killed leader cannot release; a new candidate takes over once the lease expires.
    let new_leader = standby;
    let c = candidate(&namespace.name, "candidate-c")?;
    wait_until(|| http_get(c.port, "/readyz").is_ok()).await?;
    let killed = Instant::now();
    new_leader.operator.kill();
    wait_for(&leases, LEASE, "candidate-c leads", |l| {
        holder(l) == Some("candidate-c")
    })
    .await?;
    let failover = killed.elapsed();
    println!("failover after kill took {failover:?}");
    assert!(
        failover <= Duration::from_secs(LEASE_SECONDS * 3),
        "{failover:?}"
    );
    drop(c);
    Ok(())
}

/// Polls a local, cheap check (an HTTP endpoint of a child process) for up to 30 s.
async fn wait_until(check: impl Fn() -> bool) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err("condition not met within 30 s".into())
}

const OPERATOR_NAMESPACE: &str = "redis-operator-system";

/// The /metrics of an operator pod, through the API server's pod proxy (works on kind too).
async fn pod_metrics(pod: &str) -> TestResult<String> {
    let path = format!("/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{pod}:8080/proxy/metrics");
    e2e::kubectl(["get", "--raw", &path]).await
}

/// The same claims against the deployed operator (`make e2e`): its two pods share the Lease,
/// only the holder reconciles (every result counted), and deleting the holder's pod (SIGTERM,
/// as a rollout or a drain does) hands over well before the Lease would expire.
async fn deployed_leader_reconciles_and_hands_over() -> TestResult {
    let client = client().await?;
    let namespace = TestNamespace::create(&client, "leader").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let lease = leases.get(LEASE).await?;
    let leader = holder(Some(&lease)).ok_or("no holder")?.to_owned();
    let pods = e2e::kubectl([
        "get",
        "pods",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=redis-operator",
        "-o",
        "name",
    ])
    .await?;
    let standby = pods
        .lines()
        .filter_map(|l| l.strip_prefix("pod/"))
        .find(|p| *p != leader)
        .ok_or("no standby pod")?
        .to_owned();
    assert_eq!(
        metric(&pod_metrics(&leader).await?, "redis_operator_leader"),
        Some(1.0)
    );
    assert_eq!(
        metric(&pod_metrics(&standby).await?, "redis_operator_leader"),
        Some(0.0)
    );

    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), &namespace.name);
    clusters
        .create(
            &PostParams::default(),
            &redis_cluster("test-redis", "redis:7.0", 2)?,
        )
        .await?;
    wait_for(
        &clusters,
        "test-redis",
        "Running",
        e2e::reports(rediscluster_crd::Phase::Running, 2),
    )
    .await?;
    assert!(reconciles_total(&pod_metrics(&leader).await?) > 0.0);
    assert_eq!(
        reconciles_total(&pod_metrics(&standby).await?),
        0.0,
        "the standby must not reconcile"
    );

    let deleted = Instant::now();
    e2e::kubectl([
        "delete",
        "pod",
        "-n",
        OPERATOR_NAMESPACE,
        &leader,
        "--wait=false",
    ])
    .await?;
    let old_leader = leader.clone();
    wait_for(&leases, LEASE, "a new holder", |l| {
        holder(l).is_some_and(|h| h != old_leader)
    })
    .await?;
    let takeover = deleted.elapsed();
    assert!(
        takeover < Duration::from_secs(5),
        "takeover took {takeover:?}; a released lease must not wait for expiry"
    );
    println!("deployed operator: leader pod deleted -> new holder after {takeover:?}");
    Ok(())
}
