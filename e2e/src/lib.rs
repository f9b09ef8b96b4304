//! Helpers for the live suite: a namespace per test (deleted afterwards, even on failure), the
//! operator as a child process scoped to that namespace, and watch-based waits with timeouts.
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` stays hermetic; `make e2e-local`
//! runs them against the current kubeconfig.

use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource};
use rediscluster_crd::RedisCluster;
use serde_json::json;

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
                "10s",
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
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            let current = api.get_opt(name).await?;
            Err(format!(
                "timed out after {WAIT:?} waiting for {name}: {what}; last seen: {current:#?}"
            )
            .into())
        }
    }
}

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
