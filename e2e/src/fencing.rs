//! Faults measured the way applications use Redis (`tests/fencing.rs`): a pooled client that
//! keeps one connection through `<name>-primary`'s ClusterIP and reconnects only when it
//! fails, with a 10 s reply timeout, about 200 writes a second; beside it the reconnecting
//! writer pod of [`crate::faults`]; and a watcher that asks every pod `ROLE` and for a write
//! every 100 ms, recording how many take one at once.
//!
//! The pooled client runs in the test, on the host: its connection goes through the node's
//! kube-proxy rules as a pod's would (an established connection keeps reaching its pod after
//! the pod leaves the Service), so it needs `K8S_LOCAL_KUBE_PROXY=1` on the local node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client as RedisClient};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Serialize;

use crate::faults::{Figures, Measurement, Write, clock, figures, keys_on_primary, record_writes};
use crate::{NAME, Setup, TestResult, cluster_pods, password, redis_url};

/// How long the pooled client waits for a reply (Lettuce waits 60 s, redis-py forever).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with one pooled connection, writing `p<n>` = its send time, one write at a time.
pub struct PooledWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Write>>,
}

async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(REPLY_TIMEOUT));
    let client = RedisClient::open(url).map_err(|e| e.to_string())?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

impl PooledWriter {
    /// Starts writing to `address` (the primary Service's ClusterIP) with `password`; None
    /// when the host cannot reach it (no kube-proxy on this node).
    pub async fn start(address: &str, password: Option<&str>) -> TestResult<Option<Self>> {
        Self::start_every(address, password, Duration::from_millis(5)).await
    }

    /// [`PooledWriter::start`], `pause` between writes (many writers at once write slower, so
    /// as not to load the machine they measure).
    pub async fn start_every(
        address: &str,
        password: Option<&str>,
        pause: Duration,
    ) -> TestResult<Option<Self>> {
        let url = redis_url(address, password);
        let Ok(Ok(first)) = tokio::time::timeout(Duration::from_secs(3), connect(&url)).await
        else {
            return Ok(None);
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut writes = Vec::new();
            let mut connection = Some(first);
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let Some(live) = connection.as_mut() else {
                    connection = connect(&url).await.ok();
                    if connection.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                };
                n += 1;
                let key = format!("p{n}");
                let sent = clock().unwrap_or_default();
                let result: Result<String, ::redis::RedisError> = ::redis::cmd("SET")
                    .arg(&key)
                    .arg(sent.to_string())
                    .query_async(live)
                    .await;
                let answered = clock().unwrap_or_default();
                let (acknowledged, reply) = match result {
                    Ok(reply) => (reply == "OK", reply),
                    Err(error) => {
                        // As a pool does: a broken connection is replaced; an error reply
                        // (READONLY, NOREPLICAS) is the server's answer on a good one.
                        if error.is_io_error()
                            || error.is_connection_dropped()
                            || error.is_timeout()
                            || error.is_unrecoverable_error()
                        {
                            connection = None;
                        }
                        (false, error.to_string())
                    }
                };
                writes.push(Write {
                    key,
                    sent,
                    answered,
                    acknowledged,
                    reply,
                });
                tokio::time::sleep(pause).await;
            }
            writes
        });
        Ok(Some(Self { stop, task }))
    }

    pub async fn stop(self) -> TestResult<Vec<Write>> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// Asks every pod of the cluster, every 100 ms, for `ROLE` and a write (a probe key that
/// expires), and records the most pods that answered `master` and took the write in one round.
pub struct WritableWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Writable>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Writable {
    /// The most pods that took a write as primaries in one round.
    pub most: usize,
    /// The rounds in which two or more did, with the pods.
    pub overlaps: Vec<(f64, Vec<String>)>,
    pub rounds: usize,
}

