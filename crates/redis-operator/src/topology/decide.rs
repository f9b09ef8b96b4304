//! The decision: who is primary, who follows it, and what the roll does next.

use std::cmp::Reverse;
use std::time::Duration;

use super::roll::{next_step, replace_broken};
use super::{
    Change, HANDOVER_RETRY, Member, Outage, Plan, Policy, Reason, RedisRole, Relabel, Replication,
    Role, STOP_TIMEOUT, Seen, silence,
};
use crate::redis::{Command, Settings, UNASSIGNED_HOST, UNASSIGNED_PORT};

/// Who the primary is after this look.
enum Choice<'a> {
    /// The labelled primary stays (promoted again if its Redis restarted with its data).
    Keep(&'a Member),
    Change {
        to: &'a Member,
        from: Option<&'a Member>,
        reason: Reason,
        trouble: Duration,
    },
    /// The primary, on its way out, hands over to `to` first.
    HandOver { from: &'a Member, to: &'a Member },
    /// The primary does not answer: its pod is stopped first (`Plan::stop`).
    Stop(&'a Member),
    /// Nothing changes now.
    Hold {
        primary: Option<&'a Member>,
        outage: Outage,
        urgent: bool,
    },
}

/// Decides roles, failovers, handovers and the next pod of a roll. A pure function of what the
/// pods and their Redis report, so a decision never rests on the operator's memory: one that
/// restarts halfway through a failover or a handover finishes it from what Redis says.
///
/// - The pod labelled primary stays primary while its Redis answers as one. If it restarted
///   (it comes back unassigned), it is promoted again when it reloaded data, and replaced by
///   the replica with the most data when it came back empty: an empty Redis is never a source.
/// - If it follows a pod whose Redis is primary, a handover completed: that pod is primary.
/// - If its pod is being deleted, it hands over to the replica with the highest offset while
///   its Redis still answers as primary (writes paused until that replica has them all); once
///   that Redis is gone, the replica is promoted.
/// - If its Redis is silent for `failover_after`, it is replaced by the replica with the
///   highest offset ([`in_doubt`], [`stop_first`]): only once its replicas no longer hear from it either
///   (otherwise the operator is the one cut off), while a majority of the pods answer, and
///   once its Redis is stopped: its pod is deleted with a short grace period and the kubelet
///   reports the container gone (or, past [`STOP_TIMEOUT`], its node is taken for lost).
/// - With no labelled primary, the pod whose Redis holds the most data is chosen, unless a
///   replica still hears from a primary that does not answer. While no pod that answered
///   holds data, no choice is made until every pod answers.
/// - Every other answering pod follows the primary's IP; one that is a primary is demoted,
///   its clients disconnected. Every Redis gets the policy's settings, the write fence once
///   enough replicas are in sync ([`settings_for`]).
/// - Once every pod is ready in its role: pods of an outdated config are deleted one at a
///   time, replicas first; the primary hands over ([`Command::HandOver`]) to an in-sync,
///   updated replica before its own pod is replaced, and before a scale-down removes its
///   ordinal.
/// - No handover starts while `policy.handover_held`, unless the primary changes.
///
/// The plan is final: nothing edits it after this returns.
pub fn decide(members: &[Member], policy: &Policy) -> Plan {
    let mut active: Vec<&Member> = members
        .iter()
        .filter(|m| !m.terminating && m.ordinal < policy.kept)
        .collect();
    active.sort_by_key(|m| m.ordinal);
    let mut plan = Plan {
        updated: active.iter().filter(|m| !m.is_outdated(policy)).count() as i32,
        ..Plan::default()
    };
    let mut reasons: Vec<String> = Vec::new();
    match choose(&active, members, policy, &mut reasons) {
        Choice::Keep(primary) => assign(
            &mut plan,
            members,
            &active,
            primary,
            None,
            policy,
            &mut reasons,
        ),
        Choice::Change {
            to,
            from,
            reason,
            trouble,
        } => {
            let change = Change {
                from: from.map(|m| m.name.clone()),
                to: to.name.clone(),
                reason,
                trouble,
            };
            assign(
                &mut plan,
                members,
                &active,
                to,
                Some(change),
                policy,
                &mut reasons,
            );
        }
        Choice::HandOver { from, to } => hand_over_leaving(&mut plan, from, to),
        Choice::Stop(old) => {
            plan.stop = Some(old.name.clone());
            plan.outage = Some(Outage::PrimaryNotAnswering);
            plan.urgent = true;
        }
        Choice::Hold {
            primary,
            outage,
            urgent,
        } => {
            plan.primary = primary.map(|m| m.name.clone());
            plan.outage = Some(outage);
            plan.urgent = urgent;
            replace_broken(members, &active, primary, policy, &mut plan, &mut reasons);
        }
    }
    plan.waiting = reasons.into_iter().next();
    hold_back_handover(&mut plan, policy);
    plan
}

/// The primary on its way out hands its last writes over to `to`.
fn hand_over_leaving(plan: &mut Plan, from: &Member, to: &Member) {
    if let Some(host) = to.address.clone() {
        plan.commands.push((
            from.name.clone(),
            Command::HandOver {
                to: to.name.clone(),
                host,
            },
        ));
    }
    plan.outage = Some(Outage::PrimaryLeaving);
    plan.urgent = true;
}

/// Drops the plan's handover while one that failed lately holds it back: one that did not
/// complete paused writes for nothing. A change of primary is a new situation: a handover
/// that failed before it (a leaving primary whose Redis exited halfway, the common case) does
/// not hold back the next one.
fn hold_back_handover(plan: &mut Plan, policy: &Policy) {
    if !policy.handover_held || plan.change.is_some() {
        return;
    }
    let handover = plan
        .commands
        .iter()
        .position(|(_, command)| matches!(command, Command::HandOver { .. }));
    if let Some(index) = handover {
        let (pod, _) = plan.commands.remove(index);
        plan.waiting = Some(format!(
            "the primary {pod} hands over again {}s after the last attempt failed",
            HANDOVER_RETRY.as_secs()
        ));
    }
}

/// Gives `primary` the role (made by `change`, if it changes), takes it from every other pod,
/// points the others at it, and once all is settled takes the next step of a roll.
fn assign(
    plan: &mut Plan,
    members: &[Member],
    active: &[&Member],
    primary: &Member,
    change: Option<Change>,
    policy: &Policy,
    reasons: &mut Vec<String>,
) {
    let Some(primary_address) = primary.address.as_deref() else {
        // Unreachable: only a pod with an address answers.
        return;
    };
    plan.primary = Some(primary.name.clone());
    plan.urgent = change.as_ref().is_some_and(|c| c.reason != Reason::Elected);
    plan.change = change;
    promote(plan, primary, reasons);
    take_the_label_from_others(plan, members, primary, policy);
    for member in active.iter().filter(|m| m.name != primary.name) {
        follow(plan, member, primary_address, reasons);
    }
    let settings = settings_for(primary, primary_address, active, policy);
    for member in active.iter() {
        let observed = member.replication().and_then(|r| r.settings);
        if observed.is_some_and(|observed| observed != settings) {
            plan.commands
                .push((member.name.clone(), Command::Configure(settings)));
        }
        if let Some(command) = member.live_config_command(policy) {
            plan.commands.push((member.name.clone(), command));
        }
    }
    let present: Vec<i32> = active.iter().map(|m| m.ordinal).collect();
    if let Some(missing) = (0..policy.kept).find(|o| !present.contains(o)) {
        reasons.push(format!("pod with ordinal {missing} does not exist yet"));
    }
    // Disconnecting a former primary's clients changes nothing the next step depends on: a
    // roll goes on meanwhile.
    let settled = reasons.is_empty()
        && plan.commands.iter().all(|(_, c)| *c == Command::Disconnect)
        && plan.relabel.is_empty()
        && plan.demote.is_empty()
        && plan.retire.is_empty();
    next_step(members, active, primary, policy, settled, plan, reasons);
}

/// Makes `primary`'s Redis a primary (counting it in its role once it is one and ready), and
/// labels it.
fn promote(plan: &mut Plan, primary: &Member, reasons: &mut Vec<String>) {
    if !primary.replication().is_some_and(Replication::is_primary) {
        plan.commands.push((primary.name.clone(), Command::Promote));
    } else if primary.ready {
        plan.in_role += 1;
    } else {
        reasons.push(format!("the primary {} is not ready", primary.name));
    }
    if primary.label != Some(Role::Primary) {
        plan.relabel.push(Relabel {
            pod: primary.name.clone(),
            role: Some(Role::Primary),
        });
    }
}

/// Every other pod labelled primary loses the label, leaving ones included: answering, it
/// becomes a replica; silent or on its way out, it keeps no role. One whose Redis may take
/// writes (silent, or a primary) loses it before the new primary gets it. One whose Redis is
/// already a read-only replica (a completed handover) loses it just after: removing it first
/// would leave the primary Service without an endpoint for a moment, which kube-proxy (at most
/// one sync a second) can stretch into a second of connections that hang.
fn take_the_label_from_others(
    plan: &mut Plan,
    members: &[Member],
    primary: &Member,
    policy: &Policy,
) {
    let mut others: Vec<&Member> = members.iter().filter(|m| m.name != primary.name).collect();
    others.sort_by_key(|m| m.ordinal);
    for member in others.iter().filter(|m| m.label == Some(Role::Primary)) {
        let stays = !member.terminating && member.ordinal < policy.kept;
        let relabel = Relabel {
            pod: member.name.clone(),
            role: member
                .replication()
                .filter(|_| stays)
                .map(|_| Role::Replica),
        };
        let read_only = member.replication().is_some_and(|r| !r.is_primary());
        if read_only && primary.label != Some(Role::Primary) {
            plan.retire.push(relabel);
        } else {
            plan.demote.push(relabel);
        }
    }
}

/// Points `member` at the primary's address, or counts it in its role when it follows and is
/// linked, synced and ready; labels it a replica if it has no role yet.
fn follow(plan: &mut Plan, member: &Member, primary_address: &str, reasons: &mut Vec<String>) {
    let Some(replication) = member.replication() else {
        reasons.push(format!("pod {} {}", member.name, silence(&member.seen)));
        return;
    };
    if !replication.follows(primary_address) {
        let host = primary_address.to_owned();
        // A Redis that restarted with data follows nobody, and refuses writes; its clients
        // came through a route that still led to its pod (the primary Service, while the pod
        // kept the label): like a demoted primary's, they are disconnected, or a pooled client
        // would get READONLY from it for as long as its connection lasts. A new, empty one
        // has had no clients.
        let restarted = replication.holds_data()
            && matches!(&replication.role, RedisRole::Replica { host, port, .. }
                if host == UNASSIGNED_HOST && *port == UNASSIGNED_PORT);
        let command = if replication.is_primary() || restarted {
            Command::Demote { host }
        } else {
            Command::Follow { host }
        };
        plan.commands.push((member.name.clone(), command));
        reasons.push(format!(
            "pod {} is being pointed at the primary",
            member.name
        ));
    } else if let RedisRole::Replica {
        link_up, syncing, ..
    } = &replication.role
    {
        // Someone besides the operator is connected to a pod that was the primary moments
        // ago: most likely a writer that came through the primary Service before its routing
        // followed the label, and gets READONLY on that connection until it is dropped.
        if member.lately_demoted && replication.stats.connected_clients > 1 {
            plan.commands
                .push((member.name.clone(), Command::Disconnect));
        }
        if *syncing {
            reasons.push(format!("pod {} is syncing with the primary", member.name));
        } else if !link_up {
            reasons.push(format!("pod {} has no link to the primary", member.name));
        } else if !member.ready {
            reasons.push(format!("pod {} is not ready", member.name));
        } else {
            plan.in_role += 1;
        }
    }
    if member.label.is_none() {
        plan.relabel.push(Relabel {
            pod: member.name.clone(),
            role: Some(Role::Replica),
        });
    }
}

/// Who is primary: the labelled one, its successor, or nobody for now.
fn choose<'a>(
    active: &[&'a Member],
    all: &'a [Member],
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Choice<'a> {
    let labelled: Vec<&Member> = active
        .iter()
        .copied()
        .filter(|m| m.label == Some(Role::Primary))
        .collect();
    let answering = labelled
        .iter()
        .copied()
        .filter_map(|m| Some((m, m.replication()?)))
        .max_by_key(|(m, redis)| (redis.is_primary(), redis.offset, Reverse(m.ordinal)));
    if let Some((current, redis)) = answering {
        return keep_answering(active, all, current, redis, reasons);
    }
    if let Some(silent) = labelled.first().copied() {
        return replace_silent(active, all, silent, policy, reasons);
    }
    // None labelled among the pods that stay. One on its way out?
    let leaving = all
        .iter()
        .filter(|m| m.label == Some(Role::Primary) && !active.iter().any(|a| a.name == m.name))
        .max_by_key(|m| (m.replication().is_some(), m.offset()));
    if let Some(leaving) = leaving {
        return replace_leaving(active, all, leaving, policy, reasons);
    }
    // Nobody was ever made primary here (or the label was removed by hand, or the operator
    // stopped between taking it from one pod and giving it to another).
    if let Some(hold) = unlabelled_primary(active, policy, reasons) {
        return hold;
    }
    match elect(active, all, reasons) {
        Some(elected) => Choice::Change {
            to: elected,
            from: None,
            reason: Reason::Elected,
            trouble: Duration::ZERO,
        },
        None => Choice::Hold {
            primary: None,
            outage: Outage::NoPrimaryYet,
            urgent: false,
        },
    }
}

/// With no pod labelled primary: a replica that still hears from a primary that does not
/// answer the operator (or is none of the cluster's pods) says one is alive, and none is
/// elected beside it.
fn unlabelled_primary<'a>(
    active: &[&'a Member],
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Option<Choice<'a>> {
    let answering_primary = |address: &str| {
        active.iter().any(|m| {
            m.address.as_deref() == Some(address)
                && m.replication().is_some_and(Replication::is_primary)
        })
    };
    let (witness, address) = active.iter().find_map(|m| {
        let RedisRole::Replica { host, .. } = &m.replication()?.role else {
            return None;
        };
        (!answering_primary(host) && witness(active, host, policy).is_some()).then_some((m, host))
    })?;
    reasons.push(format!(
        "no pod is labelled primary, but {} still hears from a primary at {address} that does \
         not answer: none is elected beside it",
        witness.name
    ));
    Some(Choice::Hold {
        primary: None,
        outage: Outage::PrimaryUnreachable,
        urgent: false,
    })
}

/// The labelled primary answers: it stays, unless a handover moved its role on, or it came
/// back empty while another pod holds data.
fn keep_answering<'a>(
    active: &[&'a Member],
    all: &[Member],
    current: &'a Member,
    redis: &Replication,
    reasons: &mut Vec<String>,
) -> Choice<'a> {
    if redis.handing_over {
        reasons.push(format!(
            "the primary {} is handing its role over to a replica",
            current.name
        ));
        return Choice::Hold {
            primary: Some(current),
            outage: Outage::SwitchingOver,
            urgent: true,
        };
    }
    if redis.is_primary() {
        return Choice::Keep(current);
    }
    // It follows a pod whose Redis is primary: a handover completed (perhaps ordered by an
    // earlier run of the operator). That pod has every write the old one acknowledged.
    let successor = active.iter().copied().find(|m| {
        m.name != current.name
            && m.replication().is_some_and(Replication::is_primary)
            && m.address.as_deref().is_some_and(|a| redis.follows(a))
    });
    if let Some(successor) = successor {
        return Choice::Change {
            to: successor,
            from: Some(current),
            reason: Reason::Switchover,
            trouble: Duration::ZERO,
        };
    }
    // Its Redis restarted and came back unassigned. With the data of its append-only file it
    // holds every write it acknowledged: promoted again. Empty, it must not become the source
    // that replicas resync from while one of them holds data.
    if !redis.holds_data() {
        if let Some(next) = best_source(active, Some(current))
            && next.replication().is_some_and(Replication::holds_data)
        {
            return Choice::Change {
                to: next,
                from: Some(current),
                reason: Reason::PrimaryRestartedEmpty,
                trouble: Duration::ZERO,
            };
        }
        // Empty, it is promoted again only once no other pod may hold data.
        if let Some(other) = data_elsewhere(all, current, None) {
            reasons.push(format!(
                "the primary {} restarted without data and {} {}: none is promoted",
                current.name,
                other.name,
                holds(other)
            ));
            return no_candidate();
        }
    }
    Choice::Keep(current)
}

