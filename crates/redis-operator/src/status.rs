//! Status, phase and conditions from what was observed: a pure function, so every phase
//! transition is a table row in the tests.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use rediscluster_crd::conditions::{
    DEGRADED, PASSWORDS_AGREE, PRIMARY_AVAILABLE, PROGRESSING, READY, STORAGE_SIZED,
};
use rediscluster_crd::{Phase, RedisCluster, RedisClusterStatus};

use crate::auth;
pub use crate::memory::DETAIL_HOLD;
use crate::names::selector_string;
use crate::observed::{desired_replicas, is_caught_up};
use crate::pod::{self, false_condition};
use crate::pod_config::{is_outdated, pod_config_of};
use crate::storage::Sizing;
use crate::topology::{Change, RoleReport};

/// Why the operator cannot make progress with a cluster's children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// An object with a child's name exists and is not controlled by this RedisCluster.
    NotOwned { kind: String, name: String },
    /// The API server refused the child we applied.
    Rejected { kind: String, message: String },
    /// The RedisCluster's name cannot yield its children (made before the CRD refused it).
    InvalidName(String),
    /// The spec asks for what cannot run (`rediscluster_crd::spec_problem`).
    InvalidSpec(String),
}

impl Blocker {
    fn reason(&self) -> &'static str {
        match self {
            Blocker::NotOwned { .. } => "ChildNotOwned",
            Blocker::Rejected { .. } => "ChildRejected",
            Blocker::InvalidName(_) => "InvalidName",
            Blocker::InvalidSpec(_) => "InvalidSpec",
        }
    }

    fn message(&self) -> String {
        match self {
            Blocker::NotOwned { kind, name } => format!(
                "{kind} {name} exists and is not owned by this RedisCluster; \
                 delete or rename it, or rename the RedisCluster"
            ),
            Blocker::Rejected { kind, message } => {
                format!("the API server rejected the {kind}: {message}")
            }
            Blocker::InvalidName(problem) => {
                format!("{problem}; recreate the RedisCluster under a valid name")
            }
            Blocker::InvalidSpec(problem) => format!(
                "{problem}; the pods keep running the last valid spec until the spec is fixed"
            ),
        }
    }
}

/// Everything the status is computed from: what the caches showed, and what this reconcile
/// wrote and found.
pub struct Facts<'a> {
    pub statefulset: Option<&'a StatefulSet>,
    /// The cluster's pods (only needed while not every replica is ready).
    pub pods: &'a [&'a Pod],
    /// Whether the observed StatefulSet already says everything we would apply.
    pub statefulset_in_sync: bool,
    pub blocker: Option<&'a Blocker>,
    /// The roles once this reconcile's plan ran: the primary, how many pods are ready in
    /// their role, and why the rest are not.
    pub roles: &'a RoleReport,
    /// The change that made the current primary, if the operator made or remembers it.
    pub primary_change: Option<&'a Change>,
    /// Whether the claims hold the spec's storage size (with storage only).
    pub storage: Option<&'a Sizing>,
    /// The config pods should be made for (`pod_config::pod_config`); a pod made for another
    /// is on its way out.
    pub pod_config: Option<&'a str>,
    /// With auth: the passwords each pod that answered accepts (`roles::Roles::passwords`).
    pub passwords: Option<&'a [(String, Vec<String>)]>,
    pub now: Timestamp,
    pub failure_grace: Duration,
    pub progress_deadline: Duration,
}

/// The status to write, and when to look again if time alone can change it.
#[derive(Debug, PartialEq)]
pub struct Assessment {
    pub status: RedisClusterStatus,
    /// Set while the cluster is on its way to Running: when a stuck pod's grace period or the
    /// progress deadline runs out.
    pub recheck_after: Option<Duration>,
}

struct Verdict {
    phase: Phase,
    reason: &'static str,
    message: String,
}

/// The counts a status reports, as this reconcile sees them.
#[derive(Clone, Copy)]
struct Counts {
    /// Pods the spec asks for.
    desired: i32,
    /// Pods that exist (the StatefulSet's count).
    exist: i32,
    /// Pods ready in their role.
    ready: i32,
    /// Pods made for the spec's config.
    updated: i32,
}

