use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::fixtures::{at, cluster, restarted, statefulset, sts_status, waiting_pod, with_status};
use crate::topology::{Change, Outage, Reason, RoleReport};

const GRACE: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(600);

fn previous(phase: Phase) -> RedisClusterStatus {
    RedisClusterStatus {
        phase,
        ..RedisClusterStatus::default()
    }
}

struct Case {
    name: &'static str,
    desired: i32,
    previous: Option<Phase>,
    statefulset: Option<StatefulSetStatus>,
    /// Bumps the StatefulSet's generation past what its controller has observed.
    generation_lag: bool,
    in_sync: bool,
    blocker: Option<Blocker>,
    /// What Redis says, when it is not simply that every pod the StatefulSet counts as ready
    /// is ready in its role.
    roles: Option<RoleReport>,
    phase: Phase,
    reason: &'static str,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: "",
            desired: 3,
            previous: None,
            statefulset: Some(sts_status(3, 3)),
            generation_lag: false,
            in_sync: true,
            blocker: None,
            roles: None,
            phase: Phase::Running,
            reason: "AllReplicasReady",
        }
    }
}

fn run(case: &Case) -> Assessment {
    let base = cluster(case.desired, "redis:7.0");
    let cluster = match case.previous {
        Some(phase) => with_status(base, previous(phase)),
        None => base,
    };
    let sts = case.statefulset.clone().map(|status| {
        let mut sts = statefulset(&cluster, status);
        if case.generation_lag {
            sts.metadata.generation = Some(2);
        }
        sts
    });
    let roles = case
        .roles
        .clone()
        .unwrap_or_else(|| roles_agreeing_with(sts.as_ref()));
    assess(
        &cluster,
        &Facts {
            statefulset: sts.as_ref(),
            pods: &[],
            statefulset_in_sync: case.in_sync,
            blocker: case.blocker.as_ref(),
            roles: &roles,
            primary_change: None,
            storage: None,
            pod_config: None,
            passwords: None,
            now: at(0),
            failure_grace: GRACE,
            progress_deadline: DEADLINE,
        },
    )
}

/// Assesses `cluster` with an in-sync StatefulSet `sts`, these pods and this blocker, at `now`.
fn look(
    cluster: &RedisCluster,
    sts: &StatefulSet,
    pods: &[&Pod],
    blocker: Option<&Blocker>,
    now: Timestamp,
) -> Assessment {
    assess(
        cluster,
        &Facts {
            statefulset: Some(sts),
            pods,
            statefulset_in_sync: true,
            blocker,
            roles: &roles_agreeing_with(Some(sts)),
            primary_change: None,
            storage: None,
            pod_config: Some(&crate::pod_config::pod_config(&cluster.spec, None, None)),
            passwords: None,
            now,
            failure_grace: GRACE,
            progress_deadline: DEADLINE,
        },
    )
}

/// Roles as Redis reports them when every pod the StatefulSet counts as ready is ready in its
/// role, pod 0 the primary.
fn roles_agreeing_with(sts: Option<&StatefulSet>) -> RoleReport {
    let status = sts.and_then(|s| s.status.as_ref());
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    RoleReport {
        primary: (ready > 0).then(|| format!("{}-0", crate::fixtures::NAME)),
        in_role: ready,
        // The pods the StatefulSet counts as updated were made for the spec's config.
        updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
        ..RoleReport::default()
    }
}

fn ready_reason(status: &RedisClusterStatus) -> String {
    status.condition(READY).unwrap().reason.clone()
}

