//! Who is primary and who follows it, when to fail over or hand over, and which pod a roll
//! replaces next: the model here, the decision in [`decide`] (a pure function of what the pods
//! and their Redis report, with its roll order in `roll`), and what running a plan did in
//! [`Outcome`], which is what the status and the operator's memory read.
//!
//! The role label on each pod routes traffic: the `<name>-primary` Service selects
//! `role=primary`, `<name>-replicas` selects `role=replica`. How a pod's Redis starts without a
//! role is the protocol's (`crate::redis`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

pub use crate::names::Role;
use crate::pod;
use crate::pod_config::{self, LiveConfig, PodLiveConfig};
pub use crate::redis::info::{RedisRole, Replication};
use crate::redis::{Command, Settings};

mod decide;
mod roll;

pub use decide::decide;

/// How long after a handover failed another is tried: one that did not complete (the replica
/// did not catch up in time) paused writes for nothing, and must not be repeated at every look.
pub const HANDOVER_RETRY: Duration = Duration::from_secs(30);

/// How long after a pod lost the primary role it is kept from deletion: the Service's
/// endpoints and each node's proxy rules take a moment to follow the label, and until they do,
/// new connections for the primary still reach the old pod.
pub const ROUTING_SETTLE: Duration = Duration::from_secs(2);

/// How long after a pod lost the primary role its clients are disconnected at each look
/// (`redis::Command::Disconnect`): a loaded node's proxy can take seconds to follow the
/// label, and a client that reconnected through the primary Service meanwhile reached the old
/// pod, a replica now.
pub const ROUTING_FOLLOW: Duration = Duration::from_secs(15);

/// The grace period of the delete that stops a primary that does not answer before a replica
/// replaces it: the kubelet kills its Redis (SIGKILL ends a process that hangs, or that was
/// stopped) at most 2 s later, its minimum, and reports the container terminated.
pub const STOP_GRACE_SECONDS: u32 = 1;

/// How long a primary that was told to stop may take to be reported stopped before a replica
/// replaces it anyway: its node is gone or cut off, and the write fence stops a primary cut
/// off from its replicas on its own.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the operator could learn from one pod's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not asked: the pod has no IP yet, or its Redis is not worth asking
    /// ([`Member::worth_asking`]: a replica on its way out).
    NoAddress,
    /// It has an IP but its Redis did not answer (or answered with an error): why, and for
    /// how long it has not answered without a break.
    Silent {
        why: String,
        for_: Duration,
    },
    /// Its Redis answered, refusing the operator's login or a command (its credentials are
    /// wrong, or its user lacks a permission): it runs, so it is never failed over for it,
    /// and the status says why nothing is done.
    Refused(String),
    /// Its Redis container never started and waits in a state that needs someone to act
    /// (`ErrImagePull` and the like): it holds no data, and may never run.
    NeverStarted(String),
    Answered(Replication),
}

/// One pod of the cluster, as observed.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub ordinal: i32,
    pub address: Option<String>,
    /// The pod's containers are ready (its readiness probe passes).
    pub ready: bool,
    /// Being deleted, or finished for good: it gets no role, and is not a candidate.
    pub terminating: bool,
    pub label: Option<Role>,
    /// What the pod was made for (`pod_config::pod_config_of`).
    pub config: Option<String>,
    /// It lost the primary role less than [`ROUTING_SETTLE`] ago: until the Service's routing
    /// has followed the label, new connections for the primary still reach it, so its pod is
    /// not removed.
    pub settling: bool,
    /// It lost the primary role less than [`ROUTING_FOLLOW`] ago: connections made through the
    /// primary Service before its routing followed the label may still reach it.
    pub lately_demoted: bool,
    /// Its Redis container is not running, as the kubelet reports: whatever Redis did, it
    /// acknowledges nothing more.
    pub stopped: bool,
    /// Being deleted with a grace period of [`STOP_GRACE_SECONDS`] or less (its Redis is being
    /// killed): for how long.
    pub stopping: Option<Duration>,
    /// What its Redis was given of the spec's live config.
    pub live: PodLiveConfig,
    pub seen: Seen,
}

