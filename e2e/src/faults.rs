//! What a fault costs the clients of a RedisCluster, measured from outside the operator: a
//! writer pod sets one new key after another through `<name>-primary` and logs every reply with
//! its times; a watch on the pods records how many carry the primary label at each moment; the
//! keys the writer saw acknowledged are looked up on the primary afterwards.
//!
//! Times are the machine's `/proc/uptime`, read in the writer pod and in the test alike: pods
//! and the test share one kernel here and on kind, so the clocks agree to 10 ms.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::{NAME, ROLE_LABEL, Setup, TestResult, replication_info, wait_for};

/// The machine's clock, in seconds since boot (what the writer pod reads too).
pub fn clock() -> TestResult<f64> {
    let uptime = std::fs::read_to_string("/proc/uptime")?;
    Ok(uptime
        .split_whitespace()
        .next()
        .ok_or("empty /proc/uptime")?
        .parse()?)
}

/// One `SET` the writer sent, and what came back.
#[derive(Clone, Debug)]
pub struct Write {
    pub key: String,
    pub sent: f64,
    pub answered: f64,
    pub acknowledged: bool,
    pub reply: String,
}

const WRITER: &str = "writer";

/// A pod that writes `w<n>` = its send time, n = 1, 2, ..., through the primary Service, each
/// with its own connection and a 1 s timeout, as a client that reconnects would, about every
/// 20 ms (a process per write: faster would load the machine it measures).
pub struct Writer {
    namespace: String,
}

impl Writer {
    /// Starts the writer with the cluster's `image` (it brings redis-cli) and waits until its
    /// writes are acknowledged.
    pub async fn start(setup: &Setup, image: &str) -> TestResult<Self> {
        let address = setup.primary_address().await?;
        let script = format!(
            "{}i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); read s _ < /proc/uptime; \
             r=$(timeout 1 redis-cli -h {address} set w$i $s 2>&1); \
             read e _ < /proc/uptime; echo \"w$i $s $e $r\"; sleep 0.01; done",
            crate::cli_login()
        );
        let (volume, mount) = crate::password_volume(NAME);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": WRITER },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 999,
                    "seccompProfile": { "type": "RuntimeDefault" }
                },
                "containers": [{
                    "name": WRITER, "image": image, "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [mount],
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "capabilities": { "drop": ["ALL"] }
                    }
                }],
                "volumes": [volume]
            }
        }))?;
        setup.pods.create(&PostParams::default(), &pod).await?;
        let writer = Self {
            namespace: setup.namespace.name.clone(),
        };
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let acknowledged = match writer.writes().await {
                Ok(writes) => writes.iter().filter(|w| w.acknowledged).count(),
                Err(_) => 0,
            };
            if acknowledged >= 20 {
                return Ok(writer);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(
                    "the writer got no acknowledged write through the primary Service".into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every write so far, in order.
    pub async fn writes(&self) -> TestResult<Vec<Write>> {
        let log = crate::kubectl(["logs", "-n", &self.namespace, WRITER]).await?;
        Ok(log.lines().filter_map(parse_write).collect())
    }

    /// Stops writing and returns every write.
    pub async fn stop(self) -> TestResult<Vec<Write>> {
        let args = [
            "exec",
            "-n",
            &self.namespace,
            WRITER,
            "--",
            "touch",
            "/tmp/stop",
        ];
        crate::kubectl(args).await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        self.writes().await
    }
}

/// "w12 123.45 123.47 OK" (the reply may be empty, a timeout, or several words).
fn parse_write(line: &str) -> Option<Write> {
    let mut fields = line.splitn(4, ' ');
    let key = fields.next()?.to_owned();
    let sent = fields.next()?.parse().ok()?;
    let answered = fields.next()?.parse().ok()?;
    let reply = fields.next().unwrap_or_default().trim().to_owned();
    Some(Write {
        key,
        sent,
        answered,
        acknowledged: reply == "OK",
        reply,
    })
}

/// Watches the cluster's pods and records the most that carried the primary label at once
/// (terminating pods included: a label is a claim until it is gone), and for how long two or
/// more did.
pub struct LabelWatch {
    record: Arc<Mutex<Labelled>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Labelled {
    most: usize,
    overlap: Duration,
    since: Option<std::time::Instant>,
}

impl LabelWatch {
    pub fn start(pods: &Api<Pod>) -> Self {
        let record = Arc::new(Mutex::new(Labelled::default()));
        let config =
            watcher::Config::default().labels(&format!("app.kubernetes.io/instance={NAME}"));
        let stream = watcher(pods.clone(), config);
        let shared = record.clone();
        let task = tokio::spawn(async move {
            let mut primaries: BTreeMap<String, bool> = BTreeMap::new();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                        let primary =
                            pod.labels().get(ROLE_LABEL).map(String::as_str) == Some("primary");
                        primaries.insert(pod.name_any(), primary);
                    }
                    watcher::Event::Delete(pod) => {
                        primaries.remove(&pod.name_any());
                    }
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                let now = primaries.values().filter(|p| **p).count();
                if let Ok(mut record) = shared.lock() {
                    record.most = record.most.max(now);
                    match (now >= 2, record.since) {
                        (true, None) => record.since = Some(std::time::Instant::now()),
                        (false, Some(since)) => {
                            record.overlap += since.elapsed();
                            record.since = None;
                        }
                        _ => {}
                    }
                }
            }
        });
        Self { record, task }
    }

    /// The most pods labelled primary at one moment since the start, and for how long in all
    /// two or more were.
    pub fn stop(self) -> (usize, Duration) {
        self.task.abort();
        self.record.lock().map_or((usize::MAX, Duration::MAX), |r| {
            let open = r.since.map_or(Duration::ZERO, |s| s.elapsed());
            (r.most, r.overlap + open)
        })
    }
}

