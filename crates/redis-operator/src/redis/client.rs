//! Talking to the Redis in each pod: `INFO`, `CONFIG`, `REPLICAOF` and `CLIENT`, with a
//! bounded number of requests in flight, a short timeout, connections reused per pod, and a
//! per-pod backoff after a failure (the pace at which a silent Redis is asked again), so that
//! a Redis that does not answer costs little and never holds up other clusters' reconciles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Portforwarder;
use kube::{Api, Client};
use tokio::sync::Semaphore;

use super::info::{Replication, acl_passwords};
use super::serial::{SerialConnection, Stream};
use super::{Command, REDIS_PORT, Settings};
use crate::auth::{ClusterCredentials, OPERATOR_USER, REPLICA_COMMANDS, REPLICA_USER};
use crate::metrics::Metrics;
use crate::sync::lock;

/// Where one pod's Redis is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAddress {
    pub namespace: String,
    pub name: String,
    /// The pod's uid: a pod recreated under the same name is another Redis.
    pub uid: String,
    pub ip: String,
    /// Whether its Redis asks for a password (the pod was made with auth): the operator then
    /// logs in as its `operator` user.
    pub login: bool,
    /// The cluster's operator-held passwords (`auth::Credentials::of_cluster`).
    pub credentials: ClusterCredentials,
    /// With TLS, the name its certificate must carry (`<pod>.<cluster>.<namespace>.svc`): the
    /// operator dials the IP and verifies that name.
    pub tls_name: Option<String>,
}

/// What the reconcile needs from Redis. Behind a trait so that the controller tests run
/// against a fake.
pub trait RedisAccess: Send + Sync {
    /// The pod's `INFO replication` and `INFO keyspace`, or why they could not be had.
    fn replication<'a>(
        &'a self,
        pod: &'a PodAddress,
    ) -> BoxFuture<'a, Result<Replication, Unanswered>>;
    /// Runs a one-pod command (`Promote`, `Follow`); a handover is run step by step by the
    /// caller.
    fn run<'a>(
        &'a self,
        pod: &'a PodAddress,
        command: &'a Command,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// `CLIENT PAUSE <ms> WRITE`, or `CLIENT UNPAUSE` with `None`.
    fn pause_writes<'a>(
        &'a self,
        pod: &'a PodAddress,
        ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Why a pod's Redis gave no answer, and how long it has given none without a break (as seen
/// by this process: a restarted operator starts counting again, which only delays a failover).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unanswered {
    pub why: String,
    pub for_: Duration,
    /// Redis answered, refusing the operator's login or command ([`refused`]): it runs.
    pub refused: bool,
}

/// How the operator reaches a pod's Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Route {
    /// The pod's IP (in the cluster, or wherever the pod network is routable).
    Direct,
    /// The API server's port-forward (a pod network the operator cannot reach, such as kind's
    /// from the host).
    PortForward,
}

/// The real thing: connections to pods' Redis, direct or through port-forward.
pub struct Connections {
    client: Client,
    metrics: Arc<Metrics>,
    route: Route,
    timeout: Duration,
    /// How the certificates of pods with TLS are verified (`--tls-ca-file`); None: they are
    /// not reached.
    tls: Option<Arc<rustls::ClientConfig>>,
    in_flight: Semaphore,
    state: Mutex<HashMap<String, PodState>>,
}

/// What is kept per pod (by uid).
#[derive(Default)]
struct PodState {
    connection: Option<(String, SerialConnection)>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
    last_used: Option<Instant>,
    /// When the first request that failed since the last answer was sent.
    failing_since: Option<Instant>,
}

