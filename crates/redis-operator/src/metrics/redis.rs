//! What the operator's probe learns of each pod's Redis, exported on `/metrics` with the
//! labels `namespace`, `cluster` and `pod`: no exporter sidecar, and no round trip beyond the
//! probe's own. Each look at a cluster replaces its pods' figures, so a deleted pod's series go
//! with its next look, and a deleted cluster's at the next scrape (`render` keeps only clusters
//! in the cache).

use std::collections::HashMap;
use std::fmt::Write;

/// What one pod's Redis said at the last look.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSample {
    pub pod: String,
    pub up: bool,
    pub primary: bool,
    pub offset: i64,
    /// Of a replica, with its primary answering: bytes behind the primary's offset.
    pub lag_bytes: Option<i64>,
    /// Of a replica its primary lists: seconds since it last acknowledged.
    pub lag_seconds: Option<u64>,
    /// Of a replica: its link to the primary is up.
    pub link_up: Option<bool>,
    /// Of a linked replica: seconds since it last heard from its primary.
    pub last_io_seconds: Option<u64>,
    pub connected_clients: u64,
    pub used_memory: u64,
    pub maxmemory: u64,
    pub keys: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
}

/// A cluster's figures: its pods' at the last look, and when its primary last failed over.
#[derive(Clone, Debug, Default)]
struct ClusterSample {
    pods: Vec<PodSample>,
    last_failover: Option<f64>,
}

/// The figures of every cluster this operator looks at, by (namespace, name), while it leads.
pub struct RedisFigures {
    clusters: HashMap<(String, String), ClusterSample>,
    /// Without leader election the one instance leads.
    leading: bool,
}

impl Default for RedisFigures {
    fn default() -> Self {
        RedisFigures {
            clusters: HashMap::new(),
            leading: true,
        }
    }
}

/// (name, type, help, value of a sample), in the order they are written.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PodSample) -> Option<f64>,
);

const FAMILIES: [Family; 13] = [
    (
        "redis_up",
        "gauge",
        "1 if the pod's Redis answered the operator's last probe",
        |s| Some(f64::from(u8::from(s.up))),
    ),
    (
        "redis_primary",
        "gauge",
        "1 for the primary, 0 for a replica (as Redis says)",
        |s| s.up.then_some(f64::from(u8::from(s.primary))),
    ),
    (
        "redis_replication_offset_bytes",
        "gauge",
        "The replication offset (master_repl_offset)",
        |s| s.up.then_some(s.offset as f64),
    ),
    (
        "redis_replica_lag_bytes",
        "gauge",
        "Of a replica: bytes behind its primary's offset",
        |s| s.lag_bytes.map(|b| b as f64),
    ),
    (
        "redis_replica_lag_seconds",
        "gauge",
        "Of a replica: seconds since it last acknowledged its primary's stream (the primary's lag)",
        |s| s.lag_seconds.map(|l| l as f64),
    ),
    (
        "redis_replica_link_up",
        "gauge",
        "Of a replica: 1 while its link to the primary is up",
        |s| s.link_up.map(|up| f64::from(u8::from(up))),
    ),
    (
        "redis_replica_last_io_seconds",
        "gauge",
        "Of a linked replica: seconds since it last heard from its primary",
        |s| s.last_io_seconds.map(|l| l as f64),
    ),
    (
        "redis_connected_clients",
        "gauge",
        "Client connections",
        |s| s.up.then_some(s.connected_clients as f64),
    ),
    (
        "redis_memory_used_bytes",
        "gauge",
        "Memory Redis allocated (used_memory)",
        |s| s.up.then_some(s.used_memory as f64),
    ),
    (
        "redis_memory_max_bytes",
        "gauge",
        "maxmemory; 0 without a memory limit",
        |s| s.up.then_some(s.maxmemory as f64),
    ),
    ("redis_keys", "gauge", "Keys over all databases", |s| {
        s.up.then_some(s.keys as f64)
    }),
    (
        "redis_evicted_keys",
        "counter",
        "Keys evicted for maxmemory since Redis started",
        |s| s.up.then_some(s.evicted_keys as f64),
    ),
    (
        "redis_expired_keys",
        "counter",
        "Keys expired since Redis started",
        |s| s.up.then_some(s.expired_keys as f64),
    ),
];

impl RedisFigures {
    /// The pods of the cluster `name` in `namespace`, as this look saw them.
    pub fn observe(&mut self, namespace: &str, name: &str, pods: Vec<PodSample>) {
        self.clusters
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .pods = pods;
    }

    /// The cluster's primary failed over at `unix_seconds`.
    pub fn failed_over(&mut self, namespace: &str, name: &str, unix_seconds: f64) {
        self.clusters
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .last_failover = Some(unix_seconds);
    }

    /// Whether this instance leads: one that does not exports nothing here (the leader
    /// does), and forgets what it had.
    pub fn set_leading(&mut self, leading: bool) {
        self.leading = leading;
        if !leading {
            self.clusters.clear();
        }
    }

    /// Forgets the clusters `exists` denies, then writes the rest in the OpenMetrics text
    /// format (without the final `# EOF`), with the phase of each cluster in `phases`
    /// (namespace, name, phase).
    pub fn render(
        &mut self,
        exists: impl Fn(&str, &str) -> bool,
        phases: &[(String, String, &str)],
    ) -> String {
        if !self.leading {
            return String::new();
        }
        self.clusters
            .retain(|(namespace, name), _| exists(namespace, name));
        let mut clusters: Vec<_> = self.clusters.iter().collect();
        clusters.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::new();
        for (family, type_, help, value) in FAMILIES {
            let _ = writeln!(text, "# HELP {family} {help}.\n# TYPE {family} {type_}");
            let suffix = if type_ == "counter" { "_total" } else { "" };
            for ((namespace, cluster), sample) in &clusters {
                for pod in &sample.pods {
                    if let Some(value) = value(pod) {
                        let _ = writeln!(
                            text,
                            "{family}{suffix}{{namespace=\"{namespace}\",cluster=\"{cluster}\",pod=\"{}\"}} {value}",
                            pod.pod
                        );
                    }
                }
            }
        }
        let family = "redis_cluster_status_phase";
        let _ = writeln!(
            text,
            "# HELP {family} 1 for the cluster's phase (Pending, Running, Scaling, Failed).\n\
             # TYPE {family} gauge"
        );
        for (namespace, cluster, phase) in phases {
            let _ = writeln!(
                text,
                "{family}{{namespace=\"{namespace}\",cluster=\"{cluster}\",phase=\"{phase}\"}} 1"
            );
        }
        let family = "redis_cluster_last_failover_timestamp_seconds";
        let _ = writeln!(
            text,
            "# HELP {family} When the cluster's primary last failed over (not planned handovers), \
             as this operator saw it since it started leading; time() minus it is the seconds \
             since.\n# TYPE {family} gauge\n# UNIT {family} seconds"
        );
        for ((namespace, cluster), sample) in &clusters {
            if let Some(at) = sample.last_failover {
                let _ = writeln!(
                    text,
                    "{family}{{namespace=\"{namespace}\",cluster=\"{cluster}\"}} {at}"
                );
            }
        }
        text
    }
}
