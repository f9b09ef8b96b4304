//! Helpers for the live suite: a namespace per test (deleted afterwards, even on failure), the
//! operator as a child process scoped to that namespace, and watch-based waits with timeouts.
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` stays hermetic; `make e2e-local`
//! runs them against the current kubeconfig.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource, ResourceExt};
use rediscluster_crd::{Phase, RedisCluster};
use serde_json::json;

pub mod faults;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

/// A client for the current kubeconfig, or one line saying why there is none.
pub async fn client() -> TestResult<Client> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!("e2e: no reachable cluster ({e}); point KUBECONFIG at one (make e2e-local)")
    };
    let client = Client::try_default().await.map_err(|e| unreachable(&e))?;
    let api = Api::<RedisCluster>::all(client.clone());
    let params = ListParams::default().limit(1);
    tokio::time::timeout(Duration::from_secs(10), api.list_metadata(&params))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    Ok(client)
}

/// A namespace of its own for one test; deleted when dropped, also when the test panics.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> TestResult<Self> {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let name = format!("e2e-{test}-{suffix:x}");
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "e2e.redis-operator/test": test,
                // The Redis pods the operator creates must be admitted at the strictest level.
                "pod-security.kubernetes.io/enforce": "restricted",
            }}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        Ok(Self { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where the operator under test runs: `E2E_MODE=in-cluster` when it is deployed already (the
/// kind flow), otherwise (`local`) each test starts the binary itself.
pub fn in_cluster() -> bool {
    std::env::var("E2E_MODE").is_ok_and(|mode| mode == "in-cluster")
}

/// The namespace and label of the deployed operator (config/default).
const OPERATOR_NAMESPACE: &str = "redis-operator-system";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=redis-operator";

/// The operator for one test: a child process watching the test's namespace (killed when
/// dropped), or nothing to do when the operator is deployed in the cluster.
pub struct Operator {
    child: Option<Child>,
}

impl Operator {
    pub fn start(namespace: &str) -> TestResult<Self> {
        if in_cluster() {
            return Ok(Self { child: None });
        }
        Self::start_with(namespace, "operator", &[])
    }

    /// Stops the operator abruptly and brings up a fresh one: a killed and restarted process,
    /// or deleted operator pods that their Deployment replaces.
    pub fn restart(self, namespace: &str) -> TestResult<Self> {
        if self.child.is_none() {
            let deleted = Command::new("kubectl")
                .args([
                    "delete",
                    "pod",
                    "-n",
                    OPERATOR_NAMESPACE,
                    "-l",
                    OPERATOR_SELECTOR,
                ])
                .args(["--wait=false", "--grace-period=1"])
                .status()?;
            if !deleted.success() {
                return Err("could not delete the operator pods".into());
            }
            return Ok(self);
        }
        self.kill();
        Self::start(namespace)
    }

    /// Starts one more operator for `namespace` with extra flags; it logs to
    /// `$TMPDIR/<namespace>.<name>.log`.
    pub fn start_with(namespace: &str, name: &str, extra: &[&str]) -> TestResult<Self> {
        let binary = std::env::var_os("REDIS_OPERATOR_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/redis-operator"),
            PathBuf::from,
        );
        let log_path = std::env::temp_dir().join(format!("{namespace}.{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        // Several operators run at once; each takes a free port unless told otherwise.
        let default_http = if extra.contains(&"--http-addr") {
            &[][..]
        } else {
            &["--http-addr", "127.0.0.1:0"][..]
        };
        let child = Command::new(&binary)
            .args([
                "run",
                "--namespace",
                namespace,
                "--failure-grace-period",
                &format!("{}s", LOCAL_FAILURE_GRACE.as_secs()),
            ])
            .args(default_http)
            .args(extra)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (run `cargo build -p redis-operator`)",
                    binary.display()
                )
            })?;
        Ok(Self { child: Some(child) })
    }

    /// Kills the process at once, the way a node failure would.
    pub fn kill(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of a local operator.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM, as the kubelet does, and waits for the process to exit.
    pub fn terminate(mut self) -> TestResult<std::process::ExitStatus> {
        let child = self.child.as_mut().ok_or("no local operator process")?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        Ok(child.wait()?)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits, by watching, until `condition` holds for the named object; fails after `WAIT`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> TestResult<Option<K>>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    wait_for_within(WAIT, api, name, what, condition).await
}

/// `wait_for` with a limit of its own, for waits that include a known delay.
pub async fn wait_for_within<K>(
    limit: Duration,
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> TestResult<Option<K>>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            let current = api.get_opt(name).await?;
            Err(format!(
                "timed out after {limit:?} waiting for {name}: {what}; last seen: {current:#?}"
            )
            .into())
        }
    }
}

/// The `--failure-grace-period` of the operator under test: what local mode passes, or the
/// default of the deployed operator (config/default sets none).
pub fn failure_grace() -> Duration {
    if in_cluster() {
        Duration::from_secs(120)
    } else {
        LOCAL_FAILURE_GRACE
    }
}

/// The grace period each local operator gets, short so that Failed comes within a test.
const LOCAL_FAILURE_GRACE: Duration = Duration::from_secs(10);

/// A RedisCluster manifest as JSON.
pub fn redis_cluster(name: &str, image: &str, replicas: i32) -> TestResult<RedisCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cache.example.com/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": name},
        "spec": {"image": image, "replicas": replicas},
    }))?)
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> TestResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `path` from a local HTTP port; the body, or an error if the status is not 200.
pub fn http_get(port: u16, path: &str) -> TestResult<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or_default()).into());
    }
    Ok(body.to_owned())
}

/// The value of one series in Prometheus text, such as `redis_operator_leader`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Every reconcile an operator ran, whatever its result, from its /metrics text.
pub fn reconciles_total(text: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with("redis_operator_reconciles_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The requests an operator on a local port sent to the API server, by verb (every verb the
/// operator could use is present, 0 when unused), from its own counter.
pub fn request_counts(port: u16) -> TestResult<std::collections::BTreeMap<String, f64>> {
    let text = http_get(port, "/metrics")?;
    let mut counts = std::collections::BTreeMap::new();
    for line in text.lines() {
        let series = line
            .strip_prefix("redis_operator_kube_requests_total{verb=\"")
            .and_then(|rest| rest.split_once("\"} "));
        if let Some((verb, value)) = series {
            counts.insert(verb.to_owned(), value.parse()?);
        }
    }
    for verb in [
        "get", "list", "watch", "create", "patch", "update", "delete",
    ] {
        counts.entry(verb.to_owned()).or_insert(0.0);
    }
    Ok(counts)
}

/// Whether the cluster has a node whose kubelet really runs pods. The development control
/// plane's fake kubelet only marks pods Ready and registers no Node: there, scenarios that need
/// a Redis process are skipped (with a message), never passed silently.
pub async fn has_real_node(client: &Client) -> TestResult<bool> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(nodes.items.iter().any(|node| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
    }))
}

/// True when pods really run; otherwise prints why `test` stops here and returns false, so
/// that the caller returns early. The message is the skip: cargo has no runtime skip.
pub async fn real_node_or_skip(client: &Client, test: &str) -> TestResult<bool> {
    let real = has_real_node(client).await?;
    if !real {
        eprintln!(
            "SKIPPED {test}: needs a node that runs pods (no Ready Node; the fake kubelet only \
             marks pods Ready). Start one with ../shared/k8s-local/start-node.sh, or use make e2e."
        );
    }
    Ok(real)
}

/// Runs `kubectl ARGS` off the async runtime and returns its stdout, or its stderr as the error.
pub async fn kubectl(args: impl IntoIterator<Item = impl Into<String>>) -> TestResult<String> {
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let output =
        tokio::task::spawn_blocking(move || Command::new("kubectl").args(&args).output()).await??;
    if output.status.success() {
        Ok(String::from_utf8(output.stdout)?)
    } else {
        Err(format!(
            "kubectl failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into())
    }
}

/// Runs a command in the Redis container of a pod, through the API server (`kubectl exec`), so
/// that it works where the host cannot reach pod IPs (kind). Returns its trimmed stdout.
pub async fn exec(namespace: &str, pod: &str, command: &[&str]) -> TestResult<String> {
    let args = ["exec", "-n", namespace, pod, "-c", "redis", "--"];
    Ok(kubectl(args.iter().chain(command).copied())
        .await?
        .trim()
        .to_owned())
}

/// A `redis-cli` command against the Redis in `pod`.
pub async fn redis_cli(namespace: &str, pod: &str, command: &[&str]) -> TestResult<String> {
    let mut full = vec!["redis-cli"];
    full.extend_from_slice(command);
    exec(namespace, pod, &full).await
}

/// The pods of one RedisCluster, by its instance label, sorted by name.
pub async fn cluster_pods(client: &Client, namespace: &str, cluster: &str) -> TestResult<Vec<Pod>> {
    let selector = format!("app.kubernetes.io/instance={cluster}");
    let mut pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    pods.sort_by_key(|pod| pod.metadata.name.clone());
    Ok(pods)
}

/// Proves that Redis serves on each of the cluster's `expected` pods: each answers PING through
/// the API server. Without a real node there is no Redis to ask; that is said, not hidden.
pub async fn assert_redis_serves(
    client: &Client,
    namespace: &str,
    cluster: &str,
    expected: usize,
) -> TestResult {
    if !has_real_node(client).await? {
        eprintln!("note: Redis itself not checked in {namespace}: no node runs pods here");
        return Ok(());
    }
    let pods = cluster_pods(client, namespace, cluster).await?;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), expected, "pods of {cluster}");
    for pod in live {
        let name = pod.metadata.name.as_deref().ok_or("pod without a name")?;
        let answer = redis_cli(namespace, name, &["ping"]).await?;
        assert_eq!(answer, "PONG", "redis-cli ping in {name}");
    }
    Ok(())
}

/// Every version of one object while it was recorded, as its watch delivered them.
pub struct WatchLog<K> {
    seen: std::sync::Arc<std::sync::Mutex<Vec<K>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Every status a RedisCluster had while it was recorded.
pub type StatusLog = WatchLog<RedisCluster>;

impl<K> WatchLog<K>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    /// Starts recording the named object; the first entry is its state now.
    pub fn start(api: &Api<K>, name: &str) -> Self {
        use futures::StreamExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let config =
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = kube::runtime::watcher(api.clone(), config);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            while let Some(Ok(object)) = stream.next().await {
                if let Ok(mut log) = log.lock() {
                    log.push(object);
                }
            }
        });
        Self { seen, task }
    }

    /// What was seen so far, oldest first.
    pub fn snapshot(&self) -> Vec<K> {
        self.seen.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Stops recording and returns what was seen, oldest first.
    pub fn stop(self) -> Vec<K> {
        self.task.abort();
        self.snapshot()
    }
}

/// The name of the cluster each scenario creates (the sample's).
pub const NAME: &str = "test-redis";

/// One scenario's namespace and the APIs it uses there.
pub struct Setup {
    pub client: Client,
    pub namespace: TestNamespace,
    pub clusters: Api<RedisCluster>,
    pub statefulsets: Api<StatefulSet>,
    pub services: Api<Service>,
    pub pods: Api<Pod>,
}

impl Setup {
    pub async fn new(test: &str) -> TestResult<Self> {
        let client = client().await?;
        let namespace = TestNamespace::create(&client, test).await?;
        Ok(Self {
            clusters: Api::namespaced(client.clone(), &namespace.name),
            statefulsets: Api::namespaced(client.clone(), &namespace.name),
            services: Api::namespaced(client.clone(), &namespace.name),
            pods: Api::namespaced(client.clone(), &namespace.name),
            client,
            namespace,
        })
    }

    /// Creates the cluster `NAME`.
    pub async fn create_cluster(&self, image: &str, replicas: i32) -> TestResult {
        let cluster = redis_cluster(NAME, image, replicas)?;
        self.clusters
            .create(&PostParams::default(), &cluster)
            .await?;
        Ok(())
    }

    /// After a fault inflicted while `log` recorded the cluster: waits until the operator
    /// noticed (a status other than Running), then until it is Running with `ready` pods and
    /// serving as one primary with linked replicas.
    pub async fn wait_recovered(&self, log: StatusLog, ready: i32) -> TestResult<RedisCluster> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !log
            .snapshot()
            .iter()
            .any(|c| c.status.as_ref().is_some_and(|s| s.phase != Phase::Running))
        {
            if tokio::time::Instant::now() > deadline {
                return Err("the cluster never left Running: the fault went unnoticed".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        log.stop();
        self.wait_running(ready).await
    }

    /// Creates the cluster `NAME` with `fields` (storage, resources, ...) in its spec too.
    pub async fn create_cluster_with(
        &self,
        image: &str,
        replicas: i32,
        fields: serde_json::Value,
    ) -> TestResult {
        let mut cluster = serde_json::to_value(redis_cluster(NAME, image, replicas)?)?;
        if let (Some(spec), Some(fields)) = (cluster["spec"].as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        self.clusters
            .create(&PostParams::default(), &serde_json::from_value(cluster)?)
            .await?;
        Ok(())
    }

    /// Waits until the cluster reports `phase` with `ready` ready pods for its current spec
    /// (`status.observedGeneration` equals `metadata.generation`, so the status was written
    /// for the latest change, not left over from before it).
    pub async fn wait_phase(&self, phase: Phase, ready: i32) -> TestResult<RedisCluster> {
        let what = format!("{phase} with {ready} ready, for the current generation");
        wait_for(&self.clusters, NAME, &what, reports(phase, ready))
            .await?
            .ok_or_else(|| "the RedisCluster vanished".into())
    }

    /// Waits until the cluster is Failed (allowing for the operator's grace period) and returns
    /// its Degraded condition, which must be True.
    pub async fn wait_failed(&self) -> TestResult<Condition> {
        let failed = wait_for_within(
            failure_grace() + WAIT,
            &self.clusters,
            NAME,
            "Failed",
            |c: Option<&RedisCluster>| {
                c.and_then(|c| c.status.as_ref())
                    .is_some_and(|s| s.phase == Phase::Failed)
            },
        )
        .await?
        .ok_or("the RedisCluster vanished")?;
        let degraded = failed
            .status
            .as_ref()
            .and_then(|s| s.condition(rediscluster_crd::conditions::DEGRADED))
            .ok_or("no Degraded condition")?
            .clone();
        assert_eq!(degraded.status, "True", "{degraded:?}");
        Ok(degraded)
    }

    /// Waits for Running with `ready` pods, then proves that Redis answers on each of them
    /// and that they are one primary with replicas linked to it, as the labels and the status
    /// say.
    pub async fn wait_running(&self, ready: i32) -> TestResult<RedisCluster> {
        let cluster = self.wait_phase(Phase::Running, ready).await?;
        let expected = usize::try_from(ready)?;
        assert_redis_serves(&self.client, &self.namespace.name, NAME, expected).await?;
        if has_real_node(&self.client).await? {
            self.assert_one_primary_and_linked_replicas().await?;
        }
        Ok(cluster)
    }

    /// A namespace with its own operator and the sample at `replicas`, Running and serving.
    pub async fn running_sample(test: &str, replicas: i32) -> TestResult<(Self, Operator)> {
        let setup = Self::new(test).await?;
        let operator = Operator::start(&setup.namespace.name)?;
        setup.create_cluster("redis:7.0", replicas).await?;
        setup.wait_running(replicas).await?;
        Ok((setup, operator))
    }

    /// `running_sample` where pods really run; `None`, said, elsewhere.
    pub async fn sample_on_real_pods(
        test: &str,
        replicas: i32,
    ) -> TestResult<Option<(Self, Operator)>> {
        if !real_node_or_skip(&client().await?, test).await? {
            return Ok(None);
        }
        Ok(Some(Self::running_sample(test, replicas).await?))
    }

    /// Merge-patches the cluster's spec, as `kubectl patch --type=merge` does.
    pub async fn patch_spec(&self, spec: serde_json::Value) -> TestResult {
        use kube::api::{Patch, PatchParams};
        let patch = json!({ "spec": spec });
        self.clusters
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// The cluster reports `phase` with `ready` ready pods, for its current generation.
pub fn reports(phase: Phase, ready: i32) -> impl Fn(Option<&RedisCluster>) -> bool {
    move |cluster| {
        cluster.is_some_and(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == phase
                    && s.ready_replicas == ready
                    && s.observed_generation.is_some()
                    && s.observed_generation == c.metadata.generation
            })
        })
    }
}

/// The label the operator puts on each pod it gave a role.
pub const ROLE_LABEL: &str = "cache.example.com/role";

/// `key:1 … key:count`, and the value written under each: `value-<i>`.
pub fn test_keys(count: usize) -> Vec<(String, String)> {
    (1..=count)
        .map(|i| (format!("key:{i}"), format!("value-{i}")))
        .collect()
}

/// A pod's `INFO replication`, field by field.
pub async fn replication_info(namespace: &str, pod: &str) -> TestResult<BTreeMap<String, String>> {
    let info = redis_cli(namespace, pod, &["info", "replication"]).await?;
    Ok(info
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

impl Setup {
    /// The cluster's live pods, by name.
    pub async fn live_pods(&self) -> TestResult<Vec<Pod>> {
        Ok(cluster_pods(&self.client, &self.namespace.name, NAME)
            .await?
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Checks that labels, `status.primary` and what each Redis reports agree: exactly one pod
    /// labelled primary, the one the status names, a Redis primary; every other pod labelled
    /// replica, its Redis linked to the primary's IP. Returns the primary's name.
    pub async fn assert_one_primary_and_linked_replicas(&self) -> TestResult<String> {
        let cluster = self.clusters.get(NAME).await?;
        let primary = cluster
            .status
            .as_ref()
            .and_then(|s| s.primary.clone())
            .ok_or("status.primary is not set")?;
        let pods = self.live_pods().await?;
        let role = |pod: &Pod| pod.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        let labelled: Vec<String> = pods
            .iter()
            .filter(|pod| role(pod) == "primary")
            .map(|pod| pod.name_any())
            .collect();
        assert_eq!(
            labelled,
            std::slice::from_ref(&primary),
            "pods labelled primary"
        );
        let primary_ip = pods
            .iter()
            .find(|pod| pod.name_any() == primary)
            .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
            .ok_or("the primary has no IP")?;
        for pod in &pods {
            let name = pod.name_any();
            let info = replication_info(&self.namespace.name, &name).await?;
            if name == primary {
                assert_eq!(info["role"], "master", "{name}: {info:?}");
                continue;
            }
            assert_eq!(role(pod), "replica", "{name} is labelled replica");
            assert_eq!(info["role"], "slave", "{name}: {info:?}");
            assert_eq!(
                info["master_host"], primary_ip,
                "{name} follows the primary"
            );
            assert_eq!(info["master_link_status"], "up", "{name}: {info:?}");
        }
        Ok(primary)
    }

    /// A pod of the cluster other than `than`, to run a client in (a pod reaching a Service
    /// that routes back to itself needs hairpin NAT, which not every bridge has).
    async fn pod_other_than(&self, than: &str) -> TestResult<String> {
        self.live_pods()
            .await?
            .iter()
            .map(|pod| pod.name_any())
            .find(|name| name != than)
            .ok_or_else(|| "no other pod".into())
    }

    /// Writes `keys` with one MSET through the `<name>-primary` Service, from a replica pod.
    pub async fn write_through_primary_service(&self, keys: &[(String, String)]) -> TestResult {
        let primary = self.assert_one_primary_and_linked_replicas().await?;
        let client_pod = self.pod_other_than(&primary).await?;
        let service = format!("{NAME}-primary");
        let mut command = vec!["-h", &service, "mset"];
        for (key, value) in keys {
            command.extend([key.as_str(), value.as_str()]);
        }
        let answer = redis_cli(&self.namespace.name, &client_pod, &command).await?;
        assert_eq!(answer, "OK", "MSET through {service}");
        Ok(())
    }

    /// The values of `keys` as read with one MGET in `pod`, or, with `service`, from `pod`
    /// through that Service.
    pub async fn read_keys(
        &self,
        pod: &str,
        service: Option<&str>,
        keys: &[(String, String)],
    ) -> TestResult<Vec<String>> {
        let mut command: Vec<&str> = Vec::new();
        if let Some(service) = service {
            command.extend(["-h", service]);
        }
        command.push("mget");
        command.extend(keys.iter().map(|(key, _)| key.as_str()));
        let answer = redis_cli(&self.namespace.name, pod, &command).await?;
        Ok(answer.lines().map(str::to_owned).collect())
    }

    /// Asserts that every pod holds every one of `keys` with its value, read in the pod, and
    /// that a read through `<name>-replicas` (from the primary's pod) returns them all.
    /// Replication is asynchronous: each read is retried for up to 10 s.
    pub async fn assert_every_pod_holds(&self, keys: &[(String, String)]) -> TestResult {
        let expected: Vec<String> = keys.iter().map(|(_, value)| value.clone()).collect();
        let primary = self.assert_one_primary_and_linked_replicas().await?;
        let replicas_service = format!("{NAME}-replicas");
        let mut reads: Vec<(String, Option<&str>)> = self
            .live_pods()
            .await?
            .iter()
            .map(|pod| (pod.name_any(), None))
            .collect();
        if reads.len() > 1 {
            reads.push((primary.clone(), Some(replicas_service.as_str())));
        }
        for (pod, service) in reads {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let values = self.read_keys(&pod, service, keys).await?;
                if values == expected {
                    break;
                }
                if Instant::now() > deadline {
                    let missing = values.iter().zip(&expected).filter(|(a, b)| a != b).count();
                    return Err(format!(
                        "{pod} (through {service:?}) lacks {missing} of {} keys",
                        keys.len()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

/// The operator's Redis commands so far, by `command/result` (from its /metrics).
pub fn redis_command_counts(port: u16) -> TestResult<BTreeMap<String, f64>> {
    let text = http_get(port, "/metrics")?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("redis_operator_redis_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        counts.insert(
            format!("{}/{}", label("command"), label("result")),
            value.parse()?,
        );
    }
    Ok(counts)
}

impl Setup {
    /// The cluster's claims (made by its StatefulSet, labelled with its instance), name → uid.
    pub async fn claim_uids(&self) -> TestResult<BTreeMap<String, String>> {
        let selector = format!("app.kubernetes.io/instance={NAME}");
        Ok(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.namespace.name)
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .iter()
                .filter(|claim| claim.metadata.deletion_timestamp.is_none())
                .map(|claim| (claim.name_any(), claim.uid().unwrap_or_default()))
                .collect(),
        )
    }

    /// The claim each live pod mounts as its data volume, pod → claim.
    pub async fn mounted_claims(&self) -> TestResult<BTreeMap<String, Option<String>>> {
        Ok(self
            .live_pods()
            .await?
            .iter()
            .map(|pod| {
                let claim = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.volumes.as_ref())
                    .and_then(|volumes| volumes.iter().find(|v| v.name == "data"))
                    .and_then(|volume| volume.persistent_volume_claim.as_ref())
                    .map(|claim| claim.claim_name.clone());
                (pod.name_any(), claim)
            })
            .collect())
    }
}

/// Pods `0..replicas` of the cluster, each on its claim `data-<pod>`.
pub fn claims_of_pods(replicas: i32) -> BTreeMap<String, Option<String>> {
    (0..replicas)
        .map(|i| (format!("{NAME}-{i}"), Some(format!("data-{NAME}-{i}"))))
        .collect()
}
