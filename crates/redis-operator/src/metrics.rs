//! Prometheus metrics, served as text on `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use rediscluster_crd::{Phase, RedisCluster};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    /// The resource, with its subresource (`redisclusters/status`): what a write was for.
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisLabels {
    pub command: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

mod redis;

pub use redis::{PodSample, RedisFigures};

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_duration: Histogram,
    errors: Family<KindLabels, Counter>,
    clusters: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    probe_interval: FloatGauge,
    requests: Family<RequestLabels, Counter>,
    redis_requests: Family<RedisLabels, Counter>,
    failovers: Family<ReasonLabels, Counter>,
    failover_duration: Histogram,
    process: ProcessMetrics,
    redis: Mutex<RedisFigures>,
}

/// What `process_*` metrics usually say, read from /proc at scrape time.
struct ProcessMetrics {
    resident_memory: Gauge,
    cpu_seconds: FloatGauge,
    open_fds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let process = ProcessMetrics::registered(&mut registry);
        let mut metrics = Metrics {
            registry,
            reconciles: Family::default(),
            // 1 ms to about 16 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            errors: Family::default(),
            clusters: Family::default(),
            leader: Gauge::default(),
            probe_interval: FloatGauge::default(),
            requests: Family::default(),
            redis_requests: Family::default(),
            failovers: Family::default(),
            // 50 ms to about 100 s.
            failover_duration: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            process,
            redis: Mutex::default(),
        };
        metrics.register_operator();
        metrics
    }
}

impl Metrics {
    /// Registers the `redis_operator_*` metrics.
    fn register_operator(&mut self) {
        let operator = self.registry.sub_registry_with_prefix("redis_operator");
        operator.register(
            "reconciles",
            "Reconciles by result",
            self.reconciles.clone(),
        );
        operator.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took",
            Unit::Seconds,
            self.reconcile_duration.clone(),
        );
        operator.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            self.errors.clone(),
        );
        operator.register("clusters", "RedisClusters by phase", self.clusters.clone());
        operator.register(
            "leader",
            "1 while this instance is the leader and reconciles",
            self.leader.clone(),
        );
        operator.register_with_unit(
            "redis_probe_interval",
            "How often each cluster's Redis is probed now: --redis-probe-interval, or longer \
             while probing every cluster that often would take more than 80% of the \
             reconcile loop (--concurrency)",
            Unit::Seconds,
            self.probe_interval.clone(),
        );
        operator.register(
            "kube_requests",
            "Requests this process sent to the Kubernetes API server, by verb and resource",
            self.requests.clone(),
        );
        operator.register(
            "redis_requests",
            "Commands sent to the pods' Redis (info, replicaof, client_pause) by result: ok, error, or \
             backoff (not sent: the pod failed recently)",
            self.redis_requests.clone(),
        );
        operator.register(
            "failovers",
            "Changes of a cluster's primary by reason: primary_deleted, \
             primary_not_answering, primary_restarted_empty (failovers) and switchover \
             (planned handovers for a roll or a scale-down)",
            self.failovers.clone(),
        );
        operator.register_with_unit(
            "failover_duration",
            "From the first sign of a failed primary (its first unanswered probe, or its \
             pod seen deleted) to the new primary labelled",
            Unit::Seconds,
            self.failover_duration.clone(),
        );
    }
}

impl ProcessMetrics {
    /// The `process_*` metrics, registered in `registry`.
    fn registered(registry: &mut Registry) -> Self {
        let process = ProcessMetrics {
            resident_memory: Gauge::default(),
            cpu_seconds: FloatGauge::default(),
            open_fds: Gauge::default(),
        };
        let proc = registry.sub_registry_with_prefix("process");
        proc.register_with_unit(
            "resident_memory",
            "Resident memory size",
            Unit::Bytes,
            process.resident_memory.clone(),
        );
        proc.register_with_unit(
            "cpu",
            "User and system CPU time spent",
            Unit::Seconds,
            process.cpu_seconds.clone(),
        );
        proc.register(
            "open_fds",
            "Open file descriptors",
            process.open_fds.clone(),
        );
        let start: FloatGauge = FloatGauge::default();
        start.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        proc.register_with_unit(
            "start_time",
            "Start time since the Unix epoch",
            Unit::Seconds,
            start,
        );
        process
    }
}

