//! The Redis figures of a cluster's pods for the metrics (`metrics::RedisFigures`), from what
//! the probe saw of each member: a pure function, kept apart from both so that neither the
//! metrics nor the decisions depend on the other.

use crate::metrics::PodSample;
use crate::redis::info::RedisRole;
use crate::topology::{Member, Seen};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::RedisFigures;
    use crate::redis::info::{ReplicaLink, Replication, Stats};

    fn member(ordinal: i32, seen: Seen) -> Member {
        crate::topology::tests::member(ordinal, None, true, seen)
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
                    ip: crate::topology::tests::ip(1),
                    offset: 90,
                    lag_seconds: 2,
                },
                ReplicaLink {
                    ip: crate::topology::tests::ip(2),
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
