//! The Redis side of a reconcile: ask each pod's Redis (I/O), decide (`topology::decide`,
//! pure), run the plan in its order: labels that take the primary role away, Redis commands,
//! new labels, retired labels, a delete (I/O), and return what happened ([`Outcome`]). The plan
//! is never edited; what the status says comes from the plan and its outcome.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::auth::{self, ClusterCredentials};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names::{LIVE_CONFIG_ANNOTATION, ROLE_LABEL};
use crate::redis::client::{PodAddress, Unanswered};
use crate::redis::{Command, HANDOVER_PAUSE_MS};
use crate::topology::{
    self, Change, Member, Outcome, Plan, Policy, Relabel, Role, RoleReport, STOP_GRACE_SECONDS,
    Seen,
};

/// What the Redis side of one reconcile found and did.
pub struct Roles {
    pub report: RoleReport,
    /// Look again within a second: the primary is in trouble or changing hands.
    pub urgent: bool,
    /// The change that made the current primary, made now or remembered from an earlier
    /// reconcile (the cached status may not show it yet), for the `PrimaryAvailable` condition.
    pub primary_change: Option<Change>,
    /// Some pod of the cluster has an address: its Redis is worth asking again soon.
    pub reachable: bool,
    /// Of each pod whose Redis answered, in name order: the SHA-256 of each password its
    /// `default` user accepts (`auth::agreement`).
    pub passwords: Vec<(String, Vec<String>)>,
    pub events: Vec<Event>,
}

/// One pod of the cluster: what the decision sees of it, and what acting on it needs.
#[derive(Clone)]
pub struct PodView {
    pub member: Member,
    /// For the preconditions of label patches and deletes.
    pub uid: String,
    /// Where its Redis is, when it is worth asking (`Member::worth_asking`).
    pub target: Option<PodAddress>,
}

impl PodView {
    /// The pod as a member of the decision (`Member::of`), and where its Redis is, reached
    /// with the cluster's `credentials`.
    pub fn of(
        pod: &Pod,
        demoted: &HashMap<String, Duration>,
        now: Timestamp,
        credentials: &ClusterCredentials,
    ) -> Option<PodView> {
        let uid = pod.uid().unwrap_or_default();
        let member = Member::of(pod, demoted.get(&uid).copied(), now)?;
        let target = member
            .address
            .clone()
            .filter(|_| member.worth_asking())
            .map(|ip| PodAddress {
                namespace: pod.namespace().unwrap_or_default(),
                name: member.name.clone(),
                uid: uid.clone(),
                ip,
                login: auth::pod_has_auth(pod),
                credentials: credentials.clone(),
                tls_name: auth::pod_has_tls(pod).then(|| auth::pod_dns_name(pod)),
            });
        Some(PodView {
            member,
            uid,
            target,
        })
    }
}

/// Observes, decides and acts for one cluster (`cluster_uid`). After a handover completed,
/// writes fail from the moment the old primary turns replica until the label moves: it looks
/// again at once (Redis now says who took over) and moves the labels, rather than at the next
/// reconcile.
pub async fn ensure(
    ctx: &Context,
    namespace: &str,
    cluster_name: &str,
    cluster_uid: &str,
    pods: Vec<PodView>,
    policy: &Policy,
) -> Result<Roles> {
    let (first, handed_over) = round(
        ctx,
        namespace,
        cluster_name,
        cluster_uid,
        pods.clone(),
        policy,
    )
    .await?;
    if !handed_over {
        return Ok(first);
    }
    let (mut second, _) = round(ctx, namespace, cluster_name, cluster_uid, pods, policy).await?;
    let mut events = first.events;
    events.append(&mut second.events);
    Ok(Roles { events, ..second })
}