/// Connections unused this long are dropped (their pod is most likely gone).
const IDLE: Duration = Duration::from_secs(300);
/// The longest a pod that does not answer waits between attempts: a stopped primary that
/// wakes still believes it is the primary, and must be told to follow the new one soon.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Connections {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        route: Route,
        timeout: Duration,
        max_in_flight: usize,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        Self {
            client,
            metrics,
            route,
            timeout,
            tls,
            in_flight: Semaphore::new(max_in_flight),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// The pod's connection: the cached one if it is for the same IP, else a new one. Fails at
    /// once (`Backoff`) while the pod is backing off.
    async fn connection(&self, pod: &PodAddress) -> Result<SerialConnection, Failure> {
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            state.retain(|_, s| s.last_used.is_none_or(|used| now - used < IDLE));
            let entry = state.entry(pod.uid.clone()).or_default();
            entry.last_used = Some(now);
            if let Some(retry_at) = entry.retry_at
                && now < retry_at
            {
                return Err(Failure::Backoff(entry.last_error.clone()));
            }
            if let Some((ip, connection)) = &entry.connection
                && *ip == pod.ip
            {
                return Ok(connection.clone());
            }
        }
        let connection = tokio::time::timeout(self.timeout, self.connect(pod))
            .await
            .map_err(|_| format!("no connection within {:?}", self.timeout))?
            .map_err(Failure::Error)?;
        lock(&self.state)
            .entry(pod.uid.clone())
            .or_default()
            .connection = Some((pod.ip.clone(), connection.clone()));
        Ok(connection)
    }

    async fn connect(&self, pod: &PodAddress) -> Result<SerialConnection, String> {
        let (stream, forwarder) = self.byte_stream(pod).await?;
        let stream = match &pod.tls_name {
            Some(name) => self.secure(name, stream).await?,
            None => stream,
        };
        // No `CLIENT SETINFO` on connecting: Redis before 7.2 does not know it, and the
        // operator's user may not send it.
        let password = pod.credentials.operator.expose();
        let user = pod.login.then_some((OPERATOR_USER, password));
        SerialConnection::open(stream, forwarder, user)
            .await
            .map_err(|e| e.to_string())
    }

    /// A byte stream to the pod's Redis: TCP to its IP, or the API server's port-forward (with
    /// the forwarder, which must outlive the connection).
    async fn byte_stream(
        &self,
        pod: &PodAddress,
    ) -> Result<(Box<dyn Stream>, Option<Portforwarder>), String> {
        match self.route {
            Route::Direct => {
                let tcp = tokio::net::TcpStream::connect((pod.ip.as_str(), REDIS_PORT))
                    .await
                    .map_err(|e| e.to_string())?;
                // Requests are small and each waits for its reply.
                tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                Ok((Box::new(tcp), None))
            }
            Route::PortForward => {
                let pods = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace);
                let mut forwarder = pods
                    .portforward(&pod.name, &[REDIS_PORT])
                    .await
                    .map_err(|e| format!("port-forward: {e}"))?;
                let stream = forwarder
                    .take_stream(REDIS_PORT)
                    .ok_or("port-forward gave no stream")?;
                Ok((Box::new(stream), Some(forwarder)))
            }
        }
    }

    /// TLS over `stream`, the pod's certificate verified for `name` against the operator's CAs.
    async fn secure(&self, name: &str, stream: Box<dyn Stream>) -> Result<Box<dyn Stream>, String> {
        let tls = self.tls.clone().ok_or(
            "the pod serves TLS, and the operator has no --tls-ca-file to verify its certificate",
        )?;
        let server = rustls_pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| format!("{name}: {e}"))?;
        let secured = tokio_rustls::TlsConnector::from(tls)
            .connect(server, stream)
            .await
            .map_err(|e| format!("TLS with {name}: {e}"))?;
        Ok(Box::new(secured))
    }

    /// Runs `request` on the pod's connection within the timeout; a failure drops the
    /// connection and starts (or lengthens) the pod's backoff.
    async fn call<T: ::redis::FromRedisValue>(
        &self,
        pod: &PodAddress,
        name: &'static str,
        request: ::redis::Pipeline,
    ) -> Result<T, Unanswered> {
        let _permit = self.in_flight.acquire().await.map_err(|_| Unanswered {
            why: "shutting down".to_owned(),
            for_: Duration::ZERO,
            refused: false,
        })?;
        // A failure counts from when the request went out: a Redis that hangs was already
        // silent then, not only once the timeout ran out.
        let sent = Instant::now();
        let result = async {
            let mut connection = self.connection(pod).await?;
            tokio::time::timeout(self.timeout, request.query_async::<T>(&mut connection))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| Failure::Error(e.to_string()))
        }
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(Failure::Backoff(_)) => "backoff",
            Err(Failure::Error(_)) => "error",
        };
        self.metrics.count_redis(name, outcome);
        let now = Instant::now();
        let mut failing_since = now;
        {
            let mut state = lock(&self.state);
            let entry = state.entry(pod.uid.clone()).or_default();
            match &result {
                Ok(_) => {
                    entry.failures = 0;
                    entry.retry_at = None;
                    entry.failing_since = None;
                }
                Err(Failure::Error(error)) => {
                    entry.failures += 1;
                    entry.retry_at = Some(now + backoff(entry.failures));
                    entry.last_error = error.clone();
                    entry.connection = None;
                    failing_since = *entry.failing_since.get_or_insert(sent);
                }
                Err(Failure::Backoff(_)) => {
                    failing_since = *entry.failing_since.get_or_insert(now);
                }
            }
        }
        result.map_err(|failure| {
            let (Failure::Error(why) | Failure::Backoff(why)) = failure;
            Unanswered {
                refused: refused(&why),
                why,
                for_: now - failing_since,
            }
        })
    }
}