/// Whether the Redis at `ip` answers `ROLE` as a master and takes a write, within 200 ms.
async fn takes_writes(ip: &str, pod: &str, password: Option<&str>) -> bool {
    let asked = async {
        let url = redis_url(ip, password);
        let client = RedisClient::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let (role, set): (Vec<::redis::Value>, String) = ::redis::pipe()
            .cmd("ROLE")
            .cmd("SET")
            .arg(format!("fence-probe:{pod}"))
            .arg(1)
            .arg("PX")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .ok()?;
        let master = matches!(role.first(), Some(::redis::Value::BulkString(b)) if b == b"master");
        Some(master && set == "OK")
    };
    tokio::time::timeout(Duration::from_millis(200), asked)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl WritableWatch {
    pub fn start(setup: &Setup) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let (client, namespace) = (setup.client.clone(), setup.namespace.name.clone());
        let task = tokio::spawn(async move {
            let mut seen = Writable::default();
            let mut addresses: BTreeMap<String, String> = BTreeMap::new();
            let mut listed = std::time::Instant::now() - Duration::from_secs(10);
            let password = password(&client, &namespace, NAME).await.ok().flatten();
            let password = password.as_deref();
            while !stopped.load(Ordering::Relaxed) {
                if listed.elapsed() > Duration::from_secs(1) {
                    if let Ok(pods) = cluster_pods(&client, &namespace, NAME).await {
                        addresses = pods
                            .iter()
                            .filter_map(|p: &Pod| {
                                Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?))
                            })
                            .collect();
                    }
                    listed = std::time::Instant::now();
                }
                let at = clock().unwrap_or_default();
                let asked = addresses.iter().map(|(pod, ip)| async move {
                    takes_writes(ip, pod, password).await.then(|| pod.clone())
                });
                let writable: Vec<String> = futures::future::join_all(asked)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                seen.rounds += 1;
                seen.most = seen.most.max(writable.len());
                if writable.len() >= 2 {
                    seen.overlaps.push((at, writable));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> TestResult<Writable> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// What one fault cost both writers, and what the watcher saw.
#[derive(Debug, Serialize)]
pub struct FenceFigures {
    pub scenario: String,
    pub pooled: Figures,
    pub reconnecting: Figures,
    pub writable: Writable,
}

impl FenceFigures {
    pub fn print(&self) {
        println!(
            "fence figures: {}: pooled writer back {:.2}s after the fault, {} acknowledged, \
             {} lost; reconnecting writer back {:.2}s, {} acknowledged, {} lost; at most {} \
             pod(s) took writes as primary in one round ({} rounds)",
            self.scenario,
            self.pooled.back_after,
            self.pooled.acknowledged,
            self.pooled.lost.len(),
            self.reconnecting.back_after,
            self.reconnecting.acknowledged,
            self.reconnecting.lost.len(),
            self.writable.most,
            self.writable.rounds
        );
    }

    /// No acknowledged write lost, of any age, by either writer, and never two pods that
    /// take writes as primaries.
    pub fn assert_nothing_lost_and_one_writable_primary(&self) {
        for (writer, figures) in [
            ("pooled", &self.pooled),
            ("reconnecting", &self.reconnecting),
        ] {
            assert!(
                figures.lost.is_empty(),
                "{}: the {writer} writer lost {} acknowledged keys: {:?}",
                self.scenario,
                figures.lost.len(),
                figures.lost.iter().take(20).collect::<Vec<_>>()
            );
        }
        assert!(
            self.writable.most <= 1,
            "{}: two pods took writes as primaries: {:?}",
            self.scenario,
            self.writable.overlaps
        );
    }
}

/// The clients of one fault: the pooled writer, the reconnecting writer and its label watch,
/// and the watcher.
pub struct Clients {
    pooled: PooledWriter,
    reconnecting: Measurement,
    writable: WritableWatch,
}

impl Clients {
    /// Starts them all on the Running cluster of `setup`; None (said) where the host cannot
    /// reach a ClusterIP.
    pub async fn start(setup: &Setup) -> TestResult<Option<Self>> {
        let address = setup.primary_address().await?;
        let password = setup.password().await?;
        let Some(pooled) = PooledWriter::start(&address, password.as_deref()).await? else {
            eprintln!(
                "SKIPPED: the host cannot reach the primary Service's ClusterIP (start the node \
                 with K8S_LOCAL_KUBE_PROXY=1)"
            );
            return Ok(None);
        };
        let writable = WritableWatch::start(setup);
        let reconnecting = Measurement::start(setup, "redis:7.0").await?;
        Ok(Some(Self {
            pooled,
            reconnecting,
            writable,
        }))
    }

    /// Once the cluster has recovered from the fault at `fault`: stops the clients and
    /// measures what they saw against the keys the primary holds.
    pub async fn finish(
        self,
        setup: &Setup,
        scenario: &str,
        fault: f64,
    ) -> TestResult<FenceFigures> {
        let reconnecting = self.reconnecting.finish(setup, scenario, fault).await?;
        let pooled_writes = self.pooled.stop().await?;
        let writable = self.writable.stop().await?;
        let present = keys_on_primary(setup, "p*").await?;
        let pooled = figures(
            scenario,
            &pooled_writes,
            fault,
            &present,
            (0, Duration::ZERO),
        );
        record_writes(setup, "pooled", &pooled_writes, fault)?;
        let figures = FenceFigures {
            scenario: scenario.to_owned(),
            pooled,
            reconnecting,
            writable,
        };
        figures.print();
        Ok(figures)
    }
}

/// A cgroup (v2) of its own for the operator process, so that a rule can match its packets
/// and no one else's: the kubelet's probes (a TCP check of the Redis port) also go from the
/// host to the pod, and cutting them would restart the Redis under test. Sockets belong to
/// the cgroup their process was in when it made them: enter it before the operator dials
/// Redis.
pub struct OperatorCgroup {
    root: std::path::PathBuf,
    name: String,
}

impl OperatorCgroup {
    pub fn enter(pid: u32) -> TestResult<Self> {
        // Hybrid hierarchies mount v2 under `unified`.
        let unified = std::path::Path::new("/sys/fs/cgroup/unified");
        let root = if unified.is_dir() {
            unified.to_path_buf()
        } else {
            std::path::PathBuf::from("/sys/fs/cgroup")
        };
        let name = format!("e2e-operator-{pid}");
        std::fs::create_dir_all(root.join(&name))?;
        std::fs::write(root.join(&name).join("cgroup.procs"), pid.to_string())?;
        Ok(Self { root, name })
    }
}

impl Drop for OperatorCgroup {
    fn drop(&mut self) {
        // Its process may outlive it (dropped first): moved back to the root, so that the
        // cgroup can go.
        let dir = self.root.join(&self.name);
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines() {
            let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(dir);
    }
}

/// An `iptables` rule that drops what the operator (in its [`OperatorCgroup`]) sends to
/// `ip`:6379: clients, the replicas and the kubelet still reach the primary; only the
/// operator is cut off.
pub struct CutOff {
    rule: Vec<String>,
}

impl CutOff {
    pub fn start(ip: &str, operator: &OperatorCgroup) -> TestResult<Self> {
        let rule: Vec<String> = [
            "OUTPUT",
            "-d",
            ip,
            "-p",
            "tcp",
            "--dport",
            "6379",
            "-m",
            "cgroup",
            "--path",
            &operator.name,
            "-j",
            "DROP",
        ]
        .map(str::to_owned)
        .to_vec();
        let status = std::process::Command::new("iptables")
            .arg("-I")
            .args(&rule)
            .status()?;
        if !status.success() {
            return Err("iptables -I failed".into());
        }
        Ok(Self { rule })
    }

    pub fn end(self) {
        drop(self);
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        let _ = std::process::Command::new("iptables")
            .arg("-D")
            .args(&self.rule)
            .status();
    }
}