/// The status of `cluster` from `facts`: phase, counts and conditions, and when to look again.
pub fn assess(cluster: &RedisCluster, facts: &Facts) -> Assessment {
    let previous = cluster.status.clone().unwrap_or_default();
    let counts = counts(cluster, facts);
    let waiting = facts
        .roles
        .waiting
        .as_ref()
        .map(|why| format!("; {why}"))
        .unwrap_or_default();
    let (verdict, stuck_left) = verdict(facts, &previous, counts, &waiting);
    let generation = cluster.meta().generation;
    let progress = Progress::of(&previous, (generation, counts), facts.now);
    let (verdict, deadline_left) = progress.check(verdict, facts, counts, &waiting);
    let recheck_after = match (stuck_left, deadline_left) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let conditions = conditions(&previous, &verdict, facts, generation);
    Assessment {
        status: RedisClusterStatus {
            phase: verdict.phase,
            ready_replicas: counts.ready,
            primary: facts.roles.primary.clone(),
            replicas: counts.exist,
            updated_replicas: counts.updated,
            last_progress_time: (verdict.phase != Phase::Running).then_some(Time(progress.since)),
            selector: Some(selector_string(&cluster.name_any())),
            observed_generation: generation,
            conditions,
        },
        recheck_after,
    }
}

fn counts(cluster: &RedisCluster, facts: &Facts) -> Counts {
    let sts_status = facts.statefulset.and_then(|sts| sts.status.as_ref());
    Counts {
        desired: cluster.spec.replicas,
        exist: sts_status.map_or(0, |s| s.replicas),
        // Ready means ready in a role: a pod the StatefulSet counts as ready may still be
        // unlinked, and the StatefulSet's count trails the pods' (no status says 3/3 and not
        // Running).
        ready: facts
            .roles
            .in_role
            .min(sts_status.and_then(|s| s.ready_replicas).unwrap_or(0)),
        // Not the StatefulSet's count of its update revision: a pod of an earlier template
        // that was made for the same spec is not replaced (`pod_config`).
        updated: facts.roles.updated,
    }
}

/// The phase as things stand, and how long until a stuck pod's grace period runs out.
fn verdict(
    facts: &Facts,
    previous: &RedisClusterStatus,
    counts: Counts,
    waiting: &str,
) -> (Verdict, Option<Duration>) {
    if let Some(blocker) = facts.blocker {
        let verdict = Verdict {
            phase: Phase::Failed,
            reason: blocker.reason(),
            message: blocker.message(),
        };
        return (verdict, None);
    }
    let stuck = (counts.ready < counts.desired)
        .then(|| stuck_pod(facts.pods, facts.pod_config, facts.now))
        .flatten();
    if let Some(stuck) = stuck.as_ref().filter(|s| s.for_ >= facts.failure_grace) {
        let verdict = Verdict {
            phase: Phase::Failed,
            reason: stuck.reason,
            // No elapsed time in the message: it would change, and be written, on every look.
            message: format!(
                "pod {} is stuck in {} for longer than the {}s grace period: {}",
                stuck.pod,
                stuck.reason,
                facts.failure_grace.as_secs(),
                stuck.message
            ),
        };
        return (verdict, None);
    }
    let left = stuck.map(|s| facts.failure_grace.saturating_sub(s.for_));
    (progress_verdict(facts, previous, counts, waiting), left)
}

/// Pending, Scaling or Running, from the StatefulSet and the roles.
fn progress_verdict(
    facts: &Facts,
    previous: &RedisClusterStatus,
    counts: Counts,
    waiting: &str,
) -> Verdict {
    let Counts {
        desired,
        exist,
        ready,
        updated,
    } = counts;
    let Some(sts) = facts.statefulset else {
        return Verdict {
            phase: Phase::Pending,
            reason: "Creating",
            message: "the StatefulSet does not exist yet".to_owned(),
        };
    };
    let rolled_out = facts.statefulset_in_sync && is_rolled_out(sts, desired, updated);
    let roles_settled = ready >= desired && facts.roles.primary.is_some();
    if rolled_out && roles_settled {
        return Verdict {
            phase: Phase::Running,
            reason: "AllReplicasReady",
            message: format!(
                "{ready}/{desired} Redis pods are ready in their role, {} is the primary",
                facts.roles.primary.as_deref().unwrap_or_default()
            ),
        };
    }
    if ready == 0 && !matches!(previous.phase, Phase::Running | Phase::Scaling) {
        return Verdict {
            phase: Phase::Pending,
            reason: "WaitingForFirstPod",
            message: format!(
                "0/{desired} Redis pods are ready in their role{waiting}{}",
                not_ready_clause(facts.pods)
            ),
        };
    }
    Verdict {
        phase: Phase::Scaling,
        reason: if rolled_out {
            "WaitingForReplication"
        } else {
            scaling_reason(sts, desired, updated, facts.statefulset_in_sync)
        },
        message: format!(
            "{ready}/{desired} Redis pods are ready in their role, {exist} exist, {updated} run the current spec{waiting}{}",
            not_ready_clause(facts.pods),
        ),
    }
}

