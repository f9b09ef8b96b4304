//! The Redis side of a reconcile: ask each pod's Redis (I/O), decide roles, failovers,
//! handovers and the next pod of a roll (topology.rs, pure), act: role labels on the pods,
//! `REPLICAOF` and handovers on the Redis side, deletes of outdated pods (I/O).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::build;
use crate::context::Context;
use crate::error::Result;
use crate::pod_redis::{PodAddress, Unanswered};
use crate::status::{self, STUCK_REASONS};
use crate::topology::{
    self, Change, Command, HANDOVER_PAUSE_MS, Member, Outage, Plan, Policy, Relabel, Role, Seen,
};

/// What the Redis side of one reconcile found and did.
pub struct Roles {
    pub plan: Plan,
    /// The change that made the current primary, made now or remembered from an earlier
    /// reconcile (the cached status may not show it yet), for the `PrimaryAvailable` condition.
    pub primary_change: Option<Change>,
    /// Some pod of the cluster has an address: its Redis is worth asking again soon.
    pub reachable: bool,
    pub events: Vec<Event>,
}

/// One pod of the cluster: what the decision sees of it, and what acting on it needs.
#[derive(Clone)]
pub struct PodView {
    pub member: Member,
    /// For the preconditions of label patches and deletes.
    pub uid: String,
    /// Where its Redis is, when it is worth asking.
    pub target: Option<PodAddress>,
}

/// The cluster's pods as topology members (not yet asked: `Seen::NoAddress`), each with where
/// its Redis is when it is worth asking: it has an address, and it stays or is the primary on
/// its way out (whose last writes a successor must have before it takes over).
/// `settling`: the uids of pods that lost the primary role moments ago
/// ([`recently_demoted`]).
pub fn members(pods: &[Arc<Pod>], settling: &HashSet<String>) -> Vec<PodView> {
    pods.iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let ordinal = topology::ordinal(&name)?;
            let status = pod.status.as_ref();
            let address = status.and_then(|s| s.pod_ip.clone());
            // A pod that finished (evicted by the kubelet, say) never runs again either.
            let finished = status
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| matches!(phase, "Failed" | "Succeeded"));
            let terminating = pod.metadata.deletion_timestamp.is_some() || finished;
            let label = pod
                .labels()
                .get(build::ROLE_LABEL)
                .and_then(|value| Role::parse(value));
            let never_started = never_started(pod);
            let worth_asking =
                never_started.is_none() && (!terminating || label == Some(Role::Primary));
            let uid = pod.uid().unwrap_or_default();
            let target = address
                .as_ref()
                .filter(|_| worth_asking)
                .map(|ip| PodAddress {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: name.clone(),
                    uid: uid.clone(),
                    ip: ip.clone(),
                });
            let member = Member {
                name,
                ordinal,
                address,
                ready: status::pod_condition(pod, "ContainersReady", "True").is_some(),
                terminating,
                label,
                config: build::pod_config_of(pod),
                settling: settling.contains(&uid),
                seen: never_started.map_or(Seen::NoAddress, Seen::NeverStarted),
            };
            Some(PodView {
                member,
                uid,
                target,
            })
        })
        .collect()
}

/// Asks the Redis of every member that has an address, all at once.
async fn probe(ctx: &Context, pods: Vec<PodView>) -> Vec<PodView> {
    let asked = pods.into_iter().map(|pod| async move {
        let seen = match &pod.target {
            Some(target) => match ctx.redis.replication(target).await {
                Ok(replication) => Seen::Answered(replication),
                Err(Unanswered { why, for_ }) => Seen::Silent { why, for_ },
            },
            None => pod.member.seen.clone(),
        };
        PodView {
            member: Member { seen, ..pod.member },
            ..pod
        }
    });
    futures::future::join_all(asked).await
}