/// Whether an error is Redis refusing the operator (a wrong password, a user without the
/// permission) or a certificate the operator cannot trust, not a Redis that does not answer.
pub fn refused(error: &str) -> bool {
    [
        "WRONGPASS",
        "NOAUTH",
        "NOPERM",
        "authentication failed",
        "invalid peer certificate",
        "--tls-ca-file",
    ]
    .iter()
    .any(|refusal| error.contains(refusal))
}

/// Why a call got no answer: it failed now, or it was not sent because the pod failed lately.
enum Failure {
    Error(String),
    Backoff(String),
}

impl From<String> for Failure {
    fn from(error: String) -> Self {
        Failure::Error(error)
    }
}

/// The operator's TLS client: the CAs in `path` (PEM), nothing else trusted.
pub fn tls_client(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The sections of `INFO` the probe asks for: replication and data for the decisions, the
/// server's run (`run_id`) for the live config, and clients, memory and stats for the metrics.
const INFO_SECTIONS: [&str; 6] = [
    "replication",
    "keyspace",
    "server",
    "clients",
    "memory",
    "stats",
];

/// The replies to the probe's pipeline after the `INFO` sections: `CONFIG GET` of the fence,
/// the ping period and the replication user, and `ACL GETUSER default` (nil where not asked).
type Probed = (Vec<String>, Vec<String>, Vec<String>, ::redis::Value);

/// `CONFIG SET` of the settings. With replication auth, the credentials this Redis gives its
/// primary; and a Redis that asks no password (made before its cluster had auth) gets the
/// `replica` user too, so that the replicas made with auth can sync from it while the pods
/// are replaced one by one.
fn configure(request: &mut ::redis::Pipeline, pod: &PodAddress, settings: &Settings) {
    let replica = &pod.credentials.replica;
    if settings.replication_auth && !pod.login {
        request
            .cmd("ACL")
            .arg("SETUSER")
            .arg(REPLICA_USER)
            .arg("reset")
            .arg("on")
            .arg(format!("#{}", replica.sha256()))
            .arg(REPLICA_COMMANDS.split(' ').collect::<Vec<_>>())
            .ignore();
    }
    let (user, password) = if settings.replication_auth {
        (REPLICA_USER, replica.expose())
    } else {
        ("", "")
    };
    for (name, value) in [
        ("min-replicas-to-write", settings.min_replicas.to_string()),
        ("min-replicas-max-lag", settings.max_lag.to_string()),
        ("repl-ping-replica-period", settings.ping_period.to_string()),
        ("masteruser", user.to_owned()),
        ("masterauth", password.to_owned()),
    ] {
        config_set(request, name, &value);
    }
}

/// `CONFIG SET` of one parameter: Redis before 7 takes no more in one command.
fn config_set(request: &mut ::redis::Pipeline, name: &str, value: &str) {
    request
        .cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .ignore();
}

/// 1 s after each of the first four failures in a row (a primary that stops answering is
/// looked at every second until it fails over), then 2 s, 4 s, and at most [`MAX_BACKOFF`].
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.saturating_sub(4).min(3)).min(MAX_BACKOFF)
}

