//! What the operator's probe learns of each pod's Redis, exported on `/metrics` with the
//! labels `namespace`, `cluster` and `pod`: no exporter sidecar, and no round trip beyond the
//! probe's own. Each look at a cluster replaces its pods' figures, so a deleted pod's series go
//! with its next look, and a deleted cluster's at the next scrape (`render` keeps only clusters
//! in the cache).

use std::collections::HashMap;
use std::fmt::Write;

use crate::redis::info::RedisRole;
use crate::topology::{Member, Seen};

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

/// The figures of a cluster's pods, from what the probe saw of each member. A replica's lag
/// is what its primary says of it (seconds since its last acknowledgement; bytes behind, from
/// its own offset if it answered, else from the offset it last acknowledged), so that a
/// replica that stopped answering still shows how far behind it falls.
pub fn samples(members: &[Member]) -> Vec<PodSample> {
    let primary = members
        .iter()
        .filter_map(Member::replication)
        .find(|r| r.is_primary());
    let mut samples: Vec<PodSample> = members
        .iter()
        .filter(|m| !matches!(m.seen, Seen::NoAddress | Seen::NeverStarted(_)))
        .map(|member| {
            let link = primary
                .zip(member.address.as_ref())
                .and_then(|(p, ip)| p.stats.replicas.iter().find(|link| link.ip == *ip));
            let behind = |offset: i64| primary.map(|p| (p.offset - offset).max(0));
            let Some(redis) = member.replication() else {
                return PodSample {
                    pod: member.name.clone(),
                    lag_bytes: link.and_then(|link| behind(link.offset)),
                    lag_seconds: link.map(|link| link.lag_seconds),
                    ..PodSample::default()
                };
            };
            let replica = match &redis.role {
                RedisRole::Primary => None,
                RedisRole::Replica { link_up, .. } => Some(*link_up),
            };
            PodSample {
                pod: member.name.clone(),
                up: true,
                primary: replica.is_none(),
                offset: redis.offset,
                lag_bytes: replica.and_then(|_| behind(redis.offset)),
                lag_seconds: replica.and(link).map(|link| link.lag_seconds),
                link_up: replica,
                last_io_seconds: replica.and(redis.heard_from_primary),
                connected_clients: redis.stats.connected_clients,
                used_memory: redis.stats.used_memory,
                maxmemory: redis.stats.maxmemory,
                keys: redis.keys,
                evicted_keys: redis.stats.evicted_keys,
                expired_keys: redis.stats.expired_keys,
            }
        })
        .collect();
    samples.sort_by(|a, b| a.pod.cmp(&b.pod));
    samples
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::redis::info::{ReplicaLink, Replication, Stats};

    fn member(ordinal: i32, seen: Seen) -> Member {
        Member {
            name: format!("r-{ordinal}"),
            ordinal,
            address: Some(format!("10.0.0.{ordinal}")),
            ready: true,
            terminating: false,
            label: None,
            config: None,
            settling: false,
            stopped: false,
            stopping: None,
            live: Default::default(),
            seen,
        }
    }

    fn answered(role: RedisRole, offset: i64, stats: Stats) -> Seen {
        Seen::Answered(Replication {
            role,
            offset,
            keys: 7,
            handing_over: false,
            heard_from_primary: Some(1),
            settings: None,
            passwords: Vec::new(),
            run_id: "run".to_owned(),
            stats,
        })
    }

    #[test]
    fn a_replica_reports_its_lag_behind_the_primary_even_when_it_stops_answering() {
        let primary = Stats {
            connected_clients: 5,
            used_memory: 1000,
            replicas: vec![
                ReplicaLink {
                    ip: "10.0.0.1".to_owned(),
                    offset: 90,
                    lag_seconds: 2,
                },
                ReplicaLink {
                    ip: "10.0.0.2".to_owned(),
                    offset: 40,
                    lag_seconds: 9,
                },
            ],
            ..Stats::default()
        };
        let linked = RedisRole::Replica {
            host: "10.0.0.0".to_owned(),
            port: 6379,
            link_up: true,
            syncing: false,
        };
        let members = [
            member(
                2,
                Seen::Silent {
                    why: "timeout".to_owned(),
                    for_: Duration::from_secs(3),
                },
            ),
            member(0, answered(RedisRole::Primary, 100, primary)),
            member(1, answered(linked, 90, Stats::default())),
            member(3, Seen::NoAddress),
        ];
        let samples = samples(&members);
        let pods: Vec<&str> = samples.iter().map(|s| s.pod.as_str()).collect();
        assert_eq!(
            pods,
            ["r-0", "r-1", "r-2"],
            "no series for a pod without an address"
        );
        let (primary, replica, silent) = (&samples[0], &samples[1], &samples[2]);
        assert!(primary.up && primary.primary && primary.lag_bytes.is_none());
        assert_eq!(primary.connected_clients, 5);
        assert!(replica.up && !replica.primary);
        assert_eq!(replica.lag_bytes, Some(10));
        assert_eq!(replica.lag_seconds, Some(2));
        assert_eq!(
            (replica.link_up, replica.last_io_seconds),
            (Some(true), Some(1))
        );
        assert!(!silent.up);
        assert_eq!(
            (silent.lag_seconds, silent.lag_bytes),
            (Some(9), Some(60)),
            "a silent replica's lag, as its primary sees it"
        );

        let mut figures = RedisFigures::default();
        figures.observe("ns", "c", samples);
        figures.failed_over("ns", "c", 1700000000.5);
        let phases = [("ns".to_owned(), "c".to_owned(), "Running")];
        let text = figures.render(|_, _| true, &phases);
        for line in [
            r#"redis_up{namespace="ns",cluster="c",pod="r-2"} 0"#,
            r#"redis_primary{namespace="ns",cluster="c",pod="r-0"} 1"#,
            r#"redis_replica_lag_bytes{namespace="ns",cluster="c",pod="r-1"} 10"#,
            r#"redis_keys{namespace="ns",cluster="c",pod="r-1"} 7"#,
            r#"redis_evicted_keys_total{namespace="ns",cluster="c",pod="r-0"} 0"#,
            r#"redis_cluster_last_failover_timestamp_seconds{namespace="ns",cluster="c"} 1700000000.5"#,
            r#"redis_cluster_status_phase{namespace="ns",cluster="c",phase="Running"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(!text.contains(r#"redis_keys{namespace="ns",cluster="c",pod="r-2"}"#));
        // The next look replaces the pods; a deleted cluster goes at the next scrape.
        figures.observe("ns", "c", Vec::new());
        assert!(!figures.render(|_, _| true, &[]).contains("pod=\"r-0\""));
        assert!(!figures.render(|_, _| false, &[]).contains("cluster=\"c\""));
        assert!(
            !figures.render(|_, _| true, &[]).contains("cluster=\"c\""),
            "forgotten"
        );
        // An instance that does not lead exports none of it.
        figures.observe("ns", "c", vec![PodSample::default()]);
        figures.set_leading(false);
        assert_eq!(figures.render(|_, _| true, &phases), "");
    }
}