/// Why the pod's Redis container never ran, if it waits in a state that needs someone to act
/// (the reasons that also make a cluster Failed after the grace period) and never restarted.
fn never_started(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| c.name == build::REDIS_CONTAINER && c.restart_count == 0)
        .find_map(|c| {
            let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            STUCK_REASONS.contains(&reason.as_str()).then_some(reason)
        })
}

/// Observes, decides and acts for one cluster (`cluster_uid`).
pub async fn ensure(
    ctx: &Context,
    namespace: &str,
    cluster_uid: &str,
    pods: Vec<PodView>,
    policy: &Policy,
) -> Result<Roles> {
    let first = round(ctx, namespace, cluster_uid, pods.clone(), policy).await?;
    if !first.handed_over {
        return Ok(first.roles);
    }
    // Writes fail from the moment the old primary turns replica until the label moves: look
    // again at once and move the labels, rather than at the next reconcile.
    let mut second = round(ctx, namespace, cluster_uid, pods, policy).await?;
    let mut events = first.roles.events;
    events.append(&mut second.roles.events);
    Ok(Roles {
        events,
        ..second.roles
    })
}

/// How often the offsets are compared while a replica catches up with a paused primary.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// A planned handover from the primary `from` to its in-sync replica `to`: writes paused on
/// `from` (they wait, and are refused as READONLY once it follows `to`), `to` promoted once it
/// has applied every write `from` took, `from` made its replica, writes resumed. If the
/// operator dies halfway, the pause ends by itself and the next look finishes from what Redis
/// reports (see `topology::decide`).
async fn hand_over(ctx: &Context, from: &PodAddress, to: &PodAddress) -> Result<(), String> {
    ctx.redis
        .pause_writes(from, Some(HANDOVER_PAUSE_MS))
        .await?;
    let deadline = Instant::now() + Duration::from_millis(HANDOVER_PAUSE_MS / 2);
    let caught_up = loop {
        let (primary, replica) =
            futures::join!(ctx.redis.replication(from), ctx.redis.replication(to));
        if let (Ok(primary), Ok(replica)) = (&primary, &replica)
            && replica.offset >= primary.offset
        {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    };
    if !caught_up {
        let _ = ctx.redis.pause_writes(from, None).await;
        return Err(format!(
            "{} did not catch up within {}ms; writes resumed on {}",
            to.name,
            HANDOVER_PAUSE_MS / 2,
            from.name
        ));
    }
    let promoted = ctx.redis.run(to, &Command::Promote).await;
    if let Err(why) = promoted {
        let _ = ctx.redis.pause_writes(from, None).await;
        return Err(format!("promoting {}: {why}", to.name));
    }
    let follow = Command::Follow {
        host: to.ip.clone(),
    };
    let followed = ctx.redis.run(from, &follow).await;
    // Paused writes now meet a replica and are refused (READONLY), never lost.
    let _ = ctx.redis.pause_writes(from, None).await;
    followed.map_err(|why| format!("{follow} on {}: {why}", from.name))
}

/// How long after a pod lost the primary role it is kept from deletion: the Service's
/// endpoints and each node's proxy rules take a moment to follow the label, and until they do,
/// new connections for the primary still reach the old pod.
const ROUTING_SETTLE: Duration = Duration::from_secs(2);

/// One look: the roles, and whether a handover completed in it.
struct Round {
    roles: Roles,
    handed_over: bool,
}

async fn round(
    ctx: &Context,
    namespace: &str,
    cluster_uid: &str,
    pods: Vec<PodView>,
    policy: &Policy,
) -> Result<Round> {
    let started = Instant::now();
    let pods = probe(ctx, pods).await;
    let reachable = pods.iter().any(|p| p.target.is_some());
    // The members go to the decision; where each pod is stays here, by the same index.
    let (members, handles): (Vec<Member>, Vec<(String, Option<PodAddress>)>) = pods
        .into_iter()
        .map(|p| (p.member, (p.uid, p.target)))
        .unzip();
    let mut plan = topology::decide(&members, policy);
    let handle_of = |name: &str| {
        let index = members.iter().position(|m| m.name == name)?;
        Some(&handles[index])
    };
    let target_of = |name: &str| handle_of(name).and_then(|(_, target)| target.as_ref());
    let uid_of = |name: &str| handle_of(name).map(|(uid, _)| uid.clone());
    let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);

    let trouble_seen = recall(ctx, cluster_uid, |r| {
        r.hold_back_handover(&mut plan);
        r.note_trouble(&plan)
    });
    // No moment with two pods labelled primary: the old one loses the label first.
    relabel_all(&api, &plan.demote, &uid_of).await?;
    remember_demoted(ctx, &plan.demote, &uid_of);

    let run = plan.commands.iter().map(|(pod, command)| {
        let target = target_of(pod);
        async move {
            let result = match (target, command) {
                (Some(from), Command::HandOver { to, .. }) => match target_of(to) {
                    Some(to) => hand_over(ctx, from, to).await,
                    None => Err(format!("{to} has no address")),
                },
                (Some(target), _) => ctx.redis.run(target, command).await,
                (None, _) => Err("no address".to_owned()),
            };
            (pod.clone(), command.clone(), result)
        }
    });
    let mut failed = Vec::new();
    for (pod, command, result) in futures::future::join_all(run).await {
        match result {
            Ok(()) => info!(%pod, %command, "sent to Redis"),
            Err(why) => {
                if matches!(command, Command::HandOver { .. }) {
                    recall(ctx, cluster_uid, |r| {
                        r.handover_failed = Some(Instant::now())
                    });
                }
                if command == Command::Promote {
                    plan.primary = None;
                    plan.change = None;
                }
                plan.waiting = Some(format!("{command} on pod {pod} failed: {why}"));
                failed.push(pod);
            }
        }
    }
    let relabel: Vec<Relabel> = plan
        .relabel
        .iter()
        .filter(|r| !failed.contains(&r.pod))
        .filter(|r| plan.primary.is_some() || r.role != Some(Role::Primary))
        .cloned()
        .collect();
    relabel_all(&api, &relabel, &uid_of).await?;
    // Only once the new primary carries the label (a pod whose Redis already refuses writes).
    if plan.primary.is_some() && !failed.iter().any(|pod| plan.primary.as_ref() == Some(pod)) {
        relabel_all(&api, &plan.retire, &uid_of).await?;
        remember_demoted(ctx, &plan.retire, &uid_of);
    }
    if let Some(pod) = plan.delete.as_deref() {
        delete_pod(&api, pod, uid_of(pod)).await?;
    }
    let handed_over = plan
        .commands
        .iter()
        .any(|(pod, command)| matches!(command, Command::HandOver { .. }) && !failed.contains(pod));

    let mut events = Vec::new();
    let (primary_change, new_change) = recall(ctx, cluster_uid, |r| r.note_change(&plan));
    if let Some(change) = plan.change.as_ref().filter(|_| new_change) {
        info!(from = ?change.from, to = %change.to, reason = ?change.reason, "primary changed");
        if let Some(reason) = change.reason.metric_label() {
            // From the first sign of trouble: remembered, or as long as the silence that
            // decided it, before this reconcile began.
            let since = trouble_seen
                .unwrap_or_else(|| started.checked_sub(change.trouble).unwrap_or(started));
            let duration = change.reason.is_failover().then(|| since.elapsed());
            ctx.metrics.failed_over(reason, duration);
        }
        events.push(Event {
            type_: if change.reason.is_failover() {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: change.reason.condition_reason().to_owned(),
            note: Some(change.describe()),
            action: "AssignRoles".to_owned(),
            // Events fold into series by reason and related object: one series per new primary.
            secondary: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(change.to.clone()),
                namespace: Some(namespace.to_owned()),
                uid: uid_of(&change.to),
                ..ObjectReference::default()
            }),
        });
    }
    Ok(Round {
        roles: Roles {
            plan,
            primary_change,
            reachable,
            events,
        },
        handed_over,
    })
}