/// The progress deadline: counts that have not moved for that long, on the way to Running,
/// mean something outside the pods' containers holds the cluster up. It is longer than the
/// grace period of a stuck container: slow progress (a large image, a new node) is not an
/// error.
struct Progress {
    /// Since when the counts stand as they are.
    since: Timestamp,
    stalled_for: Duration,
}

impl Progress {
    fn of(previous: &RedisClusterStatus, now: (Option<i64>, Counts), at: Timestamp) -> Self {
        let (generation, counts) = now;
        let progress = (generation, counts.exist, counts.ready, counts.updated);
        let previous_progress = (
            previous.observed_generation,
            previous.replicas,
            previous.ready_replicas,
            previous.updated_replicas,
        );
        let since = match &previous.last_progress_time {
            Some(Time(since))
                if previous.phase != Phase::Running && previous_progress == progress =>
            {
                *since
            }
            _ => at,
        };
        let stalled_for = at
            .duration_since(since)
            .try_into()
            .unwrap_or(Duration::ZERO);
        Self { since, stalled_for }
    }

    /// The verdict, turned Failed if the counts stalled past the progress deadline on the way to
    /// Running; and how long until they would.
    fn check(
        &self,
        verdict: Verdict,
        facts: &Facts,
        counts: Counts,
        waiting: &str,
    ) -> (Verdict, Option<Duration>) {
        match facts.statefulset {
            Some(sts) if matches!(verdict.phase, Phase::Pending | Phase::Scaling) => {
                if self.stalled_for >= facts.progress_deadline {
                    let failed =
                        stall_verdict(sts, counts, facts.pods, waiting, facts.progress_deadline);
                    (failed, None)
                } else {
                    (
                        verdict,
                        Some(facts.progress_deadline.saturating_sub(self.stalled_for)),
                    )
                }
            }
            _ => (verdict, None),
        }
    }
}

/// Ready, Progressing and Degraded from the verdict, then PrimaryAvailable, with auth
/// PasswordsAgree, and with storage StorageSized.
fn conditions(
    previous: &RedisClusterStatus,
    verdict: &Verdict,
    facts: &Facts,
    generation: Option<i64>,
) -> Vec<Condition> {
    let condition = |type_: &str, status: bool, reason: &str, message: &str| {
        condition(
            &previous.conditions,
            type_,
            status,
            reason,
            message,
            generation,
            facts.now,
        )
    };
    let (reason, message) = (verdict.reason, verdict.message.as_str());
    let no_problem = || condition(DEGRADED, false, "AsExpected", "no problem found");
    let mut conditions = match verdict.phase {
        Phase::Running => vec![
            condition(READY, true, reason, message),
            condition(
                PROGRESSING,
                false,
                "Complete",
                "the StatefulSet is fully rolled out",
            ),
            no_problem(),
        ],
        Phase::Pending | Phase::Scaling => vec![
            condition(READY, false, reason, message),
            condition(PROGRESSING, true, reason, message),
            no_problem(),
        ],
        Phase::Failed => vec![
            condition(READY, false, reason, message),
            condition(PROGRESSING, false, reason, message),
            condition(DEGRADED, true, reason, message),
        ],
    };
    let (available, reason, message) =
        primary_availability(previous, facts.roles, facts.primary_change);
    conditions.push(condition(PRIMARY_AVAILABLE, available, reason, &message));
    if let Some(passwords) = facts.passwords {
        match auth::agreement(passwords) {
            Some((agree, reason, message)) => {
                conditions.push(condition(PASSWORDS_AGREE, agree, reason, &message));
            }
            // No pod answered: nothing new is known.
            None => conditions.extend(previous.condition(PASSWORDS_AGREE).cloned()),
        }
    }
    if let Some(sizing) = facts.storage {
        conditions.push(condition(
            STORAGE_SIZED,
            sizing.sized,
            sizing.reason,
            &sizing.message,
        ));
    }
    conditions
}