#[test]
fn phase_table() {
    let partial = |replicas, ready, updated| StatefulSetStatus {
        updated_replicas: Some(updated),
        ..sts_status(replicas, ready)
    };
    let linked = |in_role: i32, waiting: &str| RoleReport {
        primary: Some("x-0".into()),
        in_role,
        updated: 3,
        waiting: Some(waiting.into()),
        ..RoleReport::default()
    };
    let cases = [
        Case {
            name: "every pod ready, a replica not linked yet",
            roles: Some(linked(2, "pod x-2 has no link to the primary")),
            phase: Phase::Scaling,
            reason: "WaitingForReplication",
            ..Case::default()
        },
        Case {
            name: "every pod ready, no primary chosen",
            previous: Some(Phase::Pending),
            roles: Some(RoleReport {
                waiting: Some("no primary yet: pod x-0 has no address yet".into()),
                ..RoleReport::default()
            }),
            phase: Phase::Pending,
            reason: "WaitingForFirstPod",
            ..Case::default()
        },
        Case {
            name: "a Running cluster whose replica unlinks",
            previous: Some(Phase::Running),
            roles: Some(linked(2, "pod x-1 is syncing with the primary")),
            phase: Phase::Scaling,
            reason: "WaitingForReplication",
            ..Case::default()
        },
        Case {
            name: "all in role but no primary recorded cannot be Running",
            roles: Some(RoleReport {
                in_role: 3,
                updated: 3,
                ..RoleReport::default()
            }),
            phase: Phase::Scaling,
            reason: "WaitingForReplication",
            ..Case::default()
        },
        Case {
            name: "no StatefulSet yet",
            statefulset: None,
            phase: Phase::Pending,
            reason: "Creating",
            ..Case::default()
        },
        Case {
            name: "StatefulSet without any status",
            statefulset: Some(StatefulSetStatus::default()),
            phase: Phase::Pending,
            reason: "WaitingForFirstPod",
            ..Case::default()
        },
        Case {
            name: "pods exist, none ready yet",
            previous: Some(Phase::Pending),
            statefulset: Some(sts_status(3, 0)),
            phase: Phase::Pending,
            reason: "WaitingForFirstPod",
            ..Case::default()
        },
        Case {
            name: "first pod ready",
            previous: Some(Phase::Pending),
            statefulset: Some(sts_status(3, 1)),
            phase: Phase::Scaling,
            reason: "WaitingForReadiness",
            ..Case::default()
        },
        Case {
            name: "all ready and rolled out",
            previous: Some(Phase::Scaling),
            ..Case::default()
        },
        Case {
            name: "all ready, but we just changed the StatefulSet",
            previous: Some(Phase::Running),
            in_sync: false,
            phase: Phase::Scaling,
            reason: "Applying",
            ..Case::default()
        },
        Case {
            name: "StatefulSet controller has not seen the latest generation",
            previous: Some(Phase::Running),
            generation_lag: true,
            phase: Phase::Scaling,
            reason: "WaitingForStatefulSetController",
            ..Case::default()
        },
        Case {
            name: "scaling up: 3 of 5 exist",
            desired: 5,
            previous: Some(Phase::Running),
            statefulset: Some(sts_status(3, 3)),
            phase: Phase::Scaling,
            reason: "ScalingReplicas",
            ..Case::default()
        },
        Case {
            name: "scaling down: 5 still exist for 2 desired",
            desired: 2,
            previous: Some(Phase::Running),
            statefulset: Some(sts_status(5, 5)),
            phase: Phase::Scaling,
            reason: "ScalingReplicas",
            ..Case::default()
        },
        Case {
            name: "rolling update: 1 of 3 on the new revision",
            previous: Some(Phase::Running),
            statefulset: Some(StatefulSetStatus {
                update_revision: Some("rev-2".to_owned()),
                ..partial(3, 3, 1)
            }),
            phase: Phase::Scaling,
            reason: "RollingUpdate",
            ..Case::default()
        },
        Case {
            name: "every pod lost readiness after running",
            previous: Some(Phase::Running),
            statefulset: Some(sts_status(3, 0)),
            phase: Phase::Scaling,
            reason: "WaitingForReadiness",
            ..Case::default()
        },
        Case {
            name: "recovered from Failed",
            previous: Some(Phase::Failed),
            ..Case::default()
        },
        Case {
            name: "a child is not ours",
            blocker: Some(Blocker::NotOwned {
                kind: "StatefulSet".to_owned(),
                name: "cache".to_owned(),
            }),
            phase: Phase::Failed,
            reason: "ChildNotOwned",
            ..Case::default()
        },
        Case {
            name: "the API server rejected a child",
            blocker: Some(Blocker::Rejected {
                kind: "StatefulSet".to_owned(),
                message: "spec.template: Invalid value".to_owned(),
            }),
            phase: Phase::Failed,
            reason: "ChildRejected",
            ..Case::default()
        },
    ];
    for case in &cases {
        let assessment = run(case);
        assert_eq!(assessment.status.phase, case.phase, "{}", case.name);
        assert_eq!(
            ready_reason(&assessment.status),
            case.reason,
            "{}",
            case.name
        );
        // On the way to Running with a StatefulSet, the progress deadline is the deadline away.
        let deadline = (matches!(case.phase, Phase::Pending | Phase::Scaling)
            && case.statefulset.is_some())
        .then_some(DEADLINE);
        assert_eq!(assessment.recheck_after, deadline, "{}", case.name);
    }
}