/// The labelled primary does not answer: replaced once it has been silent for the failover
/// delay, if nothing leaves it in doubt ([`in_doubt`]), one of the pods can take over, and its
/// Redis is stopped ([`stop_first`]).
fn replace_silent<'a>(
    active: &[&'a Member],
    all: &[Member],
    silent: &'a Member,
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Choice<'a> {
    if let Seen::Refused(_) = silent.seen {
        reasons.push(format!(
            "the primary {} {}; it is not failed over for that",
            silent.name,
            silence(&silent.seen)
        ));
        // It stays the primary: it runs, and serves its clients.
        return Choice::Hold {
            primary: Some(silent),
            outage: Outage::PrimaryNotAnswering,
            urgent: false,
        };
    }
    let silent_for = silent_for(silent).max(unheard_for(active, silent));
    if silent_for < policy.failover_after {
        reasons.push(format!(
            "the primary {} {}; a replica takes over if it stays silent for {}s",
            silent.name,
            silence(&silent.seen),
            policy.failover_after.as_secs_f64()
        ));
        return Choice::Hold {
            primary: None,
            outage: Outage::PrimaryNotAnswering,
            urgent: true,
        };
    }
    if let Some(doubt) = in_doubt(active, silent, policy, reasons) {
        return doubt;
    }
    let Some(next) = successor(active, all, silent, reasons) else {
        return no_candidate();
    };
    stop_first(silent, next, reasons).unwrap_or(Choice::Change {
        to: next,
        from: Some(silent),
        reason: Reason::PrimaryNotAnswering,
        trouble: silent_for,
    })
}