/// The `PrimaryAvailable` condition: whether a primary serves writes, and how it came to (kept
/// from the previous status while the primary stays the same) or why none does.
fn primary_availability<'a>(
    previous: &'a RedisClusterStatus,
    roles: &RoleReport,
    change: Option<&Change>,
) -> (bool, &'a str, String) {
    let waiting = || {
        roles
            .waiting
            .clone()
            .unwrap_or_else(|| "no pod has been made primary yet".to_owned())
    };
    if let Some(outage) = roles.outage {
        return (false, outage.condition_reason(), waiting());
    }
    let Some(primary) = roles.primary.as_deref() else {
        return (false, "NoPrimaryYet", waiting());
    };
    if let Some(change) = change.filter(|c| c.to == primary) {
        return (true, change.reason.condition_reason(), change.describe());
    }
    match previous.condition(PRIMARY_AVAILABLE) {
        Some(kept) if kept.status == "True" && previous.primary.as_deref() == Some(primary) => {
            (true, kept.reason.as_str(), kept.message.clone())
        }
        _ => (true, "Assigned", format!("pod {primary} is the primary")),
    }
}

/// Why a cluster whose counts have not moved until the progress deadline is stuck, as precisely as the
/// StatefulSet's counts and its pods say: pods never created, pods never scheduled, containers
/// that do not start, or else plainly no progress.
fn stall_verdict(
    sts: &StatefulSet,
    counts: Counts,
    pods: &[&Pod],
    roles_clause: &str,
    grace: Duration,
) -> Verdict {
    let Counts {
        desired,
        exist,
        ready,
        ..
    } = counts;
    let grace = grace.as_secs();
    if exist < desired {
        return Verdict {
            phase: Phase::Failed,
            reason: "PodsNotCreated",
            message: format!(
                "{exist}/{desired} Redis pods exist and none was created for {grace}s: a resource \
                 quota, Pod Security admission or an invalid pod template refuses them; \
                 `kubectl describe statefulset {}` shows the FailedCreate events",
                sts.name_any()
            ),
        };
    }
    let mut pods = pods.to_vec();
    pods.sort_by_key(|pod| pod.name_any());
    let unscheduled = pods.iter().find_map(|pod| {
        let condition = false_condition(pod, "PodScheduled")?;
        Some((
            pod.name_any(),
            condition.message.clone().unwrap_or_default(),
        ))
    });
    if let Some((pod, why)) = unscheduled {
        return Verdict {
            phase: Phase::Failed,
            reason: "PodsUnschedulable",
            message: format!("pod {pod} has not been scheduled for {grace}s: {why}"),
        };
    }
    let waiting = pods.iter().find_map(|pod| {
        let (container, waiting) = pod
            .status
            .as_ref()?
            .container_statuses
            .iter()
            .flatten()
            .find_map(|c| Some((&c.name, c.state.as_ref()?.waiting.as_ref()?)))?;
        Some(format!(
            "container {container} of pod {} has waited in {} for {grace}s: {}",
            pod.name_any(),
            waiting.reason.as_deref().unwrap_or_default(),
            waiting.message.as_deref().unwrap_or_default()
        ))
    });
    if let Some(message) = waiting {
        return Verdict {
            phase: Phase::Failed,
            reason: "ContainersNotStarting",
            message,
        };
    }
    Verdict {
        phase: Phase::Failed,
        reason: "NoProgress",
        message: format!(
            "{ready}/{desired} Redis pods are ready in their role and nothing changed for {grace}s{roles_clause}{}",
            not_ready_clause(&pods)
        ),
    }
}

/// The StatefulSet controller has caught up with its spec, every pod runs the current revision
/// and is ready, and the spec asks for `desired` replicas.
fn is_rolled_out(sts: &StatefulSet, desired: i32, updated: i32) -> bool {
    let Some(status) = sts.status.as_ref() else {
        return false;
    };
    // Not the StatefulSet's revisions: the operator rolls the pods itself (OnDelete), by the
    // config they were made for.
    is_caught_up(sts)
        && desired_replicas(sts) == desired
        && status.replicas == desired
        && updated == desired
        && status.ready_replicas == Some(desired)
}