/// What one fault cost, as the writer saw it.
#[derive(Debug, Serialize)]
pub struct Figures {
    pub scenario: String,
    /// The longest time between two acknowledged writes after the fault began.
    pub longest_gap: f64,
    /// From the fault to the acknowledgement that ended that gap.
    pub back_after: f64,
    /// From the first write after the fault that failed to the last one that did (writes may
    /// fail and succeed in turn while two routes coexist).
    pub failing_for: f64,
    pub failed_writes: usize,
    pub acknowledged: usize,
    /// Acknowledged before `fault - 1 s` and missing afterwards: must be none.
    pub lost_older_than_1s: Vec<String>,
    /// Acknowledged at any time and missing afterwards.
    pub lost: Vec<String>,
    /// How long before the fault the earliest lost write was acknowledged (0 when none was).
    pub loss_window: f64,
    pub most_labelled_primaries: usize,
    /// Seconds during which two pods carried the primary label at once.
    pub labels_overlapped: f64,
}

impl Figures {
    pub fn print(&self) {
        println!(
            "figures: {}: writes back {:.2}s after the fault (longest gap between \
             acknowledged writes {:.2}s; writes failing, on and off, for {:.2}s), {} writes \
             failed, {} acknowledged, lost: {} \
             acknowledged more than 1s before the fault, {} in all (the oldest {:.3}s before \
             it); at most {} pod(s) labelled \
             primary at once ({:.2}s with two)",
            self.scenario,
            self.back_after,
            self.longest_gap,
            self.failing_for,
            self.failed_writes,
            self.acknowledged,
            self.lost_older_than_1s.len(),
            self.lost.len(),
            self.loss_window,
            self.most_labelled_primaries,
            self.labels_overlapped
        );
    }