/// How long `member`'s Redis has not answered the operator.
fn silent_for(member: &Member) -> Duration {
    match &member.seen {
        Seen::Silent { for_, .. } => *for_,
        _ => Duration::ZERO,
    }
}

/// The answering replica linked to the primary at `address` that heard from it last, and how
/// many seconds ago: a primary pings its replicas every second, so this says when it fell
/// silent, where the operator, asking every few seconds, noticed only later.
fn last_contact<'a>(active: &[&'a Member], address: &str) -> Option<(&'a str, u64)> {
    active
        .iter()
        .filter_map(|m| {
            let redis = m.replication()?;
            let ago = redis
                .heard_from_primary
                .filter(|_| redis.follows(address))?;
            Some((m.name.as_str(), ago))
        })
        .min_by_key(|(_, ago)| *ago)
}

/// How long the replicas linked to the primary `old` have not heard from it ([`last_contact`]);
/// zero when none is linked to it.
fn unheard_for(active: &[&Member], old: &Member) -> Duration {
    old.address
        .as_deref()
        .and_then(|address| last_contact(active, address))
        .map_or(Duration::ZERO, |(_, ago)| Duration::from_secs(ago))
}

/// Whether `member`'s Redis may still run and take writes: it has an address, and the kubelet
/// has not reported its container stopped.
fn may_still_run(member: &Member) -> bool {
    member.address.is_some() && !member.stopped
}