/// Asks the Redis of every member that has an address, all at once.
async fn probe(ctx: &Context, pods: Vec<PodView>) -> Vec<PodView> {
    let asked = pods.into_iter().map(|pod| async move {
        let seen = match &pod.target {
            Some(target) => match ctx.redis.replication(target).await {
                Ok(replication) => Seen::Answered(replication),
                Err(Unanswered { why, refused, .. }) if refused => Seen::Refused(why),
                Err(Unanswered { why, for_, .. }) => Seen::Silent { why, for_ },
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

/// Where each pod is, by name: its uid, and its Redis if worth asking.
struct Places(HashMap<String, (String, Option<PodAddress>)>);

impl Places {
    fn target(&self, pod: &str) -> Option<&PodAddress> {
        self.0.get(pod)?.1.as_ref()
    }

    fn uid(&self, pod: &str) -> Option<String> {
        self.0.get(pod).map(|(uid, _)| uid.clone())
    }
}

/// One look: probe, decide, run; returns the roles and whether a handover completed.
async fn round(
    ctx: &Context,
    namespace: &str,
    cluster_name: &str,
    cluster_uid: &str,
    pods: Vec<PodView>,
    policy: &Policy,
) -> Result<(Roles, bool)> {
    let started = Instant::now();
    let pods = probe(ctx, pods).await;
    let reachable = pods.iter().any(|p| p.target.is_some());
    let mut members = Vec::with_capacity(pods.len());
    let mut places = HashMap::new();
    for pod in pods {
        places.insert(pod.member.name.clone(), (pod.uid, pod.target));
        members.push(pod.member);
    }
    let places = Places(places);
    ctx.metrics
        .observe_redis(namespace, cluster_name, crate::figures::samples(&members));
    let plan = topology::decide(&members, policy);
    let mut passwords: Vec<(String, Vec<String>)> = members
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.replication()?.passwords.clone())))
        .collect();
    passwords.sort();
    let trouble_seen = ctx.memory.recall(cluster_uid, |m| {
        m.note_trouble(plan.outage, plan.change.as_ref())
    });
    let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    if plan.stop.is_some() {
        // What the replicas said of the primary, for the record of a decision that kills it.
        let heard: Vec<(&str, Option<u64>)> = members
            .iter()
            .map(|m| (m.name.as_str(), m.heard_from_primary()))
            .collect();
        info!(?heard, waiting = ?plan.waiting, "replicas' last contact with the primary (s)");
    }
    let outcome = execute(ctx, &api, cluster_uid, &plan, &places).await?;
    let report = plan.report(&outcome);
    let (primary_change, new_change) = ctx.memory.recall(cluster_uid, |m| {
        m.note_handover(outcome.handover_failed(), plan.change.is_some());
        m.note_change(report.change.as_ref(), report.primary.as_deref())
    });
    let mut events = Vec::new();
    if let Some(change) = report.change.as_ref().filter(|_| new_change) {
        let since =
            trouble_seen.unwrap_or_else(|| started.checked_sub(change.trouble).unwrap_or(started));
        if change.reason.is_failover() {
            ctx.metrics.cluster_failed_over(namespace, cluster_name);
        }
        events.push(primary_changed(ctx, namespace, change, since, &places));
    }
    let roles = Roles {
        report,
        urgent: plan.urgent,
        primary_change,
        reachable,
        passwords,
        events,
    };
    Ok((roles, plan.handed_over(&outcome)))
}

/// Runs the plan in its order. No moment has two pods labelled primary that may take writes:
/// the old one loses the label first, and a retired one (already a read-only replica) only
/// once the new primary carries it.
async fn execute(
    ctx: &Context,
    api: &Api<Pod>,
    cluster_uid: &str,
    plan: &Plan,
    places: &Places,
) -> Result<Outcome> {
    // A leader paused past its Lease between the start of the reconcile and here may wake
    // with a plan another leader is deciding anew: it sends nothing.
    if plan.acts() && !ctx.tenure.holds() {
        return Err(Error::NotLeading);
    }
    relabel_all(api, &plan.demote, places).await?;
    note_demoted(ctx, cluster_uid, &plan.demote, places);
    let outcome = run_commands(ctx, api, plan, places).await;
    relabel_all(api, &plan.relabel_after(&outcome), places).await?;
    let retire = plan.retire_after(&outcome);
    relabel_all(api, retire, places).await?;
    note_demoted(ctx, cluster_uid, retire, places);
    if let Some(pod) = plan.delete.as_deref() {
        delete_pod(api, pod, places.uid(pod), None).await?;
        info!(%pod, "deleted to be recreated with the current spec");
    }
    if let Some(pod) = plan.stop.as_deref() {
        delete_pod(api, pod, places.uid(pod), Some(STOP_GRACE_SECONDS)).await?;
        info!(%pod, "primary does not answer: stopping its Redis before a replica takes over");
    }
    Ok(outcome)
}

/// Sends the plan's Redis commands, all at once; what failed is the outcome.
async fn run_commands(ctx: &Context, api: &Api<Pod>, plan: &Plan, places: &Places) -> Outcome {
    let run = plan.commands.iter().map(|(pod, command)| async move {
        let result = match (places.target(pod), command) {
            (Some(from), Command::HandOver { to, .. }) => match places.target(to) {
                Some(to) => hand_over(ctx, from, to).await,
                None => Err(format!("{to} has no address")),
            },
            (Some(target), Command::SetConfig { annotation, .. }) => {
                match ctx.redis.run(target, command).await {
                    Ok(()) => note_live_config(api, pod, &target.uid, annotation).await,
                    failed => failed,
                }
            }
            (Some(target), _) => ctx.redis.run(target, command).await,
            (None, _) => Err("no address".to_owned()),
        };
        (pod, command, result)
    });
    let mut outcome = Outcome::default();
    for (pod, command, result) in futures::future::join_all(run).await {
        match result {
            Ok(()) => info!(%pod, %command, "sent to Redis"),
            Err(why) => outcome.failed.push((pod.clone(), command.clone(), why)),
        }
    }
    outcome
}

/// Records on the pod which run of its Redis has the live config: the pod's own uid as the
/// precondition, so that a pod recreated under the name is not marked.
async fn note_live_config(
    api: &Api<Pod>,
    pod: &str,
    uid: &str,
    annotation: &str,
) -> Result<(), String> {
    let patch = json!({
        "metadata": {
            "uid": uid,
            "annotations": {LIVE_CONFIG_ANNOTATION: annotation},
        }
    });
    api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("the pod's {LIVE_CONFIG_ANNOTATION} annotation: {e}"))
}

/// Counts, logs and tells (as an event) a change of primary; `since` is when the trouble that
/// led to it was first seen.
fn primary_changed(
    ctx: &Context,
    namespace: &str,
    change: &Change,
    since: Instant,
    places: &Places,
) -> Event {
    info!(from = ?change.from, to = %change.to, reason = ?change.reason, "primary changed");
    if let Some(reason) = change.reason.metric_label() {
        let duration = change.reason.is_failover().then(|| since.elapsed());
        ctx.metrics.failed_over(reason, duration);
    }
    Event {
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
            uid: places.uid(&change.to),
            ..ObjectReference::default()
        }),
    }
}