    /// The header of [`Figures::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<56} {:>8} {:>8} {:>8} {:>7} {:>12} {:>9}",
            "fault", "back (s)", "gap (s)", "failing", "failed", "lost >1s/all", "labelled"
        )
    }

    /// The figures as one row of a table.
    pub fn table_row(&self) -> String {
        format!(
            "{:<56} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8}/{:<3} {:>9}",
            self.scenario,
            self.back_after,
            self.longest_gap,
            self.failing_for,
            self.failed_writes,
            self.lost_older_than_1s.len(),
            self.lost.len(),
            self.most_labelled_primaries
        )
    }

    /// What a failover guarantees whatever the machine's speed: no acknowledged key older than
    /// 1 s lost, never two pods labelled primary (the old one may still take writes).
    pub fn assert_no_loss_and_one_primary(&self) {
        assert!(
            self.lost_older_than_1s.is_empty(),
            "{}: acknowledged keys lost: {:?}",
            self.scenario,
            self.lost_older_than_1s
        );
        assert!(
            self.most_labelled_primaries <= 1,
            "{}: {} pods were labelled primary at once",
            self.scenario,
            self.most_labelled_primaries
        );
    }

    /// What a handover guarantees: nothing acknowledged is lost (an old primary that took
    /// writes beside the new one would lose them when it resyncs from it), and two pods carry
    /// the label only between the new primary's label and the old one's removal, when the old
    /// Redis already refuses writes.
    pub fn assert_handed_over_without_loss(&self) {
        assert!(
            self.lost.is_empty(),
            "{}: acknowledged keys lost: {:?}",
            self.scenario,
            self.lost
        );
        assert!(
            self.most_labelled_primaries <= 2 && self.labels_overlapped < 1.0,
            "{}: {} pods labelled primary at once, for {:.2}s",
            self.scenario,
            self.most_labelled_primaries,
            self.labels_overlapped
        );
    }
}

/// Computes the figures from the writes, the fault's time and the keys the primary holds.
pub fn figures(
    scenario: &str,
    writes: &[Write],
    fault: f64,
    present: &BTreeSet<String>,
    (most_labelled_primaries, labels_overlapped): (usize, Duration),
) -> Figures {
    let acknowledged: Vec<&Write> = writes.iter().filter(|w| w.acknowledged).collect();
    let mut longest_gap = 0.0;
    let mut back_after = 0.0;
    let mut previous = acknowledged
        .iter()
        .rev()
        .find(|w| w.answered <= fault)
        .map_or(fault, |w| w.answered);
    for write in acknowledged.iter().filter(|w| w.answered > fault) {
        let gap = write.answered - previous.max(fault);
        if gap > longest_gap {
            longest_gap = gap;
            back_after = write.answered - fault;
        }
        previous = write.answered;
    }
    let failed: Vec<&Write> = writes
        .iter()
        .filter(|w| !w.acknowledged && w.answered > fault)
        .collect();
    let failing_for = match (failed.first(), failed.last()) {
        (Some(first), Some(last)) => last.answered - first.sent.max(fault),
        _ => 0.0,
    };
    let lost: Vec<&Write> = acknowledged
        .iter()
        .copied()
        .filter(|w| !present.contains(&w.key))
        .collect();
    Figures {
        scenario: scenario.to_owned(),
        longest_gap,
        back_after,
        failing_for,
        failed_writes: writes
            .iter()
            .filter(|w| !w.acknowledged && w.sent >= fault - 1.0)
            .count(),
        acknowledged: acknowledged.len(),
        lost_older_than_1s: lost
            .iter()
            .filter(|w| w.answered < fault - 1.0)
            .map(|w| w.key.clone())
            .collect(),
        lost: lost.iter().map(|w| w.key.clone()).collect(),
        loss_window: lost.iter().map(|w| fault - w.answered).fold(0.0, f64::max),
        most_labelled_primaries,
        labels_overlapped: labels_overlapped.as_secs_f64(),
    }
}

/// A writer and a label watch around one fault.
pub struct Measurement {
    writer: Writer,
    labels: LabelWatch,
}

impl Measurement {
    /// Starts writing and watching, and lets a second of writes through before the fault.
    pub async fn start(setup: &Setup, image: &str) -> TestResult<Self> {
        let writer = Writer::start(setup, image).await?;
        let labels = LabelWatch::start(&setup.pods);
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Self { writer, labels })
    }

    /// Lets the writer go on for 2 s once the cluster recovered, stops it, reads the writer's
    /// keys on the primary the cluster reports, and measures `scenario` from its `fault` time.
    pub async fn finish(self, setup: &Setup, scenario: &str, fault: f64) -> TestResult<Figures> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let writes = self.writer.stop().await?;
        let labelled = self.labels.stop();
        let present = keys_on_primary(setup, "w*").await?;
        let figures = figures(scenario, &writes, fault, &present, labelled);
        figures.print();
        record_writes(setup, "writes", &writes, fault)?;
        setup
            .pods
            .delete(WRITER, &DeleteParams::default().grace_period(0))
            .await?;
        Ok(figures)
    }
}