/// Why `old`, a primary whose Redis does not answer (as a replica or at all), cannot be taken
/// for gone: a replica still hears from it (the operator is the one cut off), or too few of the
/// pods that run answer to tell. None once its Redis is stopped, or when both say it is gone.
fn in_doubt<'a>(
    active: &[&'a Member],
    old: &'a Member,
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Option<Choice<'a>> {
    if !may_still_run(old) {
        return None;
    }
    if let Some((witness, ago)) = old
        .address
        .as_deref()
        .and_then(|address| witness(active, address, policy))
    {
        reasons.push(format!(
            "the primary {} {}, but {witness} heard from it {ago}s ago: the operator is the \
             one cut off from it, and none is promoted",
            old.name,
            silence(&old.seen)
        ));
        return Some(Choice::Hold {
            primary: Some(old),
            outage: Outage::PrimaryUnreachable,
            urgent: false,
        });
    }
    // Pods that run count: a pod of a scale-up that has no address yet holds no data and
    // takes no writes.
    let running = active
        .iter()
        .filter(|m| m.address.is_some() && !matches!(m.seen, Seen::NeverStarted(_)))
        .count();
    let answering = active.iter().filter(|m| m.replication().is_some()).count();
    if answering * 2 <= running {
        reasons.push(format!(
            "the primary {} {}, and only {answering} of {running} pods answer: without a \
             majority a dead primary cannot be told from one the operator cannot reach, so \
             none is promoted",
            old.name,
            silence(&old.seen)
        ));
        // It may last: looked at again at the probe interval, not four times a second.
        return Some(Choice::Hold {
            primary: None,
            outage: Outage::NoQuorum,
            urgent: false,
        });
    }
    None
}