impl Member {
    pub fn replication(&self) -> Option<&Replication> {
        match &self.seen {
            Seen::Answered(replication) => Some(replication),
            _ => None,
        }
    }

    /// For a linked replica, how many seconds ago it last heard from its primary.
    pub fn heard_from_primary(&self) -> Option<u64> {
        self.replication()?.heard_from_primary
    }

    fn offset(&self) -> i64 {
        self.replication().map_or(0, |r| r.offset)
    }
}

impl Member {
    /// One pod as the decision sees it, not yet asked (`Seen::NoAddress`, or
    /// `Seen::NeverStarted` for a Redis container stuck before it ever ran), given how long
    /// ago it lost the primary role, if it did lately. None for a pod whose name has no
    /// ordinal (not one of a StatefulSet's).
    pub fn of(pod: &Pod, demoted_ago: Option<Duration>, now: Timestamp) -> Option<Member> {
        let demoted_within = |limit: Duration| demoted_ago.is_some_and(|ago| ago < limit);
        let name = pod.name_any();
        Some(Member {
            ordinal: pod::ordinal(&name)?,
            name,
            address: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            ready: pod::is_ready(pod),
            terminating: pod::is_leaving(pod),
            label: pod::role(pod),
            config: pod_config::pod_config_of(pod),
            settling: demoted_within(ROUTING_SETTLE),
            lately_demoted: demoted_within(ROUTING_FOLLOW),
            stopped: pod::redis_stopped(pod),
            stopping: stopping_for(pod, now),
            live: PodLiveConfig::of(pod),
            seen: pod::never_started(pod)
                .map_or(Seen::NoAddress, |why| Seen::NeverStarted(why.to_owned())),
        })
    }

    /// Whether its Redis is worth asking: it has an address, its container did not get stuck
    /// before it ever ran, and it stays, or it is the primary on its way out (whose last
    /// writes a successor must have before it takes over).
    pub fn worth_asking(&self) -> bool {
        self.address.is_some()
            && !matches!(self.seen, Seen::NeverStarted(_))
            && (!self.terminating || self.label == Some(Role::Primary))
    }

    /// Made for a config other than the one the policy asks for, or carrying a live directive
    /// the spec dropped.
    fn is_outdated(&self, policy: &Policy) -> bool {
        pod_config::is_outdated(self.config.as_deref(), policy.config.as_deref())
            || (policy.config.is_some() && self.live.carries_dropped(&policy.live_config))
    }

    /// The `CONFIG SET` that gives its Redis the live config, unless that is in effect.
    pub fn live_config_command(&self, policy: &Policy) -> Option<Command> {
        let run_id = &self.replication()?.run_id;
        let wanted = &policy.live_config;
        (!run_id.is_empty() && !self.live.in_effect(wanted, run_id)).then(|| Command::SetConfig {
            directives: wanted.directives.clone().into_iter().collect(),
            annotation: wanted.live_annotation(run_id, self.live.carried()),
        })
    }
}

/// How long ago `pod` was deleted with a grace period of [`STOP_GRACE_SECONDS`] or less (its
/// deletion timestamp is the deletion's time plus the grace period), if it was.
fn stopping_for(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let grace = pod
        .metadata
        .deletion_grace_period_seconds
        .filter(|grace| *grace <= i64::from(STOP_GRACE_SECONDS))?;
    let deleted = pod.metadata.deletion_timestamp.as_ref()?.0;
    let since = now.duration_since(deleted).as_secs() + grace;
    Some(Duration::from_secs(u64::try_from(since).unwrap_or(0)))
}

/// A label to set (`Some`) or remove (`None`) on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relabel {
    pub pod: String,
    pub role: Option<Role>,
}