fn scaling_reason(sts: &StatefulSet, desired: i32, updated: i32, in_sync: bool) -> &'static str {
    let status = sts.status.as_ref();
    let current = status.map_or(0, |s| s.replicas);
    if !in_sync {
        "Applying"
    } else if !is_caught_up(sts) {
        "WaitingForStatefulSetController"
    } else if current != desired || desired_replicas(sts) != desired {
        "ScalingReplicas"
    } else if updated < current {
        "RollingUpdate"
    } else {
        "WaitingForReadiness"
    }
}

struct StuckPod {
    pod: String,
    reason: &'static str,
    message: String,
    for_: Duration,
}

/// "; not ready: a (…), b" naming each pod that is not ready, with its containers' restarts,
/// so that a crash and restart inside a pod shows in the status, not only in the pod. Empty
/// when every pod is ready (or none is known).
fn not_ready_clause(pods: &[&Pod]) -> String {
    let mut described: Vec<String> = pods
        .iter()
        .filter(|pod| pod::is_not_ready(pod))
        .map(|pod| {
            let restarts: Vec<String> = pod
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .filter(|c| c.restart_count > 0)
                .map(|c| {
                    let last = c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                ", last exit {} (code {})",
                                t.reason.as_deref().unwrap_or("unknown"),
                                t.exit_code
                            )
                        })
                        .unwrap_or_default();
                    let times = if c.restart_count == 1 {
                        "time"
                    } else {
                        "times"
                    };
                    format!(
                        "container {} restarted {} {times}{last}",
                        c.name, c.restart_count
                    )
                })
                .collect();
            if restarts.is_empty() {
                pod.name_any()
            } else {
                format!("{} ({})", pod.name_any(), restarts.join(", "))
            }
        })
        .collect();
    if described.is_empty() {
        return String::new();
    }
    described.sort();
    format!("; not ready: {}", described.join(", "))
}

/// The pod that has been stuck longest in one of `STUCK_REASONS`, and for how long: since its
/// containers last stopped being ready, or since it was created. Pods of an outdated revision do
/// not count: once the spec is fixed, they are replaced rather than waited for.
fn stuck_pod(pods: &[&Pod], config: Option<&str>, now: Timestamp) -> Option<StuckPod> {
    pods.iter()
        .filter(|pod| !is_outdated(pod_config_of(pod).as_deref(), config))
        .filter_map(|pod| {
            let stuck = pod::stuck_containers(pod).next()?;
            Some(StuckPod {
                pod: pod.name_any(),
                reason: stuck.reason,
                message: stuck.message.to_owned(),
                for_: pod::stuck_for(pod, now)?,
            })
        })
        .max_by_key(|stuck| stuck.for_)
}

/// A condition, keeping the previous lastTransitionTime unless its status changed.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// When to write a newly assessed status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// It says what the last one written says.
    Not,
    Now,
    /// It only refines the last one written, which is younger than [`DETAIL_HOLD`]: look again
    /// after this long, and write then what is true then.
    After(Duration),
}

/// Whether `next` is written now, later or not at all, given the status last `written` and
/// how long ago this process wrote one (`None`: not since it started). Only a cluster on its
/// way up, Pending before and after, waits: its counts and messages move at each pod event
/// and say nothing a client acts on. Anything else goes out at once, and so does a new phase,
/// a spec newly observed, a condition that turns, or a change of an existing primary: a
/// Running or Scaling cluster's status shows every step, a pod's restart of a second
/// included.
pub fn when_to_write(
    written: Option<&RedisClusterStatus>,
    next: &RedisClusterStatus,
    since_last_write: Option<Duration>,
) -> Write {
    let Some(written) = written else {
        return Write::Now;
    };
    if written == next {
        return Write::Not;
    }
    fn turns(status: &RedisClusterStatus) -> impl Iterator<Item = (&String, &String)> {
        status.conditions.iter().map(|c| (&c.type_, &c.status))
    }
    let on_its_way_up = written.phase == Phase::Pending && next.phase == Phase::Pending;
    let acted_on = !on_its_way_up
        || written.observed_generation != next.observed_generation
        || (written.primary.is_some() && written.primary != next.primary)
        || turns(written).ne(turns(next));
    match since_last_write {
        Some(since) if !acted_on && since < DETAIL_HOLD => Write::After(DETAIL_HOLD - since),
        _ => Write::Now,
    }
}

#[cfg(test)]
mod tests;