/// The [`last_contact`] with the primary at `address`, if recent enough for it to be alive
/// (within the fence's lag and a second: a primary that lags more has stopped taking writes).
fn witness<'a>(active: &[&'a Member], address: &str, policy: &Policy) -> Option<(&'a str, u64)> {
    let within = u64::from(policy.settings.max_lag) + 1;
    last_contact(active, address).filter(|(_, ago)| *ago <= within)
}

/// Stops `old` before `next` replaces it, while its Redis may still run: a Redis that hung and
/// resumes executes, and acknowledges, the writes queued on its connections before anyone can
/// tell it to follow, and `REPLICAOF` then drops them. None once it is stopped, or when its
/// node does not stop it within [`STOP_TIMEOUT`] (a node gone or cut
/// off: the fence stops a primary cut off from its replicas).
fn stop_first<'a>(old: &'a Member, next: &Member, reasons: &mut Vec<String>) -> Option<Choice<'a>> {
    if !may_still_run(old) || old.stopping.is_some_and(|since| since >= STOP_TIMEOUT) {
        return None;
    }
    reasons.push(format!(
        "the primary {} {}: its Redis is being stopped before {} takes over",
        old.name,
        silence(&old.seen),
        next.name
    ));
    if old.stopping.is_some() {
        return Some(Choice::Hold {
            primary: None,
            outage: Outage::PrimaryNotAnswering,
            urgent: true,
        });
    }
    Some(Choice::Stop(old))
}