/// Writes every write with its times to `$TMPDIR/<namespace>.<name>.log`, for a look at what
/// the figures sum up.
pub fn record_writes(setup: &Setup, name: &str, writes: &[Write], fault: f64) -> TestResult {
    let record: String = writes
        .iter()
        .map(|w| format!("{} {:.3} {:.3} {}\n", w.key, w.sent, w.answered, w.reply))
        .collect();
    let path = std::env::temp_dir().join(format!("{}.{name}.log", setup.namespace.name));
    std::fs::write(&path, format!("fault at {fault:.3}\n{record}"))?;
    Ok(())
}

/// The keys matching `pattern` on the primary the cluster's status names.
pub async fn keys_on_primary(setup: &Setup, pattern: &str) -> TestResult<BTreeSet<String>> {
    let primary = setup
        .clusters
        .get_status(NAME)
        .await?
        .status
        .and_then(|s| s.primary)
        .ok_or("no primary in the status")?;
    let keys = crate::redis_cli(
        &setup.namespace.name,
        &primary,
        &["--scan", "--pattern", pattern],
    )
    .await?;
    Ok(keys.lines().map(str::to_owned).collect())
}

/// The host PID of the Redis server in `pod` (found by the pod's uid in its cgroup), where the
/// test shares a kernel with the node and may signal its processes; None elsewhere.
pub fn redis_pid(pod: &Pod) -> Option<i32> {
    let uid = pod.uid()?;
    let underscored = uid.replace('-', "_");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
            (comm.trim() == "redis-server"
                && (cgroup.contains(&uid) || cgroup.contains(&underscored)))
            .then_some(pid)
        })
}

/// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to a host process.
pub async fn signal(pid: i32, signal: &str) -> TestResult {
    let args = [signal.to_owned(), pid.to_string()];
    let status =
        tokio::task::spawn_blocking(move || std::process::Command::new("kill").args(args).status())
            .await??;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {signal} {pid} failed").into())
    }
}

/// Waits until the status names a primary other than `old`.
pub async fn wait_primary_other_than(setup: &Setup, old: &str) -> TestResult<String> {
    let old = old.to_owned();
    let cluster = wait_for(
        &setup.clusters,
        NAME,
        &format!("a primary other than {old}"),
        move |c: Option<&rediscluster_crd::RedisCluster>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.primary.as_deref())
                .is_some_and(|p| p != old)
        },
    )
    .await?
    .ok_or("the RedisCluster vanished")?;
    Ok(cluster.status.and_then(|s| s.primary).ok_or("no primary")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(n: u32, sent: f64, answered: f64, reply: &str) -> Write {
        Write {
            key: format!("w{n}"),
            sent,
            answered,
            acknowledged: reply == "OK",
            reply: reply.to_owned(),
        }
    }

    #[test]
    fn writer_lines_parse_with_any_reply() {
        let w = parse_write("w12 100.50 100.52 OK").unwrap();
        assert_eq!((w.key.as_str(), w.sent, w.answered), ("w12", 100.5, 100.52));
        assert!(w.acknowledged);
        let w = parse_write("w13 100.52 101.53 ").unwrap();
        assert!(!w.acknowledged && w.reply.is_empty());
        let w = parse_write("w14 101.53 101.54 READONLY You can't write").unwrap();
        assert!(!w.acknowledged && w.reply.starts_with("READONLY"));
        assert!(parse_write("garbage").is_none());
    }

    #[test]
    fn figures_measure_the_gap_and_the_keys_lost() {
        let writes = [
            write(1, 98.0, 98.01, "OK"),
            write(2, 99.6, 99.61, "OK"),
            write(3, 100.0, 101.0, ""),
            write(4, 101.0, 101.5, "READONLY"),
            write(5, 101.5, 102.3, "OK"),
            write(6, 102.3, 102.4, "OK"),
        ];
        let present: BTreeSet<String> = ["w1", "w5", "w6"].map(String::from).into();
        let f = figures("t", &writes, 100.0, &present, (1, Duration::ZERO));
        assert!((f.longest_gap - 2.3).abs() < 1e-9, "{f:?}");
        assert!((f.back_after - 2.3).abs() < 1e-9, "{f:?}");
        assert_eq!(f.failed_writes, 2);
        assert!((f.failing_for - 1.5).abs() < 1e-9, "{f:?}");
        assert_eq!(f.acknowledged, 4);
        assert!(
            f.lost_older_than_1s.is_empty(),
            "w2 is within the last second"
        );
        assert_eq!(f.lost, ["w2"]);
        assert!((f.loss_window - 0.39).abs() < 1e-9, "{f:?}");
        let present: BTreeSet<String> = ["w5", "w6"].map(String::from).into();
        let f = figures("t", &writes, 100.0, &present, (1, Duration::ZERO));
        assert_eq!(f.lost_older_than_1s, ["w1"]);
    }
}

