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
            role: RedisRole::Primary,
            offset: 1180
        })
    );
    assert_eq!(
        Replication::parse(INFO_REPLICA),
        Ok(Replication {
            role: RedisRole::Replica {
                host: "10.244.0.5".into(),
                port: 6379,
                link_up: true,
                syncing: false
            },
            offset: 1170
        })
    );
    assert_eq!(
        Replication::parse(INFO_UNASSIGNED),
        Ok(Replication {
            role: RedisRole::Replica {
                host: UNASSIGNED_HOST.into(),
                port: UNASSIGNED_PORT,
                link_up: false,
                syncing: false
            },
            offset: 0
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
    assert_eq!(ordinal("test-redis-0"), Some(0));
    assert_eq!(ordinal("a-b-12"), Some(12));
    assert_eq!(ordinal("nodash"), None);
    assert_eq!(ordinal("x-y"), None);
}

fn ip(ordinal: i32) -> String {
    format!("10.244.0.{}", 10 + ordinal)
}

fn primary(offset: i64) -> Seen {
    Seen::Answered(Replication {
        role: RedisRole::Primary,
        offset,
    })
}

fn replica_of(ordinal: i32, offset: i64, link_up: bool) -> Seen {
    Seen::Answered(Replication {
        role: RedisRole::Replica {
            host: ip(ordinal),
            port: 6379,
            link_up,
            syncing: false,
        },
        offset,
    })
}

fn unassigned(offset: i64) -> Seen {
    Seen::Answered(Replication {
        role: RedisRole::Replica {
            host: UNASSIGNED_HOST.into(),
            port: UNASSIGNED_PORT,
            link_up: false,
            syncing: false,
        },
        offset,
    })
}

fn member(ordinal: i32, label: Option<Role>, ready: bool, seen: Seen) -> Member {
    Member {
        name: format!("r-{ordinal}"),
        ordinal,
        address: (seen != Seen::NoAddress).then(|| ip(ordinal)),
        ready,
        terminating: false,
        label,
        seen,
    }
}

fn follow(ordinal: i32) -> Command {
    Command::Follow { host: ip(ordinal) }
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
    let plan = decide(&members, 3);
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
    let plan = decide(&members, 3);
    assert_eq!(
        plan,
        Plan {
            primary: Some("r-0".into()),
            in_role: 3,
            ..Plan::default()
        }
    );
}

#[test]
fn replicas_count_only_once_linked_synced_and_ready() {
    let syncing = Seen::Answered(Replication {
        role: RedisRole::Replica {
            host: ip(0),
            port: 6379,
            link_up: false,
            syncing: true,
        },
        offset: 0,
    });
    let cases = [
        (syncing, true, "pod r-1 is syncing with the primary"),
        (
            replica_of(0, 10, false),
            true,
            "pod r-1 has no link to the primary",
        ),
        (replica_of(0, 10, true), false, "pod r-1 is not ready"),
        (
            Seen::Silent("timed out".into()),
            true,
            "pod r-1 does not answer: timed out",
        ),
        (Seen::NoAddress, false, "pod r-1 has no address yet"),
    ];
    for (seen, ready, reason) in cases {
        let members = [member(0, P, true, primary(10)), member(1, R, ready, seen)];
        let plan = decide(&members, 2);
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
    let plan = decide(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(
        commands(&plan),
        [("r-0", follow(1)), ("r-2", follow(1))],
        "already a primary: no promotion"
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
    let plan = decide(&members, 3);
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
        member(1, R, false, Seen::Silent("connection refused".into())),
    ];
    let plan = decide(&members, 2);
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
    let plan = decide(&members, 2);
    assert_eq!(plan.primary, None);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("no primary yet: pod r-0 has no address yet")
    );
    // A pod with data outranks the silent one's unknowns only when it has some to compare.
    let members = [
        member(0, R, true, replica_of(5, 700, false)),
        member(1, R, false, Seen::Silent("timed out".into())),
    ];
    assert_eq!(decide(&members, 2).primary.as_deref(), Some("r-0"));
}

#[test]
fn a_silent_labelled_primary_keeps_its_role_and_nothing_is_promoted() {
    let members = [
        member(0, P, false, Seen::Silent("timed out".into())),
        member(1, R, true, replica_of(0, 80, true)),
    ];
    let plan = decide(&members, 2);
    assert_eq!(plan.primary, None);
    assert!(plan.commands.is_empty() && plan.relabel.is_empty() && plan.demote.is_empty());
    assert_eq!(
        plan.waiting.as_deref(),
        Some("the primary r-0 does not answer: timed out")
    );
}

#[test]
fn a_primary_that_restarted_unassigned_is_promoted_again() {
    // Its Redis restarted in the pod and reloaded its append-only file.
    let members = [
        member(0, P, false, unassigned(0)),
        member(1, R, true, replica_of(0, 80, false)),
    ];
    let plan = decide(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-0"));
    assert_eq!(commands(&plan), [("r-0", Command::Promote)]);
    assert!(plan.relabel.is_empty());
}

#[test]
fn two_labelled_primaries_keep_the_one_redis_says_is_primary() {
    let members = [
        member(0, P, true, replica_of(1, 40, true)),
        member(1, P, true, primary(40)),
        member(2, P, false, Seen::Silent("timed out".into())),
    ];
    let plan = decide(&members, 3);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(plan.demote, [relabel(0, R), relabel(2, None)]);
    assert!(plan.commands.is_empty());
}

#[test]
fn pods_leaving_or_terminating_are_left_alone() {
    let mut terminating = member(0, P, true, primary(10));
    terminating.terminating = true;
    let members = [
        terminating,
        member(1, R, true, replica_of(0, 10, false)),
        member(2, R, true, replica_of(0, 12, false)),
    ];
    // Scaled to 2: r-2 is on its way out and is not a candidate.
    let plan = decide(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-1", Command::Promote)]);
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
    assert_eq!(pods_to_keep(&members, 2), (4, Some("r-3")));
    assert_eq!(pods_to_keep(&members, 4), (4, None));
    assert_eq!(pods_to_keep(&members, 5), (5, None));
    let mut leaving = members.clone();
    leaving[2].terminating = true;
    assert_eq!(pods_to_keep(&leaving, 2), (2, None));
}

#[test]
fn a_pod_that_never_started_is_not_waited_for() {
    // The image was fixed: pod 1 runs the new one, pod 0 still waits on the old, unpullable
    // one, and the StatefulSet replaces pod 0 only once pod 1 is ready.
    let members = [
        member(0, None, false, Seen::NeverStarted("ErrImagePull".into())),
        member(1, None, false, unassigned(0)),
    ];
    let plan = decide(&members, 2);
    assert_eq!(plan.primary.as_deref(), Some("r-1"));
    assert_eq!(commands(&plan), [("r-1", Command::Promote)]);
    assert_eq!(
        plan.waiting.as_deref(),
        Some("pod r-0 never started: ErrImagePull")
    );
}