/// The primary's pod is on its way out: it hands over while its Redis still answers as
/// primary, else its successor is promoted.
fn replace_leaving<'a>(
    active: &[&'a Member],
    all: &[Member],
    leaving: &'a Member,
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Choice<'a> {
    // Silent, it is replaced as any silent primary is, but without the failover delay: its
    // pod is going anyway.
    let silent = leaving.replication().is_none();
    if silent && let Some(doubt) = in_doubt(active, leaving, policy, reasons) {
        return doubt;
    }
    let Some(next) = successor(active, all, leaving, reasons) else {
        return no_candidate();
    };
    // Still answering as primary (its pod was deleted a moment ago, and it may still take
    // writes until its SIGTERM arrives): it hands over like a planned switchover, writes
    // paused until the successor has all of them. Promoting at once would drop the writes it
    // acknowledged last.
    if leaving.replication().is_some_and(Replication::is_primary) && next.address.is_some() {
        reasons.push(format!(
            "the leaving primary {} hands its last writes over to {}",
            leaving.name, next.name
        ));
        return Choice::HandOver {
            from: leaving,
            to: next,
        };
    }
    if silent && let Some(stop) = stop_first(leaving, next, reasons) {
        return stop;
    }
    // Stopped because it did not answer: a failover for that, not for a deletion.
    let (reason, trouble) = if silent && leaving.stopping.is_some() {
        (Reason::PrimaryNotAnswering, silent_for(leaving))
    } else {
        (Reason::PrimaryLeaving, Duration::ZERO)
    };
    Choice::Change {
        to: next,
        from: Some(leaving),
        reason,
        trouble,
    }
}

/// No pod that answers can take over without losing data. It may last: looked at again at the
/// probe interval, not four times a second.
fn no_candidate<'a>() -> Choice<'a> {
    Choice::Hold {
        primary: None,
        outage: Outage::NoCandidate,
        urgent: false,
    }
}

/// The answering pod other than `except` whose Redis holds the most data: the highest offset,
/// then any keys, then ready, then the lowest ordinal.
fn best_source<'a>(active: &[&'a Member], except: Option<&Member>) -> Option<&'a Member> {
    active
        .iter()
        .copied()
        .filter(|m| except.is_none_or(|e| e.name != m.name))
        .filter_map(|m| Some((m, m.replication()?)))
        .max_by_key(|(m, redis)| (redis.offset, redis.keys > 0, m.ready, Reverse(m.ordinal)))
        .map(|(m, _)| m)
}