/// How often the offsets are compared while a replica catches up with a paused primary.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// A planned handover from the primary `from` to its in-sync replica `to`: writes paused on
/// `from`, `from` demoted (it follows `to`, refuses writes from then on, and its clients are
/// disconnected, the paused ones with their writes unexecuted) once `to` has applied every
/// write it took, then `to` promoted. The pause only keeps writes from failing meanwhile:
/// should it run out before the demotion (a slow network), a write `from` took after `to`
/// caught up shows in the offsets once it is demoted, and the handover is undone (`from`
/// primary again) rather than that write lost. If the operator dies halfway, the pause ends
/// by itself and the next look finishes from what Redis reports (see `topology::decide`).
async fn hand_over(ctx: &Context, from: &PodAddress, to: &PodAddress) -> Result<(), String> {
    ctx.redis
        .pause_writes(from, Some(HANDOVER_PAUSE_MS))
        .await?;
    if !caught_up(ctx, from, to).await {
        let _ = ctx.redis.pause_writes(from, None).await;
        return Err(format!(
            "{} did not catch up within {}ms; writes resumed on {}",
            to.name,
            HANDOVER_PAUSE_MS / 2,
            from.name
        ));
    }
    let demote = Command::Demote {
        host: to.ip.clone(),
    };
    let demoted = ctx.redis.run(from, &demote).await;
    let result = match demoted {
        Ok(()) => promote_if_complete(ctx, from, to).await,
        // Not demoted (or not known to be): `from` may still take writes, and `to` must not.
        Err(why) => Err(format!("{demote} on {}: {why}", from.name)),
    };
    let _ = ctx.redis.pause_writes(from, None).await;
    result
}