/// What the Redis side remembers of one cluster between reconciles. A restarted operator
/// starts with nothing, which only delays a measurement or a retry.
#[derive(Default)]
pub struct Recollection {
    /// When the primary was first seen in trouble (silent, leaving, no quorum...).
    trouble_since: Option<Instant>,
    /// The last change of primary this operator made, and when.
    last_change: Option<(Change, Instant)>,
    /// When a handover last failed.
    handover_failed: Option<Instant>,
}

/// How long a change of primary is remembered: the cached status shows it well before.
const REMEMBER_CHANGE: Duration = Duration::from_secs(60);

impl Recollection {
    /// Nothing left worth keeping (so that clusters that are gone are forgotten).
    fn is_empty(&self) -> bool {
        self.trouble_since.is_none()
            && self
                .last_change
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= REMEMBER_CHANGE)
            && self
                .handover_failed
                .is_none_or(|at| at.elapsed() >= HANDOVER_RETRY)
    }

    /// Notes whether the primary is in trouble, and returns when the trouble began if this
    /// plan replaces it (forgetting it then, or when the trouble is over).
    fn note_trouble(&mut self, plan: &Plan) -> Option<Instant> {
        let in_trouble = matches!(
            plan.outage,
            Some(
                Outage::PrimaryNotAnswering
                    | Outage::NoQuorum
                    | Outage::NoCandidate
                    | Outage::PrimaryLeaving
            )
        );
        if in_trouble {
            self.trouble_since.get_or_insert_with(Instant::now);
            return None;
        }
        let began = self.trouble_since.take();
        began.filter(|_| plan.change.as_ref().is_some_and(|c| c.reason.is_failover()))
    }

    /// Drops a handover from the plan if one failed lately. A change of primary is a new
    /// situation: a handover that failed before it (a leaving primary whose Redis exited
    /// halfway, the common case) does not hold back the next one.
    fn hold_back_handover(&mut self, plan: &mut Plan) {
        if plan.change.is_some() {
            self.handover_failed = None;
        }
        let failed_lately = self
            .handover_failed
            .is_some_and(|at| at.elapsed() < HANDOVER_RETRY);
        let handover = plan
            .commands
            .iter()
            .position(|(_, command)| matches!(command, Command::HandOver { .. }));
        if let (true, Some(index)) = (failed_lately, handover) {
            let (pod, _) = plan.commands.remove(index);
            plan.waiting = Some(format!(
                "the primary {pod} hands over again {}s after the last attempt failed",
                HANDOVER_RETRY.as_secs()
            ));
        }
    }

    /// The change that made the plan's primary (this plan's, or the last one remembered if it
    /// made the same primary), and whether this plan's is new. A reconcile that still sees the
    /// old labels in the cache decides the same change again (its patches change nothing): it
    /// is counted and told once.
    fn note_change(&mut self, plan: &Plan) -> (Option<Change>, bool) {
        match (&plan.change, plan.primary.as_deref()) {
            (Some(change), Some(_)) => {
                let repeated = self.last_change.as_ref().is_some_and(|(last, _)| {
                    (&last.from, &last.to, last.reason) == (&change.from, &change.to, change.reason)
                });
                self.last_change = Some((change.clone(), Instant::now()));
                (Some(change.clone()), !repeated)
            }
            (_, primary) => {
                let remembered = self
                    .last_change
                    .as_ref()
                    .map(|(change, _)| change)
                    .filter(|change| Some(change.to.as_str()) == primary);
                (remembered.cloned(), false)
            }
        }
    }
}