/// The pod to promote in place of `old`, or None (with the reason) when every candidate is
/// empty while a pod that may hold data has not answered: promoting then could make an empty
/// Redis the source that pod's data is replaced from.
fn successor<'a>(
    active: &[&'a Member],
    all: &[Member],
    old: &Member,
    reasons: &mut Vec<String>,
) -> Option<&'a Member> {
    let Some(best) = best_source(active, Some(old)) else {
        reasons.push(format!(
            "the primary {} is gone and no other pod answers",
            old.name
        ));
        return None;
    };
    if best.replication().is_some_and(Replication::holds_data) {
        return Some(best);
    }
    // The old primary on its way out does not hold the promotion back: it goes anyway.
    let gone = old.terminating.then_some(old);
    match data_elsewhere(all, best, gone) {
        Some(other) => {
            reasons.push(format!(
                "no pod that can take over holds data, and {} {}: none is promoted",
                other.name,
                holds(other)
            ));
            None
        }
        None => Some(best),
    }
}

/// A pod of the cluster, other than `candidate` and `except`, that holds data or may (it does
/// not answer, and its container did not get stuck before it ever started), whether or not it
/// stays: an empty `candidate` made primary would be the source its data is replaced from.
fn data_elsewhere<'a>(
    all: &'a [Member],
    candidate: &Member,
    except: Option<&Member>,
) -> Option<&'a Member> {
    all.iter().find(|m| {
        m.name != candidate.name
            && except.is_none_or(|e| e.name != m.name)
            && match m.replication() {
                Some(redis) => redis.holds_data(),
                None => !matches!(m.seen, Seen::NeverStarted(_)),
            }
    })
}

/// What a pod found by [`data_elsewhere`] is doing, for a reason.
fn holds(member: &Member) -> String {
    match member.replication() {
        Some(_) => "holds data but cannot take over (it is on its way out)".to_owned(),
        None => silence(&member.seen),
    }
}

/// The settings for every Redis of a cluster whose primary is `primary` (at
/// `primary_address`): the policy's, with the fence raised only once as many replicas as it
/// asks for are in sync (a new cluster, a scale-up), and kept at what the primary has
/// meanwhile (never lowered because replicas are gone: that is when it protects).
fn settings_for(
    primary: &Member,
    primary_address: &str,
    active: &[&Member],
    policy: &Policy,
) -> Settings {
    let wanted = policy.settings;
    let in_sync = active
        .iter()
        .filter(|m| m.name != primary.name)
        .filter(|m| {
            m.replication()
                .is_some_and(|r| r.in_sync() && r.follows(primary_address))
        })
        .count();
    let current = primary
        .replication()
        .and_then(|r| r.settings)
        .map_or(0, |s| s.min_replicas);
    let min_replicas = if in_sync >= wanted.min_replicas as usize {
        wanted.min_replicas
    } else {
        current.min(wanted.min_replicas)
    };
    Settings {
        min_replicas,
        ..wanted
    }
}

/// The pod to make primary when none was, or None (with the reason) when it would be a guess.
fn elect<'a>(
    active: &[&'a Member],
    all: &[Member],
    reasons: &mut Vec<String>,
) -> Option<&'a Member> {
    let Some(best) = best_source(active, None) else {
        let first = active.first().map_or_else(
            || "no pod exists yet".to_owned(),
            |m| format!("pod {} {}", m.name, silence(&m.seen)),
        );
        reasons.push(format!("no primary yet: {first}"));
        return None;
    };
    if best.replication().is_some_and(Replication::holds_data) {
        return Some(best);
    }
    // Nobody that can take over holds data: wait for the others, which may (and, in a new
    // cluster, so that the primary is pod 0 rather than whichever started first). A pod whose
    // container never started holds nothing and may never start: not waited for.
    match data_elsewhere(all, best, None) {
        Some(other) => {
            reasons.push(format!(
                "no primary yet: pod {} {}",
                other.name,
                holds(other)
            ));
            None
        }
        None => Some(best),
    }
}
