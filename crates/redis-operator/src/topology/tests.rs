use super::*;

const INFO_PRIMARY: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.244.0.7,port=6379,state=online,offset=1180,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:5e2c\r\nmaster_repl_offset:1180\r\nsecond_repl_offset:-1\r\n";
const INFO_REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:10.244.0.5\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1180\r\nslave_repl_offset:1170\r\nslave_priority:100\r\nmaster_replid:5e2c\r\nmaster_repl_offset:1170\r\n";
/// As Redis 7.0 answers before it ever had a primary: slave_repl_offset 1, master_repl_offset 0.
const INFO_UNASSIGNED: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:1\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:1\r\nslave_repl_offset:1\r\nconnected_slaves:0\r\nmaster_replid:57f0\r\nmaster_repl_offset:0\r\n";

#[test]
fn info_replication_parses_each_role() {
    assert_eq!(
        Replication::parse(INFO_PRIMARY),
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats {
                replicas: vec![crate::redis::info::ReplicaLink {
                    ip: "10.244.0.7".into(),
                    offset: 1180,
                    lag_seconds: 0,
                }],
                ..Default::default()
            },
            role: RedisRole::Primary,
            offset: 1180,
            keys: 0,
            handing_over: false,
            heard_from_primary: None,
            settings: None,
        })
    );
    assert_eq!(
        Replication::parse(INFO_REPLICA),
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats::default(),
            role: RedisRole::Replica {
                host: "10.244.0.5".into(),
                port: 6379,
                link_up: true,
                syncing: false
            },
            offset: 1170,
            keys: 0,
            handing_over: false,
            heard_from_primary: Some(1),
            settings: None,
        })
    );
    assert_eq!(
        Replication::parse(INFO_UNASSIGNED),
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats::default(),
            role: RedisRole::Replica {
                host: crate::redis::UNASSIGNED_HOST.into(),
                port: crate::redis::UNASSIGNED_PORT,
                link_up: false,
                syncing: false
            },
            offset: 0,
            keys: 0,
            handing_over: false,
            heard_from_primary: None,
            settings: None,
        }),
        "no data: the pod that answers first must not look like a source"
    );
    let syncing = INFO_REPLICA
        .replace("master_link_status:up", "master_link_status:down")
        .replace("master_sync_in_progress:0", "master_sync_in_progress:1");
    assert!(matches!(
        Replication::parse(&syncing).map(|r| r.role),
        Ok(RedisRole::Replica {
            link_up: false,
            syncing: true,
            ..
        })
    ));
    assert!(Replication::parse("LOADING Redis is loading the dataset in memory").is_err());
}

#[test]
fn ordinals_come_from_pod_names() {
    assert_eq!(crate::pod::ordinal("test-redis-0"), Some(0));
    assert_eq!(crate::pod::ordinal("a-b-12"), Some(12));
    assert_eq!(crate::pod::ordinal("nodash"), None);
    assert_eq!(crate::pod::ordinal("x-y"), None);
}

pub(crate) fn ip(ordinal: i32) -> String {
    format!("10.244.0.{}", 10 + ordinal)
}

fn redis(role: RedisRole, offset: i64) -> Replication {
    Replication {
        passwords: Vec::new(),
        run_id: String::new(),
        stats: crate::redis::info::Stats::default(),
        role,
        offset,
        keys: 0,
        handing_over: false,
        heard_from_primary: None,
        settings: None,
    }
}

fn primary(offset: i64) -> Seen {
    Seen::Answered(redis(RedisRole::Primary, offset))
}

fn silent(why: &str, seconds: u64) -> Seen {
    Seen::Silent {
        why: why.into(),
        for_: Duration::from_secs(seconds),
    }
}

/// A Redis that restarted in its pod: unassigned, a new offset, and `keys` reloaded.
fn restarted(keys: u64) -> Seen {
    let Seen::Answered(mut redis) = unassigned(0) else {
        unreachable!()
    };
    redis.keys = keys;
    Seen::Answered(redis)
}

fn replica_of(ordinal: i32, offset: i64, link_up: bool) -> Seen {
    Seen::Answered(redis(
        RedisRole::Replica {
            host: ip(ordinal),
            port: 6379,
            link_up,
            syncing: false,
        },
        offset,
    ))
}

fn unassigned(offset: i64) -> Seen {
    Seen::Answered(redis(
        RedisRole::Replica {
            host: crate::redis::UNASSIGNED_HOST.into(),
            port: crate::redis::UNASSIGNED_PORT,
            link_up: false,
            syncing: false,
        },
        offset,
    ))
}

const FAILOVER_AFTER: Duration = Duration::from_secs(5);

fn policy(pods: i32) -> Policy {
    Policy {
        kept: pods,
        desired: pods,
        failover_after: FAILOVER_AFTER,
        config: None,
        in_ordinal_order: false,
        handover_held: false,
        settings: SETTINGS,
        live_config: Default::default(),
        roll_held: false,
    }
}

/// The policy's settings: the fence at one replica within 3 s, pings every second.
const SETTINGS: Settings = Settings {
    replication_auth: false,
    min_replicas: 1,
    max_lag: 3,
    ping_period: 1,
};

/// Decides for a cluster of `pods` pods that is not rolling.
fn decide_for(members: &[Member], pods: i32) -> Plan {
    decide(members, &policy(pods))
}

pub(crate) fn member(ordinal: i32, label: Option<Role>, ready: bool, seen: Seen) -> Member {
    Member {
        name: format!("r-{ordinal}"),
        ordinal,
        address: (seen != Seen::NoAddress).then(|| ip(ordinal)),
        ready,
        terminating: false,
        label,
        config: None,
        settling: false,
        lately_demoted: false,
        stopped: false,
        stopping: None,
        live: Default::default(),
        seen,
    }
}

fn follow(ordinal: i32) -> Command {
    Command::Follow { host: ip(ordinal) }
}