/// Runs `f` on the cluster's recollection, forgetting the clusters that have nothing left
/// worth keeping.
fn recall<T>(ctx: &Context, cluster_uid: &str, f: impl FnOnce(&mut Recollection) -> T) -> T {
    let mut recollections = ctx
        .recollections
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    recollections.retain(|uid, r| uid == cluster_uid || !r.is_empty());
    f(recollections.entry(cluster_uid.to_owned()).or_default())
}

/// The uids of pods that lost the primary role less than [`ROUTING_SETTLE`] ago.
pub fn recently_demoted(ctx: &Context) -> HashSet<String> {
    ctx.demoted
        .lock()
        .map(|mut demoted| {
            demoted.retain(|_, at| at.elapsed() < ROUTING_SETTLE);
            demoted.keys().cloned().collect()
        })
        .unwrap_or_default()
}

/// Remembers the pods that just lost the primary role, which are not removed until traffic
/// has moved off them.
fn remember_demoted(
    ctx: &Context,
    relabelled: &[Relabel],
    uid_of: &impl Fn(&str) -> Option<String>,
) {
    if let Ok(mut demoted) = ctx.demoted.lock() {
        for relabel in relabelled {
            if let Some(uid) = uid_of(&relabel.pod) {
                demoted.insert(uid, Instant::now());
            }
        }
    }
}