#[test]
fn counts_selector_and_generation_are_reported() {
    let assessment = run(&Case {
        desired: 5,
        statefulset: Some(StatefulSetStatus {
            ready_replicas: None,
            ..sts_status(4, 0)
        }),
        previous: Some(Phase::Scaling),
        ..Case::default()
    });
    let status = assessment.status;
    assert_eq!(status.ready_replicas, 0, "absent readyReplicas counts as 0");
    assert_eq!(status.replicas, 4);
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/instance=cache,app.kubernetes.io/name=redis")
    );
    let none = run(&Case {
        statefulset: None,
        ..Case::default()
    });
    assert_eq!((none.status.ready_replicas, none.status.replicas), (0, 0));
}

#[test]
fn conditions_follow_the_phase() {
    // The last column, PrimaryAvailable, follows the roles, not the phase: no StatefulSet,
    // no primary.
    let expected = [
        (Phase::Running, ["True", "False", "False", "True"]),
        (Phase::Scaling, ["False", "True", "False", "True"]),
        (Phase::Pending, ["False", "True", "False", "False"]),
        (Phase::Failed, ["False", "False", "True", "True"]),
    ];
    let cases = [
        Case::default(),
        Case {
            previous: Some(Phase::Running),
            in_sync: false,
            ..Case::default()
        },
        Case {
            statefulset: None,
            ..Case::default()
        },
        Case {
            blocker: Some(Blocker::NotOwned {
                kind: "Service".to_owned(),
                name: "cache".to_owned(),
            }),
            ..Case::default()
        },
    ];
    for ((phase, statuses), case) in expected.iter().zip(&cases) {
        let status = run(case).status;
        assert_eq!(status.phase, *phase);
        let got: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (READY, statuses[0]),
                (PROGRESSING, statuses[1]),
                (DEGRADED, statuses[2]),
                (PRIMARY_AVAILABLE, statuses[3])
            ],
            "{phase}"
        );
        for condition in &status.conditions {
            assert!(!condition.reason.is_empty() && !condition.reason.contains(' '));
            assert!(!condition.message.is_empty());
            assert_eq!(condition.observed_generation, Some(1));
        }
    }
}

#[test]
fn not_owned_message_names_the_object() {
    let status = run(&Case {
        blocker: Some(Blocker::NotOwned {
            kind: "StatefulSet".to_owned(),
            name: "cache".to_owned(),
        }),
        ..Case::default()
    })
    .status;
    let degraded = status.condition(DEGRADED).unwrap();
    assert!(
        degraded.message.contains("StatefulSet cache"),
        "{}",
        degraded.message
    );
}