/// Why the primary changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// There was none: a new cluster, an adopted one, a label removed by hand.
    Elected,
    /// The primary's pod is being deleted (or evicted, or finished).
    PrimaryLeaving,
    /// The primary's Redis did not answer for the failover delay.
    PrimaryNotAnswering,
    /// The primary's Redis restarted without its data while a replica holds data.
    PrimaryRestartedEmpty,
    /// A planned handover (an image roll, a scale-down) completed.
    Switchover,
}

impl Reason {
    /// The `reason` label of `redis_operator_failovers_total`; None for a first election,
    /// which replaces no primary.
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            Reason::Elected => None,
            Reason::PrimaryLeaving => Some("primary_deleted"),
            Reason::PrimaryNotAnswering => Some("primary_not_answering"),
            Reason::PrimaryRestartedEmpty => Some("primary_restarted_empty"),
            Reason::Switchover => Some("switchover"),
        }
    }

    /// A primary replaced because it failed (not a first election, not a planned handover):
    /// timed from the first sign of trouble, and a warning.
    pub fn is_failover(self) -> bool {
        !matches!(self, Reason::Elected | Reason::Switchover)
    }

    /// For the `PrimaryAvailable` condition's reason.
    pub fn condition_reason(self) -> &'static str {
        match self {
            Reason::Elected => "Elected",
            Reason::Switchover => "SwitchedOver",
            _ => "FailedOver",
        }
    }
}

/// A change of primary this plan makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: Option<String>,
    pub to: String,
    pub reason: Reason,
    /// How long the old primary had been known to be in trouble when this was decided (its
    /// silence); zero when the evidence was immediate.
    pub trouble: Duration,
}

impl Change {
    /// What happened, for an event and the condition.
    pub fn describe(&self) -> String {
        let from = self.from.as_deref().unwrap_or("none");
        match self.reason {
            Reason::Elected => format!("pod {} is the primary", self.to),
            Reason::PrimaryLeaving => {
                format!(
                    "pod {} is the primary: the pod of {from} was deleted",
                    self.to
                )
            }
            Reason::PrimaryNotAnswering => format!(
                "pod {} is the primary: {from} did not answer for {:.1}s",
                self.to,
                self.trouble.as_secs_f64()
            ),
            Reason::PrimaryRestartedEmpty => format!(
                "pod {} is the primary: {from} restarted without its data",
                self.to
            ),
            Reason::Switchover => format!("pod {} took over the primary role from {from}", self.to),
        }
    }
}

/// Why no primary serves writes now (the `PrimaryAvailable` condition is False).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No pod was ever made primary, and none can be yet.
    NoPrimaryYet,
    /// The primary's Redis does not answer; the failover delay has not passed.
    PrimaryNotAnswering,
    /// Too few pods answer to tell a dead primary from one the operator cannot reach.
    NoQuorum,
    /// The primary does not answer the operator, but a replica still hears from it: it is
    /// alive, and the operator is the one cut off.
    PrimaryUnreachable,
    /// No pod that answers can take over without losing data.
    NoCandidate,
    /// The leaving primary's last writes are still reaching the replica that takes over.
    PrimaryLeaving,
    /// A Redis `FAILOVER` (someone else's: the operator hands over with its own steps) is under
    /// way on the primary.
    SwitchingOver,
}

impl Outage {
    pub fn condition_reason(self) -> &'static str {
        match self {
            Outage::NoPrimaryYet => "NoPrimaryYet",
            Outage::PrimaryNotAnswering => "PrimaryNotAnswering",
            Outage::NoQuorum => "NoQuorum",
            Outage::PrimaryUnreachable => "PrimaryUnreachable",
            Outage::NoCandidate => "NoCandidate",
            Outage::PrimaryLeaving => "PrimaryLeaving",
            Outage::SwitchingOver => "SwitchingOver",
        }
    }
}