/// How long after a handover failed another is tried: one that did not complete (the replica
/// did not catch up in time) paused writes for nothing, and must not be repeated at every look.
const HANDOVER_RETRY: Duration = Duration::from_secs(30);

/// Deletes a pod of an outdated config for the StatefulSet to recreate (with `OnDelete`,
/// it never replaces one itself). The uid precondition spares a pod recreated meanwhile.
async fn delete_pod(api: &Api<Pod>, pod: &str, uid: Option<String>) -> Result<()> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => {
            info!(%pod, "deleted to be recreated with the current spec");
            Ok(())
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Sets or removes the role label on each pod. The uid in the patch is a precondition: a pod
/// recreated under the same name is not the one that was decided about, and is left alone.
async fn relabel_all(
    api: &Api<Pod>,
    relabel: &[Relabel],
    uid_of: &impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let patches = relabel.iter().map(|Relabel { pod, role }| {
        let mut patch = json!({
            "metadata": { "labels": { build::ROLE_LABEL: role.map(Role::as_str) } }
        });
        if let Some(uid) = uid_of(pod) {
            patch["metadata"]["uid"] = uid.into();
        }
        async move {
            match api
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                // Gone, or recreated under the same name: the next reconcile sees the new pod.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
                Err(error) => Err(error.into()),
            }
        }
    });
    futures::future::try_join_all(patches).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::redis_pod;

    #[test]
    fn members_say_what_the_decision_needs_of_each_pod() {
        let mut primary = redis_pod(0, true, Some(Role::Primary));
        primary.metadata.deletion_timestamp = primary.metadata.creation_timestamp.clone();
        primary.annotations_mut().insert(
            build::POD_CONFIG_ANNOTATION.to_owned(),
            "config-1".to_owned(),
        );
        let mut evicted = redis_pod(1, false, Some(Role::Replica));
        evicted.status.as_mut().unwrap().phase = Some("Failed".to_owned());
        let replica = redis_pod(2, true, Some(Role::Replica));
        let pods = [primary, evicted, replica].map(Arc::new);
        let settling = HashSet::from(["pod-uid-2".to_owned()]);
        let views = members(&pods, &settling);
        let [leaving, finished, settled] = &views[..] else {
            panic!("{} members", views.len())
        };
        // A primary on its way out is still asked: its last writes are handed over.
        assert!(leaving.member.terminating && leaving.target.is_some());
        assert_eq!(leaving.member.config.as_deref(), Some("config-1"));
        // A pod that will never run again counts as leaving, and a replica leaving is not
        // asked.
        assert!(finished.member.terminating && finished.target.is_none());
        assert!(settled.member.settling && settled.target.is_some());
        assert_eq!(settled.uid, "pod-uid-2");
    }
}