impl Metrics {
    /// Counts one reconcile: its outcome, how long it took, and the error kind if it failed.
    pub fn reconciled(&self, duration: Duration, error_kind: Option<&'static str>) {
        let result = if error_kind.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels { result })
            .inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
        if let Some(kind) = error_kind {
            self.errors.get_or_create(&KindLabels { kind }).inc();
        }
    }

    /// Counts one request to the API server (called for every request the client sends).
    pub fn count_request(&self, method: &http::Method, uri: &http::Uri) {
        let labels = RequestLabels {
            verb: verb(method, uri.query().unwrap_or_default()),
            resource: resource(uri.path()),
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts one command meant for a pod's Redis.
    pub fn count_redis(&self, command: &'static str, result: &'static str) {
        self.redis_requests
            .get_or_create(&RedisLabels { command, result })
            .inc();
    }

    /// Counts one change of primary; `duration` for failovers (not planned handovers).
    pub fn failed_over(&self, reason: &'static str, duration: Option<Duration>) {
        self.failovers.get_or_create(&ReasonLabels { reason }).inc();
        if let Some(duration) = duration {
            self.failover_duration.observe(duration.as_secs_f64());
        }
    }

    /// The probe interval the last reconcile used (`pacing`).
    pub fn set_probe_interval(&self, interval: Duration) {
        self.probe_interval.set(interval.as_secs_f64());
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.redis_figures(|figures| figures.set_leading(leader));
    }

    /// What the probe of the cluster `name` saw of its pods' Redis.
    pub fn observe_redis(&self, namespace: &str, name: &str, pods: Vec<PodSample>) {
        self.redis_figures(|figures| figures.observe(namespace, name, pods));
    }

    /// The primary of the cluster `name` failed over now.
    pub fn cluster_failed_over(&self, namespace: &str, name: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.redis_figures(|figures| figures.failed_over(namespace, name, now));
    }

    fn redis_figures<T>(&self, f: impl FnOnce(&mut RedisFigures) -> T) -> T {
        // A panic elsewhere while holding the lock leaves figures that are still figures.
        let mut figures = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut figures)
    }

    /// The metrics in the Prometheus text format, with the gauges that are read rather than
    /// counted (clusters by phase, process figures) brought up to date first.
    pub fn render(&self, clusters: Option<&Store<RedisCluster>>) -> String {
        if let Some(store) = clusters {
            self.count_phases(store);
        }
        self.process.refresh();
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        let phases: Vec<(String, String, &str)> = clusters
            .into_iter()
            .flat_map(Store::state)
            .filter_map(|cluster| {
                let phase = cluster.status.as_ref()?.phase.as_str();
                Some((cluster.namespace()?, cluster.name_any(), phase))
            })
            .collect();
        let exists = |namespace: &str, name: &str| {
            clusters
                .is_none_or(|store| store.get(&ObjectRef::new(name).within(namespace)).is_some())
        };
        let redis = self.redis_figures(|figures| figures.render(exists, &phases));
        // The Redis families go before the OpenMetrics end marker.
        match text.strip_suffix("# EOF\n") {
            Some(head) => format!("{head}{redis}# EOF\n"),
            None => text + &redis,
        }
    }

    /// Counted from the cache at scrape time, so deleted clusters drop out by themselves.
    fn count_phases(&self, store: &Store<RedisCluster>) {
        let mut counts = [0i64; Phase::ALL.len()];
        for cluster in store.state() {
            let phase = cluster.status.as_ref().map(|status| status.phase);
            if let Some(index) = Phase::ALL.iter().position(|p| Some(*p) == phase) {
                counts[index] += 1;
            }
        }
        for (phase, count) in Phase::ALL.iter().zip(counts) {
            self.clusters
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(count);
        }
    }
}