/// What decides besides the members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Pods the StatefulSet keeps (ordinals `0..kept`); pods above are on their way out.
    pub kept: i32,
    /// Pods the spec asks for: a primary at or above this ordinal hands over before its pod
    /// goes.
    pub desired: i32,
    /// How long the primary's Redis may stay silent before a replica is promoted.
    pub failover_after: Duration,
    /// The pod config the spec asks for (`pod_config::pod_config`): pods made for another are
    /// replaced one at a time, the primary last, after a handover. `None` while no pod may be
    /// replaced (an invalid spec, or no StatefulSet to make it again).
    pub config: Option<String>,
    /// Replace outdated pods from the lowest ordinal up, the primary in its turn. The
    /// StatefulSet controller creates no pod past a lower one that lacks the claims of its
    /// template (it tries, and fails, to add them to the running pod), so when storage is
    /// added, pods made before it must go in ordinal order.
    pub in_ordinal_order: bool,
    /// A handover failed less than [`HANDOVER_RETRY`] ago: none is started until then, unless
    /// the primary changes (a new situation).
    pub handover_held: bool,
    /// The settings every Redis should have, the fence at the strength the spec asks for
    /// (`RedisClusterSpec::fencing`); the primary gets it once enough replicas are in sync.
    pub settings: Settings,
    /// The spec's directives Redis takes at run time.
    pub live_config: LiveConfig,
    /// Other clusters hold every turn to roll (`rolls::RollTurns`): no pod that is only
    /// outdated is replaced, and no primary hands over for it, until one is free.
    pub roll_held: bool,
}

/// What to do, in this order: `demote` (labels that take the primary role from a Redis that
/// may take writes, so that no two pods that take writes carry it at any moment), then
/// `commands`, then `relabel`, then `retire`, then `delete` and `stop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The pod that is (or, after the commands, will be) the primary.
    pub primary: Option<String>,
    pub demote: Vec<Relabel>,
    pub commands: Vec<(String, Command)>,
    pub relabel: Vec<Relabel>,
    /// Labels that take the primary role from a pod whose Redis is already a read-only
    /// replica, removed once the new primary is labelled.
    pub retire: Vec<Relabel>,
    /// A pod of an outdated config to delete, for the StatefulSet to recreate from the
    /// current spec: a roll, one pod at a time.
    pub delete: Option<String>,
    /// A primary that does not answer, to stop before a replica replaces it: its pod is
    /// deleted with a grace period of [`STOP_GRACE_SECONDS`]. A Redis that hung (stopped, a
    /// long fork, a slow disk) and resumed would otherwise first execute, and acknowledge, the
    /// writes waiting on its clients' connections, before anyone could tell it to follow.
    pub stop: Option<String>,
    /// The primary changes.
    pub change: Option<Change>,
    /// Why no primary serves writes.
    pub outage: Option<Outage>,
    /// The primary is in trouble or changing hands: look again within a second, not at the
    /// probe interval.
    pub urgent: bool,
    /// Pods of the cluster that are ready in their role now.
    pub in_role: i32,
    /// Pods the StatefulSet keeps that were made for the spec's config.
    pub updated: i32,
    /// Why not every pod is ready in its role, for the status (the first reason).
    pub waiting: Option<String>,
}

/// What running a plan did: the commands that failed (the pod, the command, why), in the
/// order they were run. The plan itself is never edited: what the status says and what the
/// operator remembers come from the plan and this, through [`Plan::report`] and the methods
/// below.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub failed: Vec<(String, Command, String)>,
}

impl Outcome {
    fn failed_on(&self, pod: &str) -> bool {
        self.failed.iter().any(|(failed, _, _)| failed == pod)
    }

    fn promotion_failed(&self) -> bool {
        self.failed
            .iter()
            .any(|(_, command, _)| *command == Command::Promote)
    }

    /// A handover of the plan was run and failed.
    pub fn handover_failed(&self) -> bool {
        self.failed
            .iter()
            .any(|(_, command, _)| matches!(command, Command::HandOver { .. }))
    }
}