#[test]
fn last_transition_time_moves_only_when_the_status_flips() {
    let first = cluster(3, "redis:7.0");
    let sts = statefulset(&first, sts_status(3, 3));
    let observe = |cluster: &RedisCluster, now| look(cluster, &sts, &[], None, now).status;
    let running = observe(&first, at(0));
    let changed_at = |status: &RedisClusterStatus, type_| {
        status
            .condition(type_)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(changed_at(&running, READY), Time(at(0)));

    // Same verdict later: nothing moves, so the status is equal and nothing is written.
    let again = observe(&with_status(first.clone(), running.clone()), at(60));
    assert_eq!(again, running);

    // Ready flips to False: only that condition's time moves.
    let blocker = Blocker::NotOwned {
        kind: "Service".to_owned(),
        name: "cache".to_owned(),
    };
    let failed = look(
        &with_status(first.clone(), running.clone()),
        &sts,
        &[],
        Some(&blocker),
        at(120),
    )
    .status;
    assert_eq!(changed_at(&failed, READY), Time(at(120)));
    assert_eq!(
        changed_at(&failed, PROGRESSING),
        Time(at(0)),
        "Progressing stayed False"
    );
}

#[test]
fn stuck_pods_fail_the_cluster_only_after_the_grace_period() {
    let cluster = with_status(cluster(3, "redis:7.0"), previous(Phase::Scaling));
    let sts = statefulset(&cluster, sts_status(3, 2));
    for reason in crate::pod::STUCK_REASONS {
        let pod = waiting_pod(2, reason, at(0));
        let pods = [&pod];
        let observe = |cluster: &RedisCluster, now| look(cluster, &sts, &pods, None, now);
        let early = observe(&cluster, at(30));
        assert_eq!(
            early.status.phase,
            Phase::Scaling,
            "{reason} inside the grace period"
        );
        assert_eq!(
            early.recheck_after,
            Some(Duration::from_secs(90)),
            "{reason}"
        );

        let late = observe(&cluster, at(120));
        assert_eq!(
            late.status.phase,
            Phase::Failed,
            "{reason} after the grace period"
        );
        assert_eq!(ready_reason(&late.status), reason);
        assert_eq!(late.recheck_after, None);
        let message = &late.status.conditions[0].message;
        assert!(
            message.contains("cache-2") && message.contains(reason),
            "{message}"
        );
        // The message must not change from one look to the next, or it would be rewritten.
        let later = observe(&with_status(cluster.clone(), late.status.clone()), at(500));
        assert_eq!(later.status, late.status, "{reason}");
    }
}

#[test]
fn waiting_for_other_reasons_is_not_stuck() {
    let cluster = with_status(cluster(3, "redis:7.0"), previous(Phase::Scaling));
    let sts = statefulset(&cluster, sts_status(3, 2));
    let pod = waiting_pod(2, "ContainerCreating", at(0));
    let assessment = look(&cluster, &sts, &[&pod], None, at(3600));
    assert_eq!(assessment.status.phase, Phase::Scaling);
    // Not stuck by its reason; only the progress deadline (from now, the first look) applies.
    assert_eq!(assessment.recheck_after, Some(DEADLINE));
}

#[test]
fn a_stuck_pod_does_not_matter_once_every_replica_is_ready() {
    let cluster = with_status(cluster(3, "redis:7.0"), previous(Phase::Running));
    let sts = statefulset(&cluster, sts_status(3, 3));
    let pod = waiting_pod(3, "CrashLoopBackOff", at(0));
    let assessment = look(&cluster, &sts, &[&pod], None, at(3600));
    assert_eq!(assessment.status.phase, Phase::Running);
}

#[test]
fn a_stuck_pod_made_for_an_earlier_spec_is_not_waited_for() {
    // The image was fixed: the pod stuck on the bad one is replaced.
    let cluster = with_status(cluster(3, "redis:7.2"), previous(Phase::Failed));
    let sts = statefulset(&cluster, sts_status(3, 2));
    let mut pod = waiting_pod(2, "ImagePullBackOff", at(0));
    let made_for = |pod: &mut Pod, image: &str| {
        pod.annotations_mut().insert(
            crate::names::POD_CONFIG_ANNOTATION.to_owned(),
            crate::pod_config::pod_config(&crate::fixtures::cluster(3, image).spec, None, None),
        );
    };
    made_for(&mut pod, "redis:does-not-exist");
    let assessment = look(&cluster, &sts, &[&pod], None, at(3600));
    assert_eq!(assessment.status.phase, Phase::Scaling, "outdated pod");
    assert_eq!(
        assessment.recheck_after,
        Some(DEADLINE),
        "only the progress deadline"
    );

    made_for(&mut pod, "redis:7.2");
    let assessment = look(&cluster, &sts, &[&pod], None, at(3600));
    assert_eq!(assessment.status.phase, Phase::Failed, "current pod");

    // A pod of an earlier release has no annotation: the image it runs decides.
    pod.metadata.annotations = None;
    pod.spec = Some(crate::fixtures::earlier_release_spec("redis:7.2"));
    let assessment = look(&cluster, &sts, &[&pod], None, at(3600));
    assert_eq!(
        assessment.status.phase,
        Phase::Failed,
        "current pod, earlier release"
    );
}

#[test]
fn pods_that_are_not_ready_are_named_with_their_restarts() {
    let cluster = with_status(cluster(3, "redis:7.0"), previous(Phase::Running));
    let sts = statefulset(&cluster, sts_status(3, 1));
    // Its Redis exited and the container is starting again (waiting for nothing stuck).
    let restarted = restarted(waiting_pod(2, "ContainerCreating", at(0)), 2, "Error", 137);
    let plain = waiting_pod(1, "ContainerCreating", at(0));
    let mut ready = waiting_pod(0, "ContainerCreating", at(0));
    ready.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".to_owned();

    let assessment = look(&cluster, &sts, &[&restarted, &ready, &plain], None, at(10));
    assert_eq!(assessment.status.phase, Phase::Scaling);
    assert_eq!(
        assessment.status.conditions[0].message,
        "1/3 Redis pods are ready in their role, 3 exist, 3 run the current spec; not ready: cache-1, \
         cache-2 (container redis restarted 2 times, last exit Error (code 137))"
    );
    // The same observation gives the same message: no rewrite on the next look.
    let seen = with_status(cluster.clone(), assessment.status.clone());
    let again = look(&seen, &sts, &[&plain, &ready, &restarted], None, at(20));
    assert_eq!(again.status, assessment.status);
}

/// A cluster that was Scaling since `since` with these counts, and a StatefulSet that still
/// reports them: `exist` pods of `desired`, `ready` of them ready.
fn stalled(desired: i32, exist: i32, ready: i32, since: i64) -> (RedisCluster, StatefulSet) {
    let base = cluster(desired, "redis:7.0");
    let status = StatefulSetStatus {
        replicas: exist,
        updated_replicas: Some(exist),
        ..sts_status(exist, ready)
    };
    let sts = statefulset(&base, status);
    let first = look(&base, &sts, &[], None, at(since)).status;
    assert_eq!(first.last_progress_time, Some(Time(at(since))));
    (with_status(base, first), sts)
}

#[test]
fn counts_that_do_not_move_until_the_progress_deadline_fail_the_cluster() {
    let (cluster, sts) = stalled(3, 1, 1, 0);
    // Slow progress is not an error: the grace period of a stuck container does not apply.
    let past_grace = look(&cluster, &sts, &[], None, at(121));
    assert_eq!(past_grace.status.phase, Phase::Scaling);
    let early = look(&cluster, &sts, &[], None, at(599));
    assert_eq!(early.status.phase, Phase::Scaling);
    assert_eq!(early.recheck_after, Some(Duration::from_secs(1)));
    assert_eq!(
        early.status,
        cluster.status.clone().unwrap(),
        "nothing to write yet"
    );

    let late = look(&cluster, &sts, &[], None, at(600));
    assert_eq!(late.status.phase, Phase::Failed);
    let degraded = late.status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "PodsNotCreated");
    assert!(
        degraded.message.contains("1/3 Redis pods exist")
            && degraded
                .message
                .contains("kubectl describe statefulset cache"),
        "{}",
        degraded.message
    );
    // Failed stays put, message and all, while nothing moves.
    let failed = with_status(cluster.clone(), late.status.clone());
    assert_eq!(look(&failed, &sts, &[], None, at(900)).status, late.status);

    // The cause goes (the quota is raised): a pod is created, and the cluster recovers.
    let moving = statefulset(
        &failed,
        StatefulSetStatus {
            replicas: 2,
            updated_replicas: Some(2),
            ..sts_status(2, 1)
        },
    );
    let recovered = look(&failed, &moving, &[], None, at(901));
    assert_eq!(recovered.status.phase, Phase::Scaling);
    assert_eq!(recovered.status.last_progress_time, Some(Time(at(901))));
}