/// The faults the live suite and the bench inflict on a Running 3-pod cluster of `redis:7.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The primary's pod is deleted.
    PodDeleted,
    /// The primary's Redis process is killed (SIGKILL): its container restarts.
    RedisKilled,
    /// The primary's Redis is stopped (SIGSTOP) past the failover delay, then resumed.
    RedisStopped,
    /// The image changes (redis:7.0 to 7.2): a roll, with a planned handover.
    ImageRolled,
    /// Scaled from 3 to 1 while pod 1 is primary: a planned handover to pod 0 first.
    ScaledTo1,
    /// The primary lost with its data, as with its node: its Redis killed and its pod
    /// force-deleted at once, so only the replicas' copies remain. What asynchronous
    /// replication can lose.
    PrimaryLost,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::PodDeleted,
        Fault::RedisKilled,
        Fault::RedisStopped,
        Fault::ImageRolled,
        Fault::ScaledTo1,
        Fault::PrimaryLost,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Fault::PodDeleted => "primary pod deleted",
            Fault::RedisKilled => "primary Redis killed (container restart)",
            Fault::RedisStopped => "primary Redis stopped (SIGSTOP)",
            Fault::ImageRolled => "image roll (planned handover)",
            Fault::ScaledTo1 => "scale 3 to 1 (planned handover)",
            Fault::PrimaryLost => "primary lost with its data (killed, pod force-deleted)",
        }
    }

    /// Needs the node's processes on this machine, and root, to signal Redis.
    pub fn signals(self) -> bool {
        matches!(
            self,
            Fault::RedisKilled | Fault::RedisStopped | Fault::PrimaryLost
        )
    }
}

/// What a fault did: its figures, and the primary before and after.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub figures: Figures,
    pub old_primary: String,
    pub new_primary: String,
    /// For a stopped primary: seconds from the stop to the new primary labelled, and from the
    /// resume to the old primary following the new one.
    pub replaced_after: Option<f64>,
    pub rejoined_after: Option<f64>,
}

/// Inflicts `fault` on the Running 3-pod cluster of `setup` while a writer measures, waits for
/// the operator to recover (a transition it makes: a new primary, a restarted Redis promoted
/// again, the new spec rolled out), and returns the figures. None where the fault cannot be
/// made here (signals need the node's processes on this machine).
pub async fn inflict(setup: &Setup, fault: Fault) -> TestResult<Option<Outcome>> {
    let zero = format!("{NAME}-0");
    if fault == Fault::ScaledTo1 && setup.assert_one_primary_and_linked_replicas().await? == zero {
        // Make the primary a pod that the scale-down removes.
        setup.pods.delete(&zero, &DeleteParams::default()).await?;
        wait_primary_other_than(setup, &zero).await?;
        setup.wait_running(3).await?;
    }
    let old = setup.assert_one_primary_and_linked_replicas().await?;
    let pod = setup.pods.get(&old).await?;
    // Seen is not enough: signalling another user's process takes root (kind from a user shell).
    let pid = redis_pid(&pod).unwrap_or_default();
    if fault.signals() && (pid == 0 || signal(pid, "-0").await.is_err()) {
        return Ok(None);
    }
    let restarts_before = restarts(Some(&pod));
    let measurement = Measurement::start(setup, "redis:7.0").await?;
    let fault_at = clock()?;
    let (replaced_after, rejoined_after) =
        make(setup, fault, &old, (pid, restarts_before), fault_at).await?;
    let figures = measurement
        .finish(setup, fault.describe(), fault_at)
        .await?;
    let new = setup.assert_one_primary_and_linked_replicas().await?;
    Ok(Some(Outcome {
        figures,
        old_primary: old,
        new_primary: new,
        replaced_after,
        rejoined_after,
    }))
}