/// What the status reads of the roles once a plan was run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleReport {
    /// The primary: the plan's, unless its promotion failed.
    pub primary: Option<String>,
    /// The change of primary this look made.
    pub change: Option<Change>,
    pub outage: Option<Outage>,
    /// Why not every pod is ready in its role: a command that failed, else the plan's reason.
    pub waiting: Option<String>,
    pub in_role: i32,
    pub updated: i32,
}

impl Plan {
    /// The primary once the plan has run: none if its promotion failed.
    fn primary_after(&self, outcome: &Outcome) -> Option<&str> {
        self.primary
            .as_deref()
            .filter(|_| !outcome.promotion_failed())
    }

    /// What the status reads of this plan once it has run.
    pub fn report(&self, outcome: &Outcome) -> RoleReport {
        let primary = self.primary_after(outcome);
        let failure = outcome
            .failed
            .last()
            .map(|(pod, command, why)| format!("{command} on pod {pod} failed: {why}"));
        RoleReport {
            primary: primary.map(str::to_owned),
            change: self.change.clone().filter(|_| primary.is_some()),
            outage: self.outage,
            waiting: failure.or_else(|| self.waiting.clone()),
            in_role: self.in_role,
            updated: self.updated,
        }
    }

    /// Whether running the plan writes anything (a label, a Redis command, a delete).
    pub fn acts(&self) -> bool {
        !(self.demote.is_empty()
            && self.commands.is_empty()
            && self.relabel.is_empty()
            && self.retire.is_empty()
            && self.delete.is_none()
            && self.stop.is_none())
    }

    /// The labels to set once the commands have run: none on a pod whose command failed, and
    /// no primary label while there is no primary.
    pub fn relabel_after(&self, outcome: &Outcome) -> Vec<Relabel> {
        let has_primary = self.primary_after(outcome).is_some();
        self.relabel
            .iter()
            .filter(|r| !outcome.failed_on(&r.pod))
            .filter(|r| has_primary || r.role != Some(Role::Primary))
            .cloned()
            .collect()
    }

    /// The labels to retire once the new primary carries its label: only if it does.
    pub fn retire_after(&self, outcome: &Outcome) -> &[Relabel] {
        match self.primary_after(outcome) {
            Some(primary) if !outcome.failed_on(primary) => &self.retire,
            _ => &[],
        }
    }

    /// A handover of this plan was run and completed.
    pub fn handed_over(&self, outcome: &Outcome) -> bool {
        self.commands.iter().any(|(pod, command)| {
            matches!(command, Command::HandOver { .. }) && !outcome.failed_on(pod)
        })
    }
}

/// Whether the cluster has a pod to replace for its config: it needs a turn to roll.
pub fn rolls<'a>(members: impl IntoIterator<Item = &'a Member>, policy: &Policy) -> bool {
    members
        .into_iter()
        .any(|m| !m.terminating && m.is_outdated(policy))
}

/// How many pods the StatefulSet keeps when the spec asks for `desired`: never fewer than it
/// takes to keep the pod labelled primary (the StatefulSet removes the highest ordinals
/// first), until the primary has handed over to a pod that stays and traffic has left it.
pub fn pods_to_keep<'a>(members: impl IntoIterator<Item = &'a Member>, desired: i32) -> i32 {
    members
        .into_iter()
        .filter(|m| !m.terminating && (m.label == Some(Role::Primary) || m.settling))
        .filter(|m| m.ordinal >= desired)
        .map(|m| m.ordinal + 1)
        .max()
        .unwrap_or(desired)
}

fn silence(seen: &Seen) -> String {
    match seen {
        Seen::NoAddress => "has no address yet".to_owned(),
        Seen::Silent { why, .. } => format!("does not answer: {why}"),
        Seen::Refused(why) => format!(
            "refuses the operator ({why}): the operator's key (--credentials-secret) is not \
             the one this cluster was made with"
        ),
        Seen::NeverStarted(why) => format!("never started: {why}"),
        Seen::Answered(_) => "answers".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