#[test]
fn a_stall_says_what_holds_the_pods() {
    let (cluster, sts) = stalled(2, 2, 1, 0);
    let mut unscheduled = waiting_pod(1, "ContainerCreating", at(0));
    let conditions = unscheduled
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap();
    conditions.push(k8s_openapi::api::core::v1::PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "False".to_owned(),
        message: Some("0/1 nodes are available: 1 Insufficient memory.".to_owned()),
        ..Default::default()
    });
    let creating = waiting_pod(1, "ContainerCreating", at(0));
    let cases = [
        (
            vec![&unscheduled],
            "PodsUnschedulable",
            "Insufficient memory",
        ),
        (
            vec![&creating],
            "ContainersNotStarting",
            "waited in ContainerCreating",
        ),
        (
            vec![],
            "NoProgress",
            "1/2 Redis pods are ready in their role and nothing changed",
        ),
    ];
    for (pods, reason, says) in cases {
        let status = look(&cluster, &sts, &pods, None, at(600)).status;
        assert_eq!(status.phase, Phase::Failed, "{reason}");
        let degraded = status.condition(DEGRADED).unwrap();
        assert_eq!(degraded.reason, reason);
        assert!(degraded.message.contains(says), "{}", degraded.message);
    }
}

#[test]
fn a_spec_change_restarts_the_deadline_and_running_clears_it() {
    let (cluster, sts) = stalled(3, 1, 1, 0);
    let mut changed = cluster.clone();
    changed.metadata.generation = Some(2);
    let status = look(&changed, &sts, &[], None, at(119)).status;
    assert_eq!(status.last_progress_time, Some(Time(at(119))));

    let running = statefulset(&cluster, sts_status(3, 3));
    let status = look(&cluster, &running, &[], None, at(500)).status;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.last_progress_time, None);
}