/// Makes `fault` happen at `fault_at` to the primary `old` (its Redis is the process `pid`,
/// its container restarted `restarts_before` times) and waits for the transition the operator
/// makes in answer; returns, for a stopped Redis, when it was replaced and when it rejoined.
async fn make(
    setup: &Setup,
    fault: Fault,
    old: &str,
    (pid, restarts_before): (i32, i32),
    fault_at: f64,
) -> TestResult<(Option<f64>, Option<f64>)> {
    match fault {
        Fault::PodDeleted => {
            setup.pods.delete(old, &DeleteParams::default()).await?;
            wait_primary_other_than(setup, old).await?;
            setup.wait_running(3).await?;
        }
        Fault::RedisKilled => {
            signal(pid, "-KILL").await?;
            wait_for(&setup.pods, old, "its Redis container restarted", |p| {
                restarts(p) > restarts_before
            })
            .await?;
            // It comes back unassigned: Running again means the operator gave it (or a
            // replica) the primary role after the kill.
            setup.wait_running(3).await?;
        }
        Fault::RedisStopped => return stop_and_resume(setup, old, pid, fault_at).await,
        Fault::ImageRolled => {
            setup
                .patch_spec(serde_json::json!({ "image": "redis:7.2" }))
                .await?;
            setup.wait_running(3).await?;
        }
        Fault::ScaledTo1 => {
            setup
                .patch_spec(serde_json::json!({ "replicas": 1 }))
                .await?;
            setup.wait_running(1).await?;
        }
        Fault::PrimaryLost => {
            signal(pid, "-KILL").await?;
            setup
                .pods
                .delete(old, &DeleteParams::default().grace_period(0))
                .await?;
            wait_primary_other_than(setup, old).await?;
            setup.wait_running(3).await?;
        }
    }
    Ok((None, None))
}

/// Stops the primary's Redis until a replica has replaced it, then resumes it; returns how
/// long after `fault_at` it was replaced, and how long after it resumed it followed the new
/// primary.
async fn stop_and_resume(
    setup: &Setup,
    old: &str,
    pid: i32,
    fault_at: f64,
) -> TestResult<(Option<f64>, Option<f64>)> {
    signal(pid, "-STOP").await?;
    let replaced = wait_primary_other_than(setup, old).await;
    let replaced_after = clock()? - fault_at;
    // Resumed whatever happened, so that the namespace can go. The operator stops a Redis
    // that hangs before a replica takes over: the process is gone, and its pod, recreated,
    // rejoins as a replica.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = signal(pid, "-CONT").await;
    let woke = clock()?;
    let new = replaced?;
    wait_follows(setup, old, &new).await?;
    let rejoined_after = clock()? - woke;
    setup.wait_running(3).await?;
    Ok((Some(replaced_after), Some(rejoined_after)))
}

/// Restarts of a pod's first container.
fn restarts(pod: Option<&Pod>) -> i32 {
    pod.and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(0, |c| c.restart_count)
}

/// Waits until the Redis of `pod` is a replica of `primary`'s IP.
async fn wait_follows(setup: &Setup, pod: &str, primary: &str) -> TestResult {
    let primary_ip = setup
        .pods
        .get(primary)
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .ok_or("no IP")?;
    let deadline = tokio::time::Instant::now() + crate::WAIT;
    loop {
        // The pod may be being recreated (the operator stopped its Redis): asked again.
        let info = replication_info(&setup.namespace.name, pod)
            .await
            .unwrap_or_default();
        if info.get("role").map(String::as_str) == Some("slave")
            && info.get("master_host") == Some(&primary_ip)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{pod} did not follow {primary}: {info:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
