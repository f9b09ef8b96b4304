//! The order of a roll or a scale-down: which outdated pod goes next, and when the primary
//! hands over first.

use std::cmp::Reverse;

use super::{Member, Plan, Policy, Role};
use crate::redis::Command;

/// Ready, and its Redis a primary or a replica in sync.
fn is_in_role(member: &Member) -> bool {
    member.ready
        && member
            .replication()
            .is_some_and(|r| r.is_primary() || r.in_sync())
}

/// Deletes an outdated pod that serves nothing (not ready in a role, not the primary), whatever
/// else is going on: a pod stuck on an image that was since fixed waits for no one (the
/// StatefulSet, OnDelete, never replaces it). Returns true when the roll must wait: a pod was
/// deleted now, one is still terminating, or one lost the primary role moments ago.
pub(super) fn replace_broken(
    members: &[Member],
    active: &[&Member],
    primary: Option<&Member>,
    policy: &Policy,
    plan: &mut Plan,
    reasons: &mut Vec<String>,
) -> bool {
    if members.iter().any(|m| m.terminating) {
        // One pod at a time: the last one deleted is not gone yet.
        return true;
    }
    if let Some(settling) = members.iter().find(|m| m.settling) {
        reasons.push(format!(
            "pod {} waits for traffic to move off it before it is replaced",
            settling.name
        ));
        plan.urgent = true;
        return true;
    }
    let is_primary =
        |m: &Member| primary.is_some_and(|p| p.name == m.name) || m.label == Some(Role::Primary);
    let broken = next_outdated(active, policy, |m| is_primary(m) || is_in_role(m));
    let Some(broken) = broken else {
        return false;
    };
    plan.delete = Some(broken.name.clone());
    reasons.push(format!(
        "pod {} is replaced with the current spec",
        broken.name
    ));
    true
}

/// The outdated pod whose turn it is, unless `passed_over`: the highest such pod; or, in
/// ordinal order, the lowest outdated pod (none, if it is passed over: no pod above it can
/// be recreated before it is).
fn next_outdated<'a>(
    active: &[&'a Member],
    policy: &Policy,
    passed_over: impl Fn(&Member) -> bool,
) -> Option<&'a Member> {
    let mut outdated = active.iter().copied().filter(|m| m.is_outdated(policy));
    if policy.in_ordinal_order {
        outdated.next().filter(|m| !passed_over(m))
    } else {
        outdated.filter(|m| !passed_over(m)).last()
    }
}

/// Whether a roll waits for its turn (`Policy::roll_held`), saying so; a scale-down's
/// handover does not.
fn waits_for_a_turn(
    active: &[&Member],
    policy: &Policy,
    scale_down: bool,
    reasons: &mut Vec<String>,
) -> bool {
    if !policy.roll_held || scale_down {
        return false;
    }
    if active.iter().any(|m| m.is_outdated(policy)) {
        reasons.push(
            "waiting for a turn to roll: other clusters replace their pods \
             (--max-concurrent-rolls)"
                .to_owned(),
        );
    }
    true
}

/// The next step of a roll or a scale-down, once the roles are settled: a pod to delete, or a
/// handover to start. Pods of an outdated config that are not ready in their role serve
/// nothing and go at once; the others one at a time, replicas before the primary.
pub(super) fn next_step(
    members: &[Member],
    active: &[&Member],
    primary: &Member,
    policy: &Policy,
    settled: bool,
    plan: &mut Plan,
    reasons: &mut Vec<String>,
) {
    if replace_broken(members, active, Some(primary), policy, plan, reasons) {
        return;
    }
    let outdated = |m: &Member| m.is_outdated(policy);
    let in_role = |m: &Member| is_in_role(m);
    let replicas = active.iter().copied().filter(|m| m.name != primary.name);
    if !settled {
        return;
    }
    let scale_down = primary.ordinal >= policy.desired;
    if waits_for_a_turn(active, policy, scale_down, reasons) {
        return;
    }
    let replace = (!policy.roll_held)
        .then(|| next_outdated(active, policy, |m| m.name == primary.name))
        .flatten();
    if let Some(replica) = replace {
        plan.delete = Some(replica.name.clone());
        reasons.push(format!(
            "pod {} is replaced with the current spec",
            replica.name
        ));
        return;
    }
    if !scale_down && !outdated(primary) {
        return;
    }
    // In ordinal order the primary's turn may come before any replica is updated: it hands
    // over to an outdated one then, an updated one where there is one.
    let target = replicas
        .filter(|m| {
            m.ordinal < policy.desired && (policy.in_ordinal_order || !outdated(m)) && in_role(m)
        })
        .max_by_key(|m| (!outdated(m), m.offset(), Reverse(m.ordinal)));
    match (target, &primary.address) {
        (Some(target), Some(_)) => {
            let Some(host) = target.address.clone() else {
                return;
            };
            plan.commands.push((
                primary.name.clone(),
                Command::HandOver {
                    to: target.name.clone(),
                    host,
                },
            ));
            plan.urgent = true;
            let why = if scale_down {
                "before the scale-down removes its pod"
            } else {
                "before its pod is replaced with the current spec"
            };
            reasons.push(format!(
                "the primary {} hands over to {} {why}",
                primary.name, target.name
            ));
        }
        // A single pod: nobody to hand over to. Replaced like any pod.
        _ if !scale_down && active.len() == 1 => {
            plan.delete = Some(primary.name.clone());
            reasons.push(format!(
                "pod {} is replaced with the current spec",
                primary.name
            ));
        }
        _ => reasons.push(format!(
            "the primary {} waits for an updated replica below ordinal {} in sync to take over",
            primary.name, policy.desired
        )),
    }
}