#[test]
fn ready_replicas_and_primary_come_from_the_roles_not_the_statefulset() {
    let roles = RoleReport {
        primary: Some("x-1".into()),
        in_role: 1,
        waiting: Some("pod x-2 is syncing with the primary".into()),
        ..RoleReport::default()
    };
    let assessment = run(&Case {
        roles: Some(roles),
        ..Case::default()
    });
    let status = assessment.status;
    assert_eq!((status.ready_replicas, status.replicas), (1, 3));
    assert_eq!(status.primary.as_deref(), Some("x-1"));
    let message = &status.condition(READY).unwrap().message;
    assert!(
        message.starts_with("1/3 Redis pods are ready in their role")
            && message.contains("; pod x-2 is syncing with the primary"),
        "{message}"
    );
}

#[test]
fn primary_available_says_how_the_primary_came_and_why_none_serves() {
    let primary_condition = |roles: RoleReport, previous: Option<RedisClusterStatus>| {
        let case = Case {
            roles: Some(roles),
            ..Case::default()
        };
        let mut case_cluster = cluster(case.desired, "redis:7.0");
        if let Some(previous) = previous {
            case_cluster = with_status(case_cluster, previous);
        }
        let sts = statefulset(&case_cluster, sts_status(3, 3));
        let status = assess(
            &case_cluster,
            &Facts {
                statefulset: Some(&sts),
                pods: &[],
                statefulset_in_sync: true,
                blocker: None,
                roles: case.roles.as_ref().unwrap(),
                primary_change: case.roles.as_ref().unwrap().change.as_ref(),
                storage: None,
                pod_config: None,
                passwords: None,
                now: at(0),
                failure_grace: GRACE,
                progress_deadline: DEADLINE,
            },
        )
        .status;
        let condition = status.condition(PRIMARY_AVAILABLE).unwrap().clone();
        (status, condition)
    };
    let (_, silent) = primary_condition(
        RoleReport {
            outage: Some(Outage::PrimaryNotAnswering),
            waiting: Some("the primary x-0 does not answer: timed out".into()),
            ..RoleReport::default()
        },
        None,
    );
    assert_eq!(
        (silent.status.as_str(), silent.reason.as_str()),
        ("False", "PrimaryNotAnswering")
    );
    assert_eq!(silent.message, "the primary x-0 does not answer: timed out");

    let change = Change {
        from: Some("x-0".into()),
        to: "x-2".into(),
        reason: Reason::PrimaryNotAnswering,
        trouble: Duration::from_millis(5200),
    };
    let (after, failed_over) = primary_condition(
        RoleReport {
            primary: Some("x-2".into()),
            change: Some(change),
            in_role: 3,
            ..RoleReport::default()
        },
        None,
    );
    assert_eq!(
        (failed_over.status.as_str(), failed_over.reason.as_str()),
        ("True", "FailedOver")
    );
    assert_eq!(
        failed_over.message,
        "pod x-2 is the primary: x-0 did not answer for 5.2s"
    );
    // The next look sees the same primary and no change: the condition stays as written, so
    // the status is not written again.
    let (_, kept) = primary_condition(
        RoleReport {
            primary: Some("x-2".into()),
            in_role: 3,
            ..RoleReport::default()
        },
        Some(after.clone()),
    );
    assert_eq!(kept, failed_over);
    let (_, other) = primary_condition(
        RoleReport {
            primary: Some("x-1".into()),
            in_role: 3,
            ..RoleReport::default()
        },
        Some(after),
    );
    assert_eq!(other.reason, "Assigned");
}