fn demote(ordinal: i32) -> Command {
    Command::Demote { host: ip(ordinal) }
}

/// `member` with its Redis container reported stopped by the kubelet.
fn stopped(mut member: Member) -> Member {
    member.stopped = true;
    member
}

fn relabel(ordinal: i32, role: Option<Role>) -> Relabel {
    Relabel {
        pod: format!("r-{ordinal}"),
        role,
    }
}

fn commands(plan: &Plan) -> Vec<(&str, Command)> {
    plan.commands
        .iter()
        .map(|(pod, command)| (pod.as_str(), command.clone()))
        .collect()
}

const P: Option<Role> = Some(Role::Primary);
const R: Option<Role> = Some(Role::Replica);

#[test]
fn a_new_cluster_gets_pod_0_as_primary_and_the_others_follow_it() {
    let members = [
        member(0, None, false, unassigned(0)),
        member(1, None, false, unassigned(0)),
        member(2, None, false, unassigned(0)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    assert!(plan.demote.is_empty());
    assert_eq!(
        commands(&plan),
        [
            ("r-0", Command::Promote),
            ("r-1", follow(0)),
            ("r-2", follow(0))
        ]
    );
    assert_eq!(plan.relabel, [relabel(0, P), relabel(1, R), relabel(2, R)]);
    assert_eq!(plan.in_role, 0);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("pod r-1 is being pointed at the primary")
    );
}

#[test]
fn a_settled_cluster_needs_nothing() {
    let members = [
        member(0, P, true, primary(50)),
        member(1, R, true, replica_of(0, 50, true)),
        member(2, R, true, replica_of(0, 50, true)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(
        plan,
        Plan {
            primary: Some("r-0".into()),
            in_role: 3,
            updated: 3,
            ..Plan::default()
        }
    );
}

#[test]
fn replicas_count_only_once_linked_synced_and_ready() {
    let syncing = Seen::Answered(redis(
        RedisRole::Replica {
            host: ip(0),
            port: 6379,
            link_up: false,
            syncing: true,
        },
        0,
    ));
    let cases = [
        (syncing, true, "pod r-1 is syncing with the primary"),
        (
            replica_of(0, 10, false),
            true,
            "pod r-1 has no link to the primary",
        ),
        (replica_of(0, 10, true), false, "pod r-1 is not ready"),
        (
            silent("timed out", 1),
            true,
            "pod r-1 does not answer: timed out",
        ),
        (Seen::NoAddress, false, "pod r-1 has no address yet"),
    ];
    for (seen, ready, reason) in cases {
        let members = [member(0, P, true, primary(10)), member(1, R, ready, seen)];
        let plan = decide_for(&members, 2);
        assert_eq!(plan.in_role, 1, "{reason}");
        assert_eq!(plan.waiting.as_deref(), Some(reason));
        assert!(plan.commands.is_empty(), "{reason}");
    }
}

#[test]
fn an_adopted_cluster_makes_its_lowest_ready_ordinal_primary() {
    // The previous release ran independent primaries; pod 0 is not ready.
    let members = [
        member(0, None, false, primary(0)),
        member(1, None, true, primary(0)),
        member(2, None, true, primary(0)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(
        commands(&plan),
        [("r-0", demote(1)), ("r-2", demote(1))],
        "already a primary: no promotion; the others demoted, their clients disconnected"
    );
    assert_eq!(plan.relabel, [relabel(1, P), relabel(0, R), relabel(2, R)]);
    assert_eq!(plan.in_role, 1);
}

#[test]
fn a_deleted_primary_is_replaced_by_the_replica_with_the_most_data() {
    // r-0 was recreated empty (unlabelled); r-2 got further than r-1 before the link broke.
    let members = [
        member(0, None, false, unassigned(0)),
        member(1, R, true, replica_of(0, 900, false)),
        member(2, R, true, replica_of(0, 1000, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-2"));
    assert_eq!(
        commands(&plan),
        [
            ("r-2", Command::Promote),
            ("r-0", follow(2)),
            ("r-1", follow(2))
        ]
    );
    assert_eq!(plan.relabel, [relabel(2, P), relabel(0, R)]);
}

#[test]
fn no_primary_is_chosen_while_a_pod_that_may_hold_data_does_not_answer() {
    let members = [
        member(0, None, false, unassigned(0)),
        member(1, R, false, silent("connection refused", 1)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary, None);
    assert!(plan.commands.is_empty() && plan.relabel.is_empty());
    assert_eq!(
        plan.waiting.as_deref(),
        Some("no primary yet: pod r-1 does not answer: connection refused")
    );
    // A new cluster waits for pod 0 rather than electing whichever pod started first.
    let members = [
        member(0, None, false, Seen::NoAddress),
        member(1, None, false, unassigned(0)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary, None);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("no primary yet: pod r-0 has no address yet")
    );
    // A pod with data outranks the silent one's unknowns only when it has some to compare.
    let members = [
        member(0, R, true, replica_of(5, 700, false)),
        member(1, R, false, silent("timed out", 1)),
    ];
    assert_eq!(decide_for(&members, 2).primary.as_deref(), Some("r-0"));
}

#[test]
fn a_silent_primary_is_replaced_only_after_the_failover_delay() {
    let members = |seconds| {
        [
            member(0, P, false, silent("timed out", seconds)),
            member(1, R, true, replica_of(0, 80, false)),
            member(2, R, true, replica_of(0, 90, false)),
        ]
    };
    let plan = decide_for(&members(4), 3);
    assert_eq!(plan.primary, None);
    assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.demote.is_empty());
    assert_eq!(plan.outage, Some(Outage::PrimaryNotAnswering));
    assert!(plan.urgent, "looked at again within a second");
    assert_eq!(
        plan.waiting.as_deref(),
        Some(
            "the primary r-0 does not answer: timed out; a replica takes over if it stays \
             silent for 5s"
        )
    );

    // Past the delay, its Redis is stopped first: resumed, it would acknowledge the writes
    // queued on its connections.
    let plan = decide_for(&members(5), 3);
    assert_eq!(plan.stop.as_deref(), Some("r-0"));
    assert_eq!(plan.primary, None);
    assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.demote.is_empty());
    assert_eq!(plan.outage, Some(Outage::PrimaryNotAnswering));
    assert!(plan.urgent);
    assert_eq!(
        plan.waiting.as_deref(),
        Some(
            "the primary r-0 does not answer: timed out: its Redis is being stopped before r-2 \
             takes over"
        )
    );
    // Being stopped: nothing more until the kubelet says it is.
    let mut being_stopped = members(6);
    being_stopped[0].stopping = Some(Duration::from_secs(1));
    let plan = decide_for(&being_stopped, 3);
    assert_eq!((plan.stop, plan.primary), (None, None));
    assert!(plan.commands.is_empty() && plan.urgent);

    let [old, one, two] = members(5);
    let plan = decide_for(&[stopped(old), one, two], 3);
    assert_eq!(plan.primary.as_deref(), Some("r-2"), "the highest offset");
    assert_eq!(plan.demote, [relabel(0, None)], "silent: no role at all");
    assert_eq!(
        commands(&plan),
        [("r-2", Command::Promote), ("r-1", follow(2))]
    );
    assert_eq!(plan.relabel, [relabel(2, P)]);
    assert_eq!(
        plan.change,
        Some(Change {
            from: Some("r-0".into()),
            to: "r-2".into(),
            reason: Reason::PrimaryNotAnswering,
            trouble: Duration::from_secs(5),
        })
    );
    assert_eq!(plan.outage, None);
}

#[test]
fn no_promotion_without_a_majority_of_pods_answering() {
    // The operator may be the one cut off from r-0 and r-1.
    let members = [
        member(0, P, true, silent("timed out", 30)),
        member(1, R, true, silent("timed out", 30)),
        member(2, R, true, replica_of(0, 90, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary, None);
    assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.demote.is_empty());
    assert_eq!(plan.outage, Some(Outage::NoQuorum));
    assert!(
        !plan.urgent,
        "it may last: looked at again at the probe interval"
    );
    assert!(
        plan.waiting
            .as_deref()
            .is_some_and(|w| w.contains("only 1 of 3 pods answer")),
        "{plan:?}"
    );
    // Two pods: one answering is no majority either.
    let members = [
        member(0, P, true, silent("timed out", 30)),
        member(1, R, true, replica_of(0, 90, false)),
    ];
    assert_eq!(decide_for(&members, 2).outage, Some(Outage::NoQuorum));
}

#[test]
fn an_empty_replica_is_not_promoted_while_the_silent_primary_may_hold_data() {
    let members = [
        member(0, P, true, silent("timed out", 30)),
        member(1, R, false, unassigned(0)),
        member(2, R, false, unassigned(0)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary, None);
    assert_eq!(plan.outage, Some(Outage::NoCandidate));
    assert!(plan.commands.is_empty());
}

#[test]
fn a_deleted_primary_hands_its_last_writes_over_before_a_replica_takes_over() {
    let leaving = |seen| {
        let mut old = member(0, P, true, seen);
        old.terminating = true;
        old
    };
    // Its Redis still answers as primary: it hands over to the highest offset, writes paused
    // until r-1 has them all.
    let members = [
        leaving(primary(1000)),
        member(1, R, true, replica_of(0, 990, true)),
        member(2, R, true, replica_of(0, 980, true)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary, None);
    assert_eq!(plan.outage, Some(Outage::PrimaryLeaving));
    assert_eq!(
        commands(&plan),
        [(
            "r-0",
            Command::HandOver {
                to: "r-1".into(),
                host: ip(1)
            }
        )]
    );
    assert!(plan.demote.is_empty() && plan.relabel.is_empty());
    assert!(plan.urgent);

    // Handed over: r-1 is primary; the leaving pod, a read-only replica now, loses its label
    // once r-1 has it.
    let members = [
        leaving(replica_of(1, 1000, true)),
        member(1, R, true, primary(1000)),
        member(2, R, true, replica_of(0, 980, true)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert!(plan.demote.is_empty());
    assert_eq!(plan.retire, [relabel(0, None)]);
    assert_eq!(commands(&plan), [("r-2", follow(1))]);
    assert_eq!(plan.relabel, [relabel(1, P)]);
    assert_eq!(plan.change.map(|c| c.reason), Some(Reason::PrimaryLeaving));

    // Its Redis already gone: the highest offset takes over at once.
    let members = [
        stopped(leaving(silent("connection refused", 0))),
        member(1, R, true, replica_of(0, 990, false)),
        member(2, R, true, replica_of(0, 980, false)),
    ];
    assert_eq!(decide_for(&members, 3).primary.as_deref(), Some("r-1"));
    // Silent but not reported stopped (it may hang while its pod goes): stopped first, its
    // grace period cut short, whatever its pod's was.
    let members = [
        leaving(silent("timed out", 0)),
        member(1, R, true, replica_of(0, 990, false)),
        member(2, R, true, replica_of(0, 980, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!((plan.stop.as_deref(), plan.primary), (Some("r-0"), None));
}

#[test]
fn a_primary_that_restarted_empty_is_replaced_by_a_replica_with_data() {
    let members = [
        member(0, P, false, restarted(0)),
        member(1, R, true, replica_of(0, 500, false)),
        member(2, R, true, replica_of(0, 400, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert!(plan.demote.is_empty(), "its Redis refuses writes");
    assert_eq!(plan.retire, [relabel(0, R)], "it answers: a replica now");
    assert_eq!(
        commands(&plan),
        [
            ("r-1", Command::Promote),
            ("r-0", follow(1)),
            ("r-2", follow(1))
        ]
    );
    assert_eq!(
        plan.change.map(|c| c.reason),
        Some(Reason::PrimaryRestartedEmpty)
    );
}

#[test]
fn an_operator_restarted_halfway_finishes_from_what_redis_reports() {
    // It had promoted r-1 and died before moving the labels; r-0 is still silent.
    let members = [
        stopped(member(0, P, false, silent("timed out", 5))),
        member(1, R, true, primary(1000)),
        member(2, R, true, replica_of(0, 1000, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-2", follow(1))], "no second promotion");
    assert_eq!(plan.relabel, [relabel(1, P)]);

    // It had sent FAILOVER (a handover) and died before moving the labels.
    let members = [
        member(0, P, true, replica_of(1, 1000, true)),
        member(1, R, true, primary(1000)),
        member(2, R, true, replica_of(0, 1000, true)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(plan.relabel, [relabel(1, P)]);
    assert_eq!(
        plan.retire,
        [relabel(0, R)],
        "a read-only replica: its label goes once r-1 has one"
    );
    assert!(plan.demote.is_empty());
    assert_eq!(commands(&plan), [("r-2", follow(1))]);
    assert_eq!(plan.change.map(|c| c.reason), Some(Reason::Switchover));

    // Its pod was deleted; r-1 had been promoted, r-2 not yet pointed at it.
    let members = [
        member(0, None, false, unassigned(0)),
        member(1, R, true, primary(1000)),
        member(2, R, true, replica_of(0, 1000, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-0", follow(1)), ("r-2", follow(1))]);
}

#[test]
fn an_old_primary_that_comes_back_rejoins_as_a_replica() {
    // r-0 was stopped, r-1 took over; r-0 resumes still believing it is the primary.
    let members = [
        member(0, None, true, primary(700)),
        member(1, P, true, primary(900)),
        member(2, R, true, replica_of(1, 900, true)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(
        commands(&plan),
        [("r-0", demote(1))],
        "its clients disconnected: they reconnect to the new primary"
    );
    assert_eq!(plan.relabel, [relabel(0, R)]);
    assert!(plan.demote.is_empty() && plan.change.is_none());
}

#[test]
fn a_handover_under_way_holds_everything() {
    let mut handing = redis(RedisRole::Primary, 1000);
    handing.handing_over = true;
    let members = [
        member(0, P, true, Seen::Answered(handing)),
        member(1, R, true, replica_of(0, 1000, true)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    assert_eq!(plan.outage, Some(Outage::SwitchingOver));
    assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.delete.is_none());
}

/// A settled cluster of three whose pods run `revisions`; the update revision is "new".
fn rolling(revisions: [&str; 3], primary_ordinal: i32) -> Vec<Member> {
    (0..3)
        .map(|o| {
            let mut m = if o == primary_ordinal {
                member(o, P, true, primary(100))
            } else {
                member(o, R, true, replica_of(primary_ordinal, 100, true))
            };
            m.config = Some(revisions[o as usize].into());
            m
        })
        .collect()
}

fn roll_policy() -> Policy {
    Policy {
        config: Some("new".into()),
        ..policy(3)
    }
}

#[test]
fn a_cluster_without_a_turn_to_roll_replaces_nothing_and_says_why() {
    let held = Policy {
        roll_held: true,
        ..roll_policy()
    };
    for revisions in [["old", "old", "old"], ["old", "new", "new"]] {
        let members = rolling(revisions, 0);
        assert!(rolls(&members, &held), "{revisions:?}");
        let plan = decide(&members, &held);
        assert_eq!(plan.delete, None, "{revisions:?}");
        assert!(plan.commands.is_empty(), "no handover: {revisions:?}");
        assert!(
            plan.waiting
                .as_deref()
                .is_some_and(|w| w.contains("turn to roll")),
            "{:?}",
            plan.waiting
        );
        // The roles are kept all the same.
        assert_eq!(plan.primary.as_deref(), Some("r-0"));
    }
    assert!(!rolls(&rolling(["new", "new", "new"], 0), &roll_policy()));
    // A scale-down's handover is not a roll: it goes ahead.
    let mut members = rolling(["new", "new", "new"], 2);
    members
        .iter_mut()
        .for_each(|m| m.config = Some("new".into()));
    let scale_down = Policy { desired: 2, ..held };
    let plan = decide(&members, &scale_down);
    assert!(
        matches!(commands(&plan)[..], [(_, Command::HandOver { .. })]),
        "{plan:?}"
    );
}

#[test]
fn a_roll_replaces_replicas_one_at_a_time_then_hands_over_then_the_old_primary() {
    let plan = decide(&rolling(["old", "old", "old"], 0), &roll_policy());
    assert_eq!(plan.delete.as_deref(), Some("r-2"), "highest replica first");
    assert!(plan.commands.is_empty());

    let plan = decide(&rolling(["old", "old", "new"], 0), &roll_policy());
    assert_eq!(plan.delete.as_deref(), Some("r-1"));

    // Only the primary is left: it hands over to an updated, in-sync replica.
    let plan = decide(&rolling(["old", "new", "new"], 0), &roll_policy());
    assert_eq!(plan.delete, None);
    assert_eq!(
        commands(&plan),
        [(
            "r-0",
            Command::HandOver {
                to: "r-1".into(),
                host: ip(1)
            }
        )]
    );
    assert!(plan.urgent);

    // Handed over: r-0 is an outdated replica now, replaced once traffic has left it.
    let mut members = rolling(["old", "new", "new"], 1);
    members[0].settling = true;
    let plan = decide(&members, &roll_policy());
    assert_eq!(plan.delete, None);
    assert!(plan.urgent);
    members[0].settling = false;
    let plan = decide(&members, &roll_policy());
    assert_eq!(plan.delete.as_deref(), Some("r-0"));
    // Its clients being disconnected (it was the primary moments ago) holds nothing up.
    members[0].lately_demoted = true;
    if let Seen::Answered(redis) = &mut members[0].seen {
        redis.stats.connected_clients = 3;
    }
    let plan = decide(&members, &roll_policy());
    assert_eq!(commands(&plan), [("r-0", Command::Disconnect)]);
    assert_eq!(plan.delete.as_deref(), Some("r-0"));

    // One deletion at a time.
    let mut members = rolling(["old", "old", "new"], 0);
    members[2].terminating = true;
    assert_eq!(decide(&members, &roll_policy()).delete, None);

    // Nothing happens while a replica is not in its role, except that an outdated pod that
    // serves nothing goes at once.
    let mut members = rolling(["old", "new", "new"], 0);
    members[2].ready = false;
    let plan = decide(&members, &roll_policy());
    assert_eq!(plan.delete, None);
    assert!(plan.commands.is_empty());
    let mut members = rolling(["new", "old", "new"], 0);
    members[1].seen = silent("connection refused", 60);
    members[2].ready = false;
    assert_eq!(
        decide(&members, &roll_policy()).delete.as_deref(),
        Some("r-1")
    );
}

#[test]
fn pods_made_before_storage_go_in_ordinal_order_the_primary_in_its_turn() {
    let policy = Policy {
        in_ordinal_order: true,
        ..roll_policy()
    };
    // (configs of r-0, r-1, r-2; the primary's ordinal) → the step.
    let cases = [
        (["old", "old", "old"], 1, Step::Delete("r-0")),
        (["new", "old", "old"], 2, Step::Delete("r-1")),
        // The primary's turn, before any replica above it is updated: it hands over to an
        // in-sync replica all the same (the StatefulSet makes no pod past it otherwise).
        (["old", "old", "old"], 0, Step::HandOver("r-1")),
        // An updated replica is preferred.
        (["old", "old", "new"], 0, Step::HandOver("r-2")),
        (["new", "old", "new"], 1, Step::HandOver("r-0")),
        (["new", "new", "new"], 1, Step::Nothing),
    ];
    for (configs, primary, step) in cases {
        let plan = decide(&rolling(configs, primary), &policy);
        assert_eq!(Step::of(&plan), step, "{configs:?}, primary r-{primary}");
    }
    // Without the flag: the highest replica first, the primary last.
    let plan = decide(&rolling(["old", "old", "old"], 0), &roll_policy());
    assert_eq!(Step::of(&plan), Step::Delete("r-2"));
}

/// What a plan does next in a roll.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Delete(&'a str),
    HandOver(&'a str),
    Nothing,
}

impl Step<'_> {
    fn of(plan: &Plan) -> Step<'_> {
        if let Some(pod) = &plan.delete {
            return Step::Delete(pod);
        }
        match plan.commands.as_slice() {
            [(_, Command::HandOver { to, .. })] => Step::HandOver(to),
            [] => Step::Nothing,
            other => panic!("unexpected commands {other:?}"),
        }
    }
}

#[test]
fn a_single_pod_is_replaced_without_a_handover() {
    let mut members = [member(0, P, true, primary(100))];
    members[0].config = Some("old".into());
    let policy = Policy {
        config: Some("new".into()),
        ..policy(1)
    };
    let plan = decide(&members, &policy);
    assert_eq!(plan.delete.as_deref(), Some("r-0"));
    assert!(plan.commands.is_empty());
}

#[test]
fn a_scale_down_hands_the_primary_over_to_a_pod_that_stays() {
    let members = [
        member(0, R, true, replica_of(2, 100, true)),
        member(1, R, true, replica_of(2, 100, true)),
        member(2, P, true, primary(100)),
    ];
    let kept = pods_to_keep(&members, 1);
    assert_eq!(kept, 3, "the primary's pod stays until it handed over");
    let policy = Policy {
        kept,
        desired: 1,
        ..policy(3)
    };
    let plan = decide(&members, &policy);
    assert_eq!(
        commands(&plan),
        [(
            "r-2",
            Command::HandOver {
                to: "r-0".into(),
                host: ip(0)
            }
        )],
        "to a pod below the new size"
    );
    assert_eq!(
        plan.waiting.as_deref(),
        Some("the primary r-2 hands over to r-0 before the scale-down removes its pod")
    );
}

#[test]
fn a_primary_that_restarted_with_its_data_is_promoted_again() {
    // Its Redis restarted in the pod and reloaded its append-only file: a new offset, its keys.
    let members = [
        member(0, P, false, restarted(40)),
        member(1, R, true, replica_of(0, 80, false)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    assert_eq!(commands(&plan), [("r-0", Command::Promote)]);
    assert!(plan.relabel.is_empty());
}

#[test]
fn two_labelled_primaries_keep_the_one_redis_says_is_primary() {
    let members = [
        member(0, P, true, replica_of(1, 40, true)),
        member(1, P, true, primary(40)),
        member(2, P, false, silent("timed out", 1)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(plan.demote, [relabel(0, R), relabel(2, None)]);
    assert!(plan.commands.is_empty());
}

#[test]
fn pods_leaving_or_terminating_are_left_alone() {
    // r-0's Redis is gone with its pod.
    let mut terminating = stopped(member(0, P, true, silent("connection refused", 0)));
    terminating.terminating = true;
    let members = [
        terminating,
        member(1, R, true, replica_of(0, 10, false)),
        member(2, R, true, replica_of(0, 12, false)),
    ];
    // Scaled to 2: r-2 is on its way out and is not a candidate.
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-1", Command::Promote)]);
    assert_eq!(plan.demote, [relabel(0, None)]);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("pod with ordinal 0 does not exist yet")
    );
}

#[test]
fn a_scale_down_keeps_the_pod_labelled_primary() {
    let members = [
        member(0, R, true, replica_of(3, 10, true)),
        member(1, R, true, replica_of(3, 10, true)),
        member(3, P, true, primary(10)),
        member(4, R, true, replica_of(3, 10, true)),
    ];
    assert_eq!(pods_to_keep(&members, 2), 4);
    assert_eq!(pods_to_keep(&members, 4), 4);
    assert_eq!(pods_to_keep(&members, 5), 5);
    let mut leaving = members.clone();
    leaving[2].terminating = true;
    assert_eq!(pods_to_keep(&leaving, 2), 2);
    // Handed over moments ago: its pod stays until traffic has moved off it.
    let mut settling = members.clone();
    settling[2].label = R;
    settling[2].settling = true;
    assert_eq!(pods_to_keep(&settling, 2), 4);
    settling[2].settling = false;
    assert_eq!(pods_to_keep(&settling, 2), 2);
}

#[test]
fn a_pod_that_never_started_is_not_waited_for() {
    // The image was fixed: pod 1 runs the new one, pod 0 still waits on the old, unpullable
    // one, and the StatefulSet replaces pod 0 only once pod 1 is ready.
    let members = [
        member(0, None, false, Seen::NeverStarted("ErrImagePull".into())),
        member(1, None, false, unassigned(0)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-1", Command::Promote)]);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("pod r-0 never started: ErrImagePull")
    );
}

#[test]
fn pods_stuck_on_a_fixed_image_are_replaced_even_before_there_is_a_primary() {
    // Both pods wait on an unpullable image; the spec now names a good one.
    let mut members = [
        member(
            0,
            None,
            false,
            Seen::NeverStarted("ImagePullBackOff".into()),
        ),
        member(
            1,
            None,
            false,
            Seen::NeverStarted("ImagePullBackOff".into()),
        ),
    ];
    for m in &mut members {
        m.config = Some("old".into());
    }
    let policy = Policy {
        config: Some("new".into()),
        ..policy(2)
    };
    let plan = decide(&members, &policy);
    assert_eq!(plan.primary, None);
    assert_eq!(plan.outage, Some(Outage::NoPrimaryYet));
    assert_eq!(plan.delete.as_deref(), Some("r-1"), "one at a time");
    // Not while the last one deleted is still going.
    members[1].terminating = true;
    assert_eq!(decide(&members, &policy).delete, None);
}

#[test]
fn a_handover_that_failed_lately_is_held_back_unless_the_primary_changes() {
    let leaving = || {
        let mut old = member(0, P, true, primary(1000));
        old.terminating = true;
        old
    };
    let held = Policy {
        handover_held: true,
        ..roll_policy()
    };
    // (members, policy) → the handover's pod, if one is started, and the status's reason.
    let cases = [
        (
            rolling(["old", "new", "new"], 0),
            roll_policy(),
            Some("r-0"),
            None,
        ),
        (
            rolling(["old", "new", "new"], 0),
            held.clone(),
            None,
            Some("the primary r-0 hands over again 30s after the last attempt failed"),
        ),
        (
            vec![
                leaving(),
                member(1, R, true, replica_of(0, 990, true)),
                member(2, R, true, replica_of(0, 980, true)),
            ],
            held.clone(),
            None,
            Some("the primary r-0 hands over again 30s after the last attempt failed"),
        ),
    ];
    for (members, policy, hands_over, waiting) in cases {
        let plan = decide(&members, &policy);
        let handover = plan
            .commands
            .iter()
            .find(|(_, c)| matches!(c, Command::HandOver { .. }))
            .map(|(pod, _)| pod.as_str());
        assert_eq!(handover, hands_over, "{policy:?}");
        if let Some(waiting) = waiting {
            assert_eq!(plan.waiting.as_deref(), Some(waiting));
        }
    }
    // A change of primary is a new situation: what it needs is not held back.
    let members = [
        member(0, R, true, replica_of(1, 1000, true)),
        stopped(member(1, P, true, silent("connection refused", 60))),
        member(2, R, true, replica_of(1, 980, true)),
    ];
    let plan = decide(&members, &held);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    assert!(plan.change.is_some());
}

#[test]
fn what_a_plan_did_is_read_from_its_outcome() {
    let members = [
        member(0, None, true, unassigned(0)),
        member(1, None, true, unassigned(0)),
    ];
    let plan = decide_for(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    let all_ran = Outcome::default();
    let report = plan.report(&all_ran);
    assert_eq!(report.primary.as_deref(), Some("r-0"));
    assert_eq!(
        report.change.as_ref().map(|c| c.reason),
        Some(Reason::Elected)
    );
    assert_eq!(plan.relabel_after(&all_ran), plan.relabel);

    // The promotion failed: no primary, no change, no primary label (the replica's stays),
    // and the status says why.
    let promotion_failed = Outcome {
        failed: vec![("r-0".into(), Command::Promote, "timed out".into())],
    };
    let report = plan.report(&promotion_failed);
    assert_eq!(report.primary, None);
    assert_eq!(report.change, None);
    assert_eq!(
        report.waiting.as_deref(),
        Some("REPLICAOF NO ONE on pod r-0 failed: timed out")
    );
    assert_eq!(plan.relabel_after(&promotion_failed), [relabel(1, R)]);
    assert!(plan.retire_after(&promotion_failed).is_empty());

    // A replica's command failed: the primary stands; that replica gets no label yet.
    let follow_failed = Outcome {
        failed: vec![("r-1".into(), follow(0), "refused".into())],
    };
    assert_eq!(plan.report(&follow_failed).primary.as_deref(), Some("r-0"));
    assert_eq!(plan.relabel_after(&follow_failed), [relabel(0, P)]);
    assert!(!plan.handed_over(&follow_failed));
}

/// A replica of `ordinal` whose link is up and that heard from it `ago` seconds ago.
fn hearing(ordinal: i32, offset: i64, ago: u64) -> Seen {
    let Seen::Answered(mut redis) = replica_of(ordinal, offset, true) else {
        unreachable!()
    };
    redis.heard_from_primary = Some(ago);
    Seen::Answered(redis)
}

#[test]
fn a_primary_its_replicas_still_hear_from_is_not_replaced_whatever_the_operator_sees() {
    // The operator is cut off from r-0; its replicas are not. Fence lag 3 s: heard within
    // 4 s is alive.
    let members = |ago| {
        [
            member(0, P, true, silent("timed out", 30)),
            member(1, R, true, hearing(0, 900, ago)),
            member(2, R, true, replica_of(0, 900, false)),
        ]
    };
    for ago in [0, 1, 4] {
        let plan = decide_for(&members(ago), 3);
        assert_eq!(plan.outage, Some(Outage::PrimaryUnreachable), "{ago}");
        assert_eq!(plan.primary.as_deref(), Some("r-0"), "it still serves");
        assert_eq!(plan.stop, None);
        assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.demote.is_empty());
        assert!(!plan.urgent, "it may last");
        assert!(
            plan.waiting
                .as_deref()
                .is_some_and(|w| w.contains(&format!("r-1 heard from it {ago}s ago"))),
            "{plan:?}"
        );
    }
    // Not heard from for longer than the fence's lag and a second: gone for them too.
    let plan = decide_for(&members(5), 3);
    assert_eq!(plan.stop.as_deref(), Some("r-0"));
    // A replica that follows another address witnesses nothing about r-0.
    let members = [
        member(0, P, true, silent("timed out", 30)),
        member(1, R, true, hearing(7, 900, 0)),
        member(2, R, true, replica_of(0, 900, false)),
    ];
    assert_eq!(decide_for(&members, 3).stop.as_deref(), Some("r-0"));
}

#[test]
fn pods_without_an_address_do_not_count_against_a_majority() {
    // Scaled from 3 to 9: six new pods are pending, with no address and no data.
    let mut members = vec![
        member(0, P, true, silent("timed out", 30)),
        member(1, R, true, replica_of(0, 900, false)),
        member(2, R, true, replica_of(0, 800, false)),
    ];
    members.extend((3..9).map(|o| member(o, None, false, Seen::NoAddress)));
    let plan = decide_for(&members, 9);
    assert_eq!(plan.stop.as_deref(), Some("r-0"), "{plan:?}");
    // Pods that run and do not answer still do.
    members[2].seen = silent("timed out", 30);
    assert_eq!(decide_for(&members, 9).outage, Some(Outage::NoQuorum));
}

#[test]
fn a_primary_its_node_does_not_stop_is_replaced_once_the_stop_timed_out() {
    let members = |seconds| {
        let mut old = member(0, P, true, silent("timed out", 30));
        old.stopping = Some(Duration::from_secs(seconds));
        [
            old,
            member(1, R, true, replica_of(0, 900, false)),
            member(2, R, true, replica_of(0, 800, false)),
        ]
    };
    let waited = STOP_TIMEOUT.as_secs();
    let plan = decide_for(&members(waited - 1), 3);
    assert_eq!((plan.primary, plan.stop), (None, None));
    let plan = decide_for(&members(waited), 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(
        plan.change.map(|c| c.reason),
        Some(Reason::PrimaryNotAnswering)
    );
}

#[test]
fn no_pod_is_elected_while_a_replica_hears_from_an_unlabelled_primary() {
    // The operator stopped between removing r-0's label and labelling its successor, and
    // cannot reach r-0, which r-1 still hears from.
    let members = [
        member(0, None, true, silent("timed out", 30)),
        member(1, R, true, hearing(0, 900, 1)),
        member(2, R, true, replica_of(0, 800, false)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary, None);
    assert_eq!(plan.outage, Some(Outage::PrimaryUnreachable));
    assert!(plan.commands.is_empty() && plan.relabel.is_empty());
    // One that answers as primary is the one elected.
    let members = [
        member(0, None, true, primary(1000)),
        member(1, R, true, hearing(0, 900, 1)),
        member(2, R, true, replica_of(0, 800, false)),
    ];
    assert_eq!(decide_for(&members, 3).primary.as_deref(), Some("r-0"));
}

#[test]
fn a_primary_that_restarted_empty_is_not_promoted_while_a_replica_is_silent() {
    let members = [
        member(0, P, false, restarted(0)),
        member(1, R, true, silent("timed out", 30)),
        member(2, R, true, silent("timed out", 30)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(plan.primary, None);
    assert_eq!(plan.outage, Some(Outage::NoCandidate));
    assert!(plan.commands.is_empty(), "{plan:?}");
    // Once they answer, the one with data takes over.
    let members = [
        member(0, P, false, restarted(0)),
        member(1, R, true, replica_of(0, 500, false)),
        member(2, R, true, silent("timed out", 30)),
    ];
    assert_eq!(decide_for(&members, 3).primary.as_deref(), Some("r-1"));
}

/// `seen` with the settings its Redis reports.
fn configured(seen: Seen, min_replicas: u32) -> Seen {
    let Seen::Answered(mut redis) = seen else {
        unreachable!()
    };
    redis.settings = Some(Settings {
        min_replicas,
        ..SETTINGS
    });
    Seen::Answered(redis)
}

#[test]
fn the_fence_is_raised_once_replicas_are_in_sync_and_never_lowered_for_their_absence() {
    let configures = |plan: &Plan| -> Vec<(String, u32)> {
        plan.commands
            .iter()
            .filter_map(|(pod, command)| match command {
                Command::Configure(s) => Some((pod.clone(), s.min_replicas)),
                _ => None,
            })
            .collect()
    };
    // Settings that could not be read are left alone.
    let settled = [
        member(0, P, true, primary(10)),
        member(1, R, true, replica_of(0, 10, true)),
    ];
    assert!(configures(&decide_for(&settled, 2)).is_empty());
    // Adopted without the settings: every Redis gets them, the fence raised since a replica
    // is in sync.
    let members = [
        member(0, P, true, configured(primary(10), 0)),
        member(1, R, true, configured(replica_of(0, 10, true), 0)),
        member(2, R, true, configured(replica_of(0, 10, false), 0)),
    ];
    assert_eq!(
        configures(&decide_for(&members, 3)),
        [
            ("r-0".to_owned(), 1),
            ("r-1".to_owned(), 1),
            ("r-2".to_owned(), 1)
        ]
    );
    // A new cluster: no replica in sync yet, so no fence, or no write would be taken.
    let members = [
        member(0, P, true, configured(primary(10), 0)),
        member(1, R, false, configured(replica_of(0, 0, false), 0)),
        member(2, R, false, configured(unassigned(0), 0)),
    ];
    let plan = decide_for(&members, 3);
    assert!(configures(&plan).is_empty(), "{plan:?}");
    // Fenced, its replicas gone: it stays fenced (that is when the fence protects).
    let members = [
        member(0, P, true, configured(primary(10), 1)),
        member(1, R, true, silent("timed out", 30)),
        member(2, R, true, silent("timed out", 30)),
    ];
    assert!(configures(&decide_for(&members, 3)).is_empty());
    // Everything as asked: nothing sent.
    let members = [
        member(0, P, true, configured(primary(10), 1)),
        member(1, R, true, configured(replica_of(0, 10, true), 1)),
        member(2, R, true, configured(replica_of(0, 10, true), 1)),
    ];
    assert!(decide_for(&members, 3).commands.is_empty());
    // Turned off in the spec: lowered at once.
    let off = Policy {
        settings: Settings {
            min_replicas: 0,
            ..SETTINGS
        },
        ..policy(3)
    };
    assert_eq!(configures(&decide(&members, &off)).len(), 3);
}

#[test]
fn a_primary_is_silent_since_its_replicas_last_heard_from_it() {
    // The operator, asking every few seconds, noticed a second ago; the replicas have not
    // heard from r-0 for 5 s (the failover delay).
    let members = |ago| {
        [
            member(0, P, true, silent("timed out", 1)),
            member(1, R, true, hearing(0, 900, ago)),
            member(2, R, true, hearing(0, 900, 6)),
        ]
    };
    let plan = decide_for(&members(5), 3);
    assert_eq!(plan.stop.as_deref(), Some("r-0"), "{plan:?}");
    // The most recent contact counts: r-1 heard from it 4 s ago.
    let plan = decide_for(&members(4), 3);
    assert_eq!(plan.stop, None);
    assert_eq!(plan.outage, Some(Outage::PrimaryNotAnswering));
}

#[test]
fn an_empty_pod_is_never_elected_while_a_pod_on_its_way_out_holds_data() {
    // Scaled to 1 while r-1 had just become primary (its label not yet in the cache): r-0 was
    // recreated empty, r-1 and r-2 hold the data above the pods kept.
    let members = [
        member(0, None, true, unassigned(0)),
        member(1, None, true, primary(5000)),
        member(2, R, true, replica_of(1, 5000, true)),
    ];
    let plan = decide_for_kept(&members, 1);
    assert_eq!(plan.primary, None, "{plan:?}");
    assert!(plan.commands.is_empty(), "{plan:?}");
    assert!(
        plan.waiting
            .as_deref()
            .is_some_and(|w| w.contains("r-1 holds data but cannot take over")),
        "{plan:?}"
    );
}

/// Decides for a cluster scaled down to `kept` pods.
fn decide_for_kept(members: &[Member], kept: i32) -> Plan {
    decide(
        members,
        &Policy {
            kept,
            desired: kept,
            ..policy(kept)
        },
    )
}

#[test]
fn a_redis_that_restarted_with_data_loses_its_clients_when_it_is_pointed_at_the_primary() {
    let unassigned = |keys: u64| {
        let mut restarted = redis(
            RedisRole::Replica {
                host: crate::redis::UNASSIGNED_HOST.into(),
                port: crate::redis::UNASSIGNED_PORT,
                link_up: false,
                syncing: false,
            },
            0,
        );
        restarted.keys = keys;
        Seen::Answered(restarted)
    };
    let members = [
        member(0, P, true, primary(100)),
        // The former primary, back from a crash with its data: clients reached it through the
        // primary Service while its pod had the label.
        member(1, None, false, unassigned(50)),
        // A new pod: nobody has connected to it.
        member(2, None, false, unassigned(0)),
    ];
    let plan = decide_for(&members, 3);
    assert_eq!(
        commands(&plan)
            .into_iter()
            .filter(|(_, c)| !matches!(c, Command::Configure(_)))
            .collect::<Vec<_>>(),
        [
            ("r-1", Command::Demote { host: ip(0) }),
            ("r-2", Command::Follow { host: ip(0) }),
        ]
    );
}

#[test]
fn a_replica_that_was_the_primary_moments_ago_loses_its_clients_while_routing_follows() {
    let with_clients = |clients: u64| {
        let mut seen = replica_of(0, 100, true);
        if let Seen::Answered(redis) = &mut seen {
            // The operator's own connection is one of them.
            redis.stats.connected_clients = clients;
        }
        seen
    };
    let cases = [
        // (lost the role lately, connected clients, disconnected, why)
        (true, 2, true, "a client besides the operator"),
        (true, 1, false, "the operator alone"),
        (
            false,
            2,
            false,
            "its role went long ago: readers of the replicas Service",
        ),
    ];
    for (lately_demoted, clients, disconnected, why) in cases {
        let mut former = member(1, Some(Role::Replica), true, with_clients(clients));
        former.lately_demoted = lately_demoted;
        let members = [member(0, P, true, primary(100)), former];
        let plan = decide_for(&members, 2);
        let sent = commands(&plan)
            .into_iter()
            .any(|(pod, c)| pod == "r-1" && c == Command::Disconnect);
        assert_eq!(sent, disconnected, "{why}");
        assert_eq!(plan.in_role, 2, "{why}: it counts in its role all the same");
    }
}