impl ProcessMetrics {
    fn refresh(&self) {
        if let Some(kib) = read_status_kib("VmRSS:") {
            self.resident_memory.set(kib.saturating_mul(1024));
        }
        // The first field of schedstat is the CPU time in nanoseconds, with no clock tick to know.
        if let Some(ns) = std::fs::read_to_string("/proc/self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            self.cpu_seconds.set(ns as f64 / 1e9);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
    }
}

/// The Kubernetes verb of a request, as far as method and query tell: a GET is a watch when it
/// asks to watch, a list when it pages or selects, else a get.
fn verb(method: &http::Method, query: &str) -> &'static str {
    let has = |param: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(param))
    };
    match *method {
        http::Method::GET if query.split('&').any(|pair| pair == "watch=true") => "watch",
        http::Method::GET if has("limit") || has("labelSelector") || has("fieldSelector") => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PATCH => "patch",
        http::Method::PUT => "update",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// The resource a request path names, with its subresource: `statefulsets`,
/// `redisclusters/status`, `pods/portforward`. Paths are `/api/v1/...` or `/apis/GROUP/VERSION/...`,
/// then `namespaces/NS/` for namespaced resources, then `RESOURCE[/NAME[/SUBRESOURCE]]`.
fn resource(path: &str) -> String {
    let rest = path
        .strip_prefix("/api/v1/")
        .or_else(|| path.strip_prefix("/apis/")?.splitn(3, '/').nth(2))
        .unwrap_or_default();
    let rest = match rest.strip_prefix("namespaces/") {
        // A namespace itself, or a resource in one.
        Some(namespaced) => namespaced.split_once('/').map_or("namespaces", |(_, r)| r),
        None => rest,
    };
    let mut parts = rest.split('/');
    match (parts.next(), parts.nth(1)) {
        (Some(""), _) | (None, _) => "other".to_owned(),
        (Some(kind), Some(subresource)) => format!("{kind}/{subresource}"),
        (Some(kind), None) => kind.to_owned(),
    }
}

/// A `kB` line of /proc/self/status, such as `VmRSS:` or `VmHWM:`.
pub fn read_status_kib(key: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use rediscluster_crd::RedisClusterStatus;

    use crate::fixtures::{cluster, with_status};

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn reconciles_are_counted_by_result_and_error_kind() {
        let metrics = Metrics::default();
        metrics.reconciled(Duration::from_millis(3), None);
        metrics.reconciled(Duration::from_millis(5), None);
        metrics.reconciled(Duration::from_millis(7), Some("ApiError"));
        let text = metrics.render(None);
        assert_eq!(
            line_value(&text, r#"redis_operator_reconciles_total{result="ok"}"#),
            Some(2.0)
        );
        assert_eq!(
            line_value(&text, r#"redis_operator_reconciles_total{result="error"}"#),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"redis_operator_reconcile_errors_total{kind="ApiError"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, "redis_operator_reconcile_duration_seconds_count"),
            Some(3.0)
        );
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }

    #[test]
    fn clusters_are_counted_by_phase_from_the_cache() {
        let (store, mut writer) = reflector::store();
        let mut names = 0;
        for phase in [Phase::Running, Phase::Running, Phase::Failed] {
            let mut object = with_status(
                cluster(3, "redis:7.0"),
                RedisClusterStatus {
                    phase,
                    ..RedisClusterStatus::default()
                },
            );
            names += 1;
            object.metadata.name = Some(format!("c{names}"));
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let metrics = Metrics::default();
        let text = metrics.render(Some(&store));
        assert_eq!(
            line_value(&text, r#"redis_operator_clusters{phase="Running"}"#),
            Some(2.0)
        );
        assert_eq!(
            line_value(&text, r#"redis_operator_clusters{phase="Failed"}"#),
            Some(1.0)
        );
        assert_eq!(
            line_value(&text, r#"redis_operator_clusters{phase="Pending"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn requests_are_counted_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/apis/apps/v1/statefulsets?watch=true&resourceVersion=5",
                "watch",
                "statefulsets",
            ),
            (
                "GET",
                "/apis/apps/v1/statefulsets?labelSelector=a%3Db&limit=500",
                "list",
                "statefulsets",
            ),
            (
                "GET",
                "/apis/cache.example.com/v1alpha1/redisclusters?limit=1",
                "list",
                "redisclusters",
            ),
            ("GET", "/api/v1/namespaces/a/services/b", "get", "services"),
            (
                "POST",
                "/api/v1/namespaces/a/services",
                "create",
                "services",
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/a/statefulsets/b?fieldManager=x&force=true",
                "patch",
                "statefulsets",
            ),
            (
                "PATCH",
                "/apis/cache.example.com/v1alpha1/namespaces/a/redisclusters/b/status",
                "patch",
                "redisclusters/status",
            ),
            (
                "GET",
                "/api/v1/namespaces/a/pods/b/portforward?ports=6379",
                "get",
                "pods/portforward",
            ),
            ("GET", "/api/v1/namespaces/a", "get", "namespaces"),
            ("GET", "/api/v1/nodes", "get", "nodes"),
            ("GET", "/version", "get", "other"),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/b",
                "update",
                "leases",
            ),
        ];
        let metrics = Metrics::default();
        for (method, uri, expected_verb, expected_resource) in cases {
            let method: http::Method = method.parse().unwrap();
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(
                verb(&method, uri.query().unwrap_or_default()),
                expected_verb,
                "{uri}"
            );
            assert_eq!(resource(uri.path()), expected_resource, "{uri}");
            metrics.count_request(&method, &uri);
        }
        let text = metrics.render(None);
        assert_eq!(
            line_value(
                &text,
                r#"redis_operator_kube_requests_total{verb="list",resource="statefulsets"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            line_value(
                &text,
                r#"redis_operator_kube_requests_total{verb="patch",resource="redisclusters/status"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn leader_and_process_gauges() {
        let metrics = Metrics::default();
        assert_eq!(
            line_value(&metrics.render(None), "redis_operator_leader"),
            Some(0.0)
        );
        metrics.set_leader(true);
        let text = metrics.render(None);
        assert_eq!(line_value(&text, "redis_operator_leader"), Some(1.0));
        assert!(line_value(&text, "process_resident_memory_bytes").is_some_and(|v| v > 1e6));
        assert!(line_value(&text, "process_open_fds").is_some_and(|v| v >= 3.0));
        assert!(line_value(&text, "process_start_time_seconds").is_some_and(|v| v > 1.7e9));
    }
}