#[test]
fn a_pending_status_that_only_refines_the_last_one_waits_for_the_detail_hold() {
    let pending = RedisClusterStatus {
        phase: Phase::Pending,
        observed_generation: Some(1),
        conditions: vec![condition(
            &[],
            READY,
            false,
            "WaitingForFirstPod",
            "no pod yet",
            Some(1),
            at(0),
        )],
        ..RedisClusterStatus::default()
    };
    let with = |change: &dyn Fn(&mut RedisClusterStatus)| {
        let mut status = pending.clone();
        change(&mut status);
        status
    };
    let counted = with(&|s| s.replicas = 1);
    let reworded = with(&|s| s.conditions[0].message = "pod a-0 has no address yet".to_owned());
    let first_primary = with(&|s| s.primary = Some("a-0".to_owned()));
    let running = with(&|s| s.phase = Phase::Running);
    let new_generation = with(&|s| s.observed_generation = Some(2));
    let turned = with(&|s| s.conditions[0].status = "True".to_owned());
    let new_reason = with(&|s| s.conditions[0].reason = "AllReplicasReady".to_owned());
    let with_primary = with(&|s| s.primary = Some("a-0".to_owned()));
    let other_primary = with(&|s| s.primary = Some("a-1".to_owned()));
    let hold = DETAIL_HOLD;
    let second = Duration::from_secs(1);
    // (why, status last written, status now, since the last write, expected)
    type Case<'a> = (
        &'a str,
        Option<&'a RedisClusterStatus>,
        &'a RedisClusterStatus,
        Option<Duration>,
        Write,
    );
    let scaling = with(&|s| s.phase = Phase::Scaling);
    let scaling_reworded = with(&|s| {
        s.phase = Phase::Scaling;
        s.conditions[0].message = "not ready: a-2 (container redis restarted)".to_owned();
    });
    let cases: [Case; 13] = [
        (
            "a Scaling cluster's message: every step shows",
            Some(&scaling),
            &scaling_reworded,
            Some(second),
            Write::Now,
        ),
        ("no status yet", None, &pending, Some(second), Write::Now),
        (
            "nothing new",
            Some(&pending),
            &pending,
            Some(second),
            Write::Not,
        ),
        (
            "a count, just after a write",
            Some(&pending),
            &counted,
            Some(second),
            Write::After(hold - second),
        ),
        (
            "a count, long after",
            Some(&pending),
            &counted,
            Some(hold),
            Write::Now,
        ),
        (
            "a count, nothing written since start",
            Some(&pending),
            &counted,
            None,
            Write::Now,
        ),
        (
            "a message",
            Some(&pending),
            &reworded,
            Some(second),
            Write::After(hold - second),
        ),
        (
            "a first primary",
            Some(&pending),
            &first_primary,
            Some(second),
            Write::After(hold - second),
        ),
        (
            "another primary",
            Some(&with_primary),
            &other_primary,
            Some(second),
            Write::Now,
        ),
        (
            "a new phase",
            Some(&pending),
            &running,
            Some(second),
            Write::Now,
        ),
        (
            "a spec newly observed",
            Some(&pending),
            &new_generation,
            Some(second),
            Write::Now,
        ),
        (
            "a condition turns",
            Some(&pending),
            &turned,
            Some(second),
            Write::Now,
        ),
        (
            "a condition's new reason, in the same phase",
            Some(&pending),
            &new_reason,
            Some(second),
            Write::After(hold - second),
        ),
    ];
    for (why, written, next, since, expected) in cases {
        assert_eq!(when_to_write(written, next, since), expected, "{why}");
    }
}