/// Promotes `to` if it has every write the demoted `from` took; else makes `from` the primary
/// again (its data is the most complete).
async fn promote_if_complete(
    ctx: &Context,
    from: &PodAddress,
    to: &PodAddress,
) -> Result<(), String> {
    let (old, new) = futures::join!(ctx.redis.replication(from), ctx.redis.replication(to));
    let complete = match (&old, &new) {
        (Ok(old), Ok(new)) => new.offset >= old.offset,
        _ => false,
    };
    if complete {
        return ctx
            .redis
            .run(to, &Command::Promote)
            .await
            .map_err(|why| format!("promoting {}: {why}", to.name));
    }
    let restored = ctx.redis.run(from, &Command::Promote).await;
    Err(format!(
        "{} took writes that {} did not have when it was demoted; {} is the primary again{}",
        from.name,
        to.name,
        from.name,
        restored.err().map_or(String::new(), |why| format!(
            " (promoting it failed: {why})"
        ))
    ))
}

/// Whether `to` applies every write the paused `from` took within half the pause.
async fn caught_up(ctx: &Context, from: &PodAddress, to: &PodAddress) -> bool {
    let deadline = Instant::now() + Duration::from_millis(HANDOVER_PAUSE_MS / 2);
    loop {
        let (primary, replica) =
            futures::join!(ctx.redis.replication(from), ctx.redis.replication(to));
        if let (Ok(primary), Ok(replica)) = (&primary, &replica)
            && replica.offset >= primary.offset
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    }
}

/// Remembers the pods that just lost the primary role: not removed until traffic has moved
/// off them (`topology::Member::settling`).
fn note_demoted(ctx: &Context, cluster_uid: &str, relabelled: &[Relabel], places: &Places) {
    let uids: Vec<String> = relabelled
        .iter()
        .filter_map(|relabel| places.uid(&relabel.pod))
        .collect();
    if !uids.is_empty() {
        ctx.memory.recall(cluster_uid, |m| m.note_demoted(uids));
    }
}

/// Deletes a pod for the StatefulSet to recreate (with `OnDelete`, it never replaces one
/// itself): one of an outdated config, or a primary to stop (with a short `grace` period, which
/// also shortens that of a pod already being deleted). The uid precondition spares a pod
/// recreated meanwhile.
async fn delete_pod(
    api: &Api<Pod>,
    pod: &str,
    uid: Option<String>,
    grace: Option<u32>,
) -> Result<()> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        grace_period_seconds: grace,
        ..DeleteParams::default()
    };
    match api.delete(pod, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Sets or removes the role label on each pod. The uid in the patch is a precondition: a pod
/// recreated under the same name is not the one that was decided about, and is left alone.
async fn relabel_all(api: &Api<Pod>, relabel: &[Relabel], places: &Places) -> Result<()> {
    let patches = relabel.iter().map(|Relabel { pod, role }| {
        let mut patch = json!({
            "metadata": { "labels": { ROLE_LABEL: role.map(Role::as_str) } }
        });
        if let Some(uid) = places.uid(pod) {
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
    use std::sync::Arc;

    use super::*;
    use crate::fixtures::redis_pod;
    use crate::names::POD_CONFIG_ANNOTATION;

    #[test]
    fn members_say_what_the_decision_needs_of_each_pod() {
        let mut primary = redis_pod(0, true, Some(Role::Primary));
        primary.metadata.deletion_timestamp = primary.metadata.creation_timestamp.clone();
        primary
            .annotations_mut()
            .insert(POD_CONFIG_ANNOTATION.to_owned(), "config-1".to_owned());
        let mut evicted = redis_pod(1, false, Some(Role::Replica));
        evicted.status.as_mut().unwrap().phase = Some("Failed".to_owned());
        let replica = redis_pod(2, true, Some(Role::Replica));
        let pods = [primary, evicted, replica].map(Arc::new);
        let demoted = HashMap::from([("pod-uid-2".to_owned(), Duration::from_secs(1))]);
        let views: Vec<PodView> = pods
            .iter()
            .filter_map(|pod| {
                PodView::of(
                    pod,
                    &demoted,
                    Timestamp::now(),
                    &crate::fixtures::credentials(),
                )
            })
            .collect();
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
        assert!(settled.member.lately_demoted && !leaving.member.lately_demoted);
        assert_eq!(settled.uid, "pod-uid-2");
    }
}