impl RedisAccess for Connections {
    fn replication<'a>(
        &'a self,
        pod: &'a PodAddress,
    ) -> BoxFuture<'a, Result<Replication, Unanswered>> {
        Box::pin(async move {
            // One round trip: Redis before 7 takes one INFO section (and one CONFIG GET
            // parameter or pattern) at a time.
            let mut request = ::redis::pipe();
            for section in INFO_SECTIONS {
                request.cmd("INFO").arg(section);
            }
            request
                .cmd("CONFIG")
                .arg("GET")
                .arg("min-replicas-*")
                .cmd("CONFIG")
                .arg("GET")
                .arg("repl-ping-replica-period")
                .cmd("CONFIG")
                .arg("GET")
                .arg("masteruser");
            // Only a Redis made with auth is asked which passwords it accepts: one without may
            // predate ACLs (Redis 5).
            if pod.login {
                request.cmd("ACL").arg("GETUSER").arg("default");
            }
            let mut replies: Vec<::redis::Value> = self.call(pod, "info", request).await?;
            if !pod.login {
                replies.push(::redis::Value::Nil);
            }
            let unreadable = |why: String| Unanswered {
                why,
                for_: Duration::ZERO,
                refused: false,
            };
            let rest = replies.split_off(INFO_SECTIONS.len().min(replies.len()));
            let info: Vec<String> = ::redis::from_redis_value(::redis::Value::Array(replies))
                .map_err(|why| unreadable(why.to_string()))?;
            let (fence, ping, user, acl): Probed =
                ::redis::from_redis_value(::redis::Value::Array(rest))
                    .map_err(|why| unreadable(why.to_string()))?;
            let mut parsed = Replication::parse(&info.join("\n")).map_err(unreadable)?;
            parsed.settings = Settings::parse(&[fence, ping, user].concat());
            parsed.passwords = acl_passwords(&acl);
            Ok(parsed)
        })
    }

    fn run<'a>(
        &'a self,
        pod: &'a PodAddress,
        command: &'a Command,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut request = ::redis::pipe();
            let name = match command {
                Command::Promote => {
                    request.cmd("REPLICAOF").arg("NO").arg("ONE");
                    "replicaof"
                }
                Command::Follow { host } => {
                    request.cmd("REPLICAOF").arg(host).arg(REDIS_PORT);
                    "replicaof"
                }
                Command::Demote { host } => {
                    request.cmd("REPLICAOF").arg(host).arg(REDIS_PORT).ignore();
                    kill_normal_clients(&mut request);
                    "demote"
                }
                Command::Disconnect => {
                    kill_normal_clients(&mut request);
                    "disconnect"
                }
                Command::Configure(settings) => {
                    configure(&mut request, pod, settings);
                    "config_set"
                }
                Command::SetConfig { directives, .. } => {
                    for (name, value) in directives {
                        config_set(&mut request, name, value);
                    }
                    "config_set"
                }
                Command::HandOver { .. } => {
                    return Err("a handover involves two pods: run step by step".to_owned());
                }
            };
            self.call::<()>(pod, name, request)
                .await
                .map_err(|unanswered| unanswered.why)
        })
    }

    fn pause_writes<'a>(
        &'a self,
        pod: &'a PodAddress,
        ms: Option<u64>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut request = ::redis::pipe();
            match ms {
                Some(ms) => request.cmd("CLIENT").arg("PAUSE").arg(ms).arg("WRITE"),
                None => request.cmd("CLIENT").arg("UNPAUSE"),
            };
            self.call::<()>(pod, "client_pause", request)
                .await
                .map_err(|unanswered| unanswered.why)
        })
    }
}

/// `CLIENT KILL TYPE normal`, its reply ignored: the operator's own connection is spared
/// (`SKIPME yes` by default), replicas' links too.
fn kill_normal_clients(request: &mut redis::Pipeline) {
    request
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .ignore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_client_trusts_the_cas_of_its_file_and_refuses_a_file_without_one() {
        let dir = std::env::temp_dir().join(format!("tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, empty) = (dir.join("ca.crt"), dir.join("empty.crt"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=test-ca", "-keyout"])
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output();
        std::fs::write(&empty, "").unwrap();
        if made.is_ok_and(|out| out.status.success()) {
            assert!(tls_client(&ca).is_ok());
        }
        assert!(tls_client(&empty).unwrap_err().contains("no certificate"));
        assert!(tls_client(&dir.join("absent")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refusals_are_told_from_silence() {
        for refusal in [
            "WRONGPASS invalid username-password pair",
            "Password authentication failed - AuthenticationFailed",
            "NOPERM this user has no permissions to run the 'config|set' command",
            "TLS with a.b.c.svc: invalid peer certificate: UnknownIssuer",
            "the pod serves TLS, and the operator has no --tls-ca-file to verify its certificate",
        ] {
            assert!(refused(refusal), "{refusal}");
        }
        for silence in ["no answer within 1s", "Connection refused (os error 111)"] {
            assert!(!refused(silence), "{silence}");
        }
    }

    #[test]
    fn backoff_stays_at_one_second_then_doubles_to_five() {
        let delays: Vec<u64> = (1..=10).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(delays, [1, 1, 1, 1, 2, 4, 5, 5, 5, 5]);
    }
}
