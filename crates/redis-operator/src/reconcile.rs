//! One reconcile: observe (caches), build (pure), apply (only what drifted), assess (pure),
//! write status (only when it changed). The error policy sits beside it.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use rediscluster_crd::conditions::{DEGRADED, READY};
use rediscluster_crd::{Phase, RedisCluster, RedisClusterStatus};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::MANAGER;
use crate::build;
use crate::context::Context;
use crate::drift;
use crate::error::{Error, Result};
use crate::roles;
use crate::status::{self, Blocker, Observed};
use crate::storage;
use crate::topology::{self, Plan, Policy};

/// Reconciles one RedisCluster and logs the outcome: one line per reconcile.
pub async fn reconcile(cluster: Arc<RedisCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*cluster);
    let result = reconcile_cluster(&cluster, &ctx).await;
    let elapsed = started.elapsed();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    ctx.metrics
        .reconciled(elapsed, result.as_ref().err().map(Error::kind));
    match &result {
        Ok((_, phase)) => {
            ctx.backoff.reset(&key);
            info!(cluster = %key, result = "ok", %phase, duration_ms, "reconciled");
        }
        Err(error) => {
            warn!(cluster = %key, result = "error", kind = error.kind(), %error, duration_ms, "reconcile failed");
        }
    }
    result.map(|(action, _)| action)
}

/// Transient errors back off per object (about 1 s doubling to 5 min); permanent ones wait for
/// the next resync or a change of the object instead of retrying hot.
pub fn error_policy(cluster: Arc<RedisCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    Action::requeue(retry_after(&cluster, error, &ctx))
}

fn retry_after(cluster: &RedisCluster, error: &Error, ctx: &Context) -> Duration {
    if error.is_transient() {
        ctx.backoff.next_delay(ObjectRef::from_obj(cluster))
    } else {
        ctx.settings.resync_interval
    }
}

/// How soon a cluster blocked by something outside it (an object holding a child's name, a
/// child the API server refused) is looked at again: removing the blocker sends no event that
/// reaches us when the object was never ours, so we look, cheaply, from the caches.
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(30);

/// How soon a cluster whose primary is in trouble or handing over is looked at again. Cheap:
/// a silent Redis is asked at most once a second (pod_redis's backoff), and a status is
/// written only when it changed.
pub const URGENT_RECHECK: Duration = Duration::from_millis(250);

async fn reconcile_cluster(cluster: &RedisCluster, ctx: &Context) -> Result<(Action, Phase)> {
    let current_phase = cluster.status.as_ref().map_or(Phase::Pending, |s| s.phase);
    if cluster.meta().deletion_timestamp.is_some() {
        // Deletion is final: the garbage collector removes the children, and recreating one on
        // the way out would only hold the deletion up.
        return Ok((Action::await_change(), current_phase));
    }
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let uid = cluster.uid().ok_or(Error::MissingObjectKey("uid"))?;
    let name = cluster.name_any();
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    if let Some(problem) = rediscluster_crd::name_problem(&name) {
        // Made before the CRD refused such names: no child could work, so none is made.
        let blocker = Blocker::InvalidName(problem);
        let assessment = status::assess(
            cluster,
            &Observed {
                statefulset: None,
                pods: &[],
                statefulset_in_sync: false,
                blocker: Some(&blocker),
                roles: &Plan::default(),
                primary_change: None,
                storage: None,
                pod_config: None,
                now,
                failure_grace: ctx.settings.failure_grace,
            },
        );
        let phase = assessment.status.phase;
        report(ctx, cluster, &namespace, &assessment.status, Vec::new()).await?;
        return Ok((Action::requeue(ctx.settings.resync_interval), phase));
    }
    let pods = cluster_pods(ctx, &namespace, &name);
    let observed_statefulset = ctx
        .stores
        .statefulsets
        .get(&ObjectRef::new(&name).within(&namespace));
    let observed_ours = observed_statefulset
        .as_deref()
        .filter(|sts| build::is_controlled_by(*sts, &uid));
    // Roles are given only to the pods of our own StatefulSet: pods that another controller
    // owns are not ours to label or to tell whom to follow. Pods without a controller are
    // the StatefulSet's while it is recreated (orphaned by us, soon adopted by the new one):
    // leaving them out would show the roles a part of the cluster, without its primary.
    let statefulset_uid = observed_ours.and_then(|sts| sts.uid());
    let our_pods: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|pod| match build::controller_uid(pod.as_ref()) {
            Some(owner) => Some(owner) == statefulset_uid.as_deref(),
            None => true,
        })
        .cloned()
        .collect();
    // A spec the schema could not check fully (see `spec_problem`) changes no pod: the
    // StatefulSet keeps the last valid one, and no pod is replaced, while roles, failover and
    // the other children carry on.
    let spec_problem = rediscluster_crd::spec_problem(&cluster.spec);
    let members = roles::members(&our_pods, &roles::recently_demoted(ctx));
    let pod_config = build::pod_config(
        &cluster.spec,
        observed_ours
            .and_then(|sts| build::foreign_template(sts, &name))
            .as_deref(),
    );
    let statefulset_in_place =
        observed_ours.is_some_and(|sts| sts.metadata.deletion_timestamp.is_none());
    // A scale-down waits for the primary to hand over to a pod that stays.
    let kept = topology::pods_to_keep(members.iter().map(|p| &p.member), cluster.spec.replicas);
    let policy = Policy {
        kept,
        desired: cluster.spec.replicas,
        failover_after: ctx.settings.failover_after,
        // No pod is replaced while there is no StatefulSet to make it again.
        config: (spec_problem.is_none() && statefulset_in_place).then(|| pod_config.clone()),
        in_ordinal_order: cluster.spec.storage.is_some()
            && our_pods.iter().any(|pod| !build::mounts_data_claim(pod)),
    };

    let desired_services = build::services(cluster)?;
    let mut desired_statefulset = build::statefulset_for(cluster, &pod_config)?;
    if let Some(spec) = desired_statefulset.spec.as_mut() {
        spec.replicas = Some(kept);
    }

    let services = Api::<Service>::namespaced(ctx.client.clone(), &namespace);
    let statefulsets = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace);
    let statefulset_step = async {
        if let Some(problem) = &spec_problem {
            return Ok(ChildOutcome::Blocked(Blocker::InvalidSpec(problem.clone())));
        }
        if let Some(sts) = observed_ours {
            if sts.metadata.deletion_timestamp.is_some() {
                // On its way out (we orphaned it): created anew once it is gone.
                return Ok(ChildOutcome::Terminating);
            }
            let changes = build::immutable_changes(&desired_statefulset, sts);
            if !changes.is_empty() {
                delete_child(&statefulsets, sts, Some(PropagationPolicy::Orphan)).await?;
                return Ok(ChildOutcome::Recreating(changes));
            }
        }
        let migrated = match observed_ours {
            Some(sts) if !build::is_on_delete(sts) => {
                Some(switch_to_on_delete(&statefulsets, sts).await?)
            }
            _ => None,
        };
        let observed = migrated.as_ref().or(observed_statefulset.as_deref());
        ensure_child(&statefulsets, observed, &desired_statefulset, &uid).await
    };
    let service_steps = desired_services.iter().map(|desired| {
        let observed = ctx
            .stores
            .services
            .get(&ObjectRef::new(&desired.name_any()).within(&namespace));
        let services = &services;
        let uid = &uid;
        async move { ensure_child(services, observed.as_deref(), desired, uid).await }
    });
    let budgets = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace);
    let desired_budget = build::disruption_budget(cluster)?;
    let observed_budget = ctx
        .stores
        .disruption_budgets
        .get(&ObjectRef::new(&name).within(&namespace));
    let budget_step = async {
        match (&desired_budget, observed_budget.as_deref()) {
            (Some(desired), observed) => ensure_child(&budgets, observed, desired, &uid).await,
            // A single pod has nothing to keep available while another stops.
            (None, Some(ours)) if build::is_controlled_by(ours, &uid) => {
                delete_child(&budgets, ours, None).await?;
                Ok(ChildOutcome::Removed)
            }
            (None, _) => Ok(ChildOutcome::Unchanged),
        }
    };

    // The children and the roles do not depend on each other: one round trip, not several.
    let (service_outcomes, statefulset_outcome, budget_outcome, sizing, roles) = futures::try_join!(
        futures::future::try_join_all(service_steps),
        statefulset_step,
        budget_step,
        storage::grow(ctx, cluster, &namespace),
        roles::ensure(ctx, &namespace, &uid, members, &policy),
    )?;

    let created: Vec<Option<String>> = service_outcomes
        .iter()
        .map(ChildOutcome::created)
        .chain([statefulset_outcome.created(), budget_outcome.created()])
        .collect();
    let mut events: Vec<Event> = creation_event(&created).into_iter().collect();
    events.extend(roles.events);
    if let (ChildOutcome::Updated(_), Some(observed)) =
        (&statefulset_outcome, &observed_statefulset)
    {
        events.extend(statefulset_changes(observed, &desired_statefulset));
    }
    if let ChildOutcome::Recreating(changes) = &statefulset_outcome {
        events.push(Event {
            type_: EventType::Normal,
            reason: "RecreatingStatefulSet".to_owned(),
            note: Some(format!(
                "recreating StatefulSet {name} to change {}, which cannot be updated; its pods \
                 are kept and adopted by the new one",
                changes.join(", ")
            )),
            action: "RecreateStatefulSet".to_owned(),
            secondary: None,
        });
    }

    let blocker = service_outcomes
        .iter()
        .find_map(ChildOutcome::blocker)
        .or_else(|| statefulset_outcome.blocker())
        .or_else(|| budget_outcome.blocker());
    // What the API server answered to our write is newer than the cache: assessing from it
    // gives the status the next reconcile would compute, so that one has nothing to write.
    // A StatefulSet that is not ours says nothing about this cluster.
    let ours = statefulset_outcome
        .written()
        .or(observed_statefulset.as_deref())
        .filter(|sts| build::is_controlled_by(*sts, &uid));
    let pod_refs: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
    let assessment = status::assess(
        cluster,
        &Observed {
            statefulset: ours,
            pods: &pod_refs,
            statefulset_in_sync: matches!(statefulset_outcome, ChildOutcome::Unchanged),
            blocker,
            roles: &roles.plan,
            primary_change: roles.primary_change.as_ref(),
            storage: sizing.as_ref(),
            pod_config: Some(&pod_config),
            now,
            failure_grace: ctx.settings.failure_grace,
        },
    );
    let phase = assessment.status.phase;
    if let Some(event) = lost_readiness_event(cluster, &assessment.status) {
        events.push(event);
    }
    report(ctx, cluster, &namespace, &assessment.status, events).await?;

    let mut requeue = assessment
        .recheck_after
        .map_or(ctx.settings.resync_interval, |after| {
            // A moment past the grace period, so the next look sees it expired.
            (after + Duration::from_secs(1)).min(ctx.settings.resync_interval)
        });
    if blocker.is_some() {
        requeue = requeue.min(BLOCKED_RECHECK);
    }
    if roles.reachable {
        // Replication breaks without a pod event (a link drops, a Redis hangs): look again.
        requeue = requeue.min(ctx.settings.redis_probe_interval);
    }
    if roles.plan.urgent {
        // A primary in trouble or changing hands: every moment counts toward writes failing.
        requeue = requeue.min(URGENT_RECHECK);
    }
    Ok((Action::requeue(requeue), phase))
}

/// Writes the status if it changed, with `events` and, when the cluster has just failed, an
/// event that says why. Events go out alongside the status write rather than after it: a
/// reconcile holds its cluster's slot until it returns, and events are for people, not for
/// correctness.
async fn report(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
    status: &RedisClusterStatus,
    mut events: Vec<Event>,
) -> Result<()> {
    let previous_phase = cluster.status.as_ref().map(|s| s.phase);
    if status.phase == Phase::Failed && previous_phase != Some(Phase::Failed) {
        events.push(failure_event(status));
    }
    let status_changed = cluster.status.as_ref() != Some(status);
    let write = async {
        if status_changed {
            write_status(ctx, namespace, &cluster.name_any(), status).await
        } else {
            Ok(())
        }
    };
    let (written, ()) = futures::join!(write, publish(ctx, cluster, &events));
    written
}

/// What happened to one child in this reconcile.
#[derive(Debug, PartialEq)]
enum ChildOutcome<K> {
    /// The cached object already says everything we would apply: nothing was sent.
    Unchanged,
    /// Created, or updated by a forced apply: the object as the API server answered.
    Created(K),
    Updated(K),
    Blocked(Blocker),
    /// Deleted, its pods orphaned, to be created anew: these immutable fields must change.
    Recreating(Vec<&'static str>),
    /// Being deleted (by us, to recreate it): nothing to do until it is gone.
    Terminating,
    /// Deleted: the spec no longer asks for it.
    Removed,
}

impl<K: Resource<DynamicType = ()>> ChildOutcome<K> {
    fn blocker(&self) -> Option<&Blocker> {
        match self {
            ChildOutcome::Blocked(blocker) => Some(blocker),
            _ => None,
        }
    }

    fn written(&self) -> Option<&K> {
        match self {
            ChildOutcome::Created(object) | ChildOutcome::Updated(object) => Some(object),
            _ => None,
        }
    }

    /// "Kind name" of the object, if this reconcile created it.
    fn created(&self) -> Option<String> {
        match self {
            ChildOutcome::Created(object) => {
                Some(format!("{} {}", K::kind(&()), object.name_any()))
            }
            _ => None,
        }
    }
}

/// One event for every child created in a reconcile (each event is a write to the API server).
fn creation_event(created: &[Option<String>]) -> Option<Event> {
    let created: Vec<&str> = created.iter().flatten().map(String::as_str).collect();
    if created.is_empty() {
        return None;
    }
    Some(Event {
        type_: EventType::Normal,
        reason: "Created".to_owned(),
        note: Some(format!("created {}", created.join(", "))),
        action: "CreateChildren".to_owned(),
        secondary: None,
    })
}

/// Brings one child in line with `desired`, touching only an object this cluster controls.
async fn ensure_child<K>(
    api: &Api<K>,
    observed: Option<&K>,
    desired: &K,
    owner_uid: &str,
) -> Result<ChildOutcome<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let kind = K::kind(&()).into_owned();
    let name = desired.name_any();
    let not_owned = || {
        ChildOutcome::Blocked(Blocker::NotOwned {
            kind: kind.clone(),
            name: name.clone(),
        })
    };
    match observed {
        Some(existing) if !build::is_controlled_by(existing, owner_uid) => return Ok(not_owned()),
        Some(existing) if drift::is_applied(desired, existing) => {
            return Ok(ChildOutcome::Unchanged);
        }
        Some(_) => return apply(api, desired).await,
        None => {}
    }
    // Not in our cache. A create, unlike an apply, can never modify an object that exists.
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&params, desired).await {
        Ok(created) => Ok(ChildOutcome::Created(created)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Something has the name: not labelled as ours, or the cache is behind our own create.
            let existing = api.get(&name).await?;
            if !build::is_controlled_by(&existing, owner_uid) {
                Ok(not_owned())
            } else if drift::is_applied(desired, &existing) {
                Ok(ChildOutcome::Unchanged)
            } else {
                apply(api, desired).await
            }
        }
        Err(error) => rejected_or(error, &kind),
    }
}

/// Deletes a child of ours, the one we looked at (its uid is a precondition). A StatefulSet is
/// deleted with `Orphan` to recreate it: its pods are kept, then adopted by the StatefulSet
/// created in its place, which selects them with the same labels.
async fn delete_child<K>(
    api: &Api<K>,
    child: &K,
    propagation_policy: Option<PropagationPolicy>,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let params = DeleteParams {
        propagation_policy,
        preconditions: Some(Preconditions {
            uid: child.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&child.name_any(), &params).await {
        Ok(_) => Ok(()),
        // Gone already.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Switches a StatefulSet of an earlier release (`RollingUpdate`, with the API server's
/// default `rollingUpdate.partition`) to `OnDelete`. An apply cannot do it: that earlier
/// release created the StatefulSet, so the partition is not the apply's to drop, and the API
/// server refuses `rollingUpdate` beside `OnDelete`. A merge patch removes it. The pod
/// template is untouched: no pod restarts. The uid is a precondition.
async fn switch_to_on_delete(api: &Api<StatefulSet>, sts: &StatefulSet) -> Result<StatefulSet> {
    let patch = serde_json::json!({
        "metadata": { "uid": sts.uid() },
        "spec": { "updateStrategy": { "type": "OnDelete", "rollingUpdate": null } }
    });
    let patched = api
        .patch(
            &sts.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    info!(statefulset = %sts.name_any(), "update strategy switched to OnDelete");
    Ok(patched)
}

/// Server-side apply, forced: fields we own that someone else changed are taken back.
async fn apply<K>(api: &Api<K>, desired: &K) -> Result<ChildOutcome<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let params = PatchParams::apply(MANAGER).force();
    match api
        .patch(&desired.name_any(), &params, &Patch::Apply(desired))
        .await
    {
        Ok(applied) => Ok(ChildOutcome::Updated(applied)),
        Err(error) => rejected_or(error, &K::kind(&())),
    }
}

/// An object the API server refuses as invalid, or forbids (a ResourceQuota, a missing RBAC
/// grant), is the user's to fix, not ours to retry: the status says why.
fn rejected_or<K>(error: kube::Error, kind: &str) -> Result<ChildOutcome<K>> {
    match error {
        kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => {
            Ok(ChildOutcome::Blocked(Blocker::Rejected {
                kind: kind.to_owned(),
                message: status.message,
            }))
        }
        error => Err(error.into()),
    }
}

/// Events for a StatefulSet we are about to change: a scale and an image roll.
fn statefulset_changes(observed: &StatefulSet, desired: &StatefulSet) -> Vec<Event> {
    let mut events = Vec::new();
    let (from, to) = (
        build::desired_replicas(observed),
        build::desired_replicas(desired),
    );
    if from != to {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Scaling".to_owned(),
            note: Some(format!("scaling from {from} to {to} replicas")),
            action: "Scale".to_owned(),
            secondary: None,
        });
    }
    let (from, to) = (build::redis_image(observed), build::redis_image(desired));
    if from != to {
        events.push(Event {
            type_: EventType::Normal,
            reason: "ImageChanged".to_owned(),
            note: Some(format!(
                "rolling pods from image {} to {}",
                from.unwrap_or("(none)"),
                to.unwrap_or("(none)")
            )),
            action: "RollImage".to_owned(),
            secondary: None,
        });
    }
    events
}

fn failure_event(status: &RedisClusterStatus) -> Event {
    let degraded = status.condition(DEGRADED);
    Event {
        type_: EventType::Warning,
        reason: degraded.map_or("Failed", |c| c.reason.as_str()).to_owned(),
        note: degraded.map(|c| c.message.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// A Running cluster that goes back to Scaling although its spec did not change lost a pod (a
/// crash, a restart, a deleted pod, a hung Redis): worth telling people, with the pods it names.
fn lost_readiness_event(cluster: &RedisCluster, status: &RedisClusterStatus) -> Option<Event> {
    let previous = cluster.status.as_ref()?;
    let unprompted = previous.observed_generation == status.observed_generation;
    let lost = status.ready_replicas < previous.ready_replicas;
    if previous.phase != Phase::Running || status.phase != Phase::Scaling || !unprompted || !lost {
        return None;
    }
    Some(Event {
        type_: EventType::Warning,
        reason: "ReplicaNotReady".to_owned(),
        note: status.condition(READY).map(|c| c.message.clone()),
        action: "Reconcile".to_owned(),
        secondary: None,
    })
}

/// The cluster's pods from the cache.
fn cluster_pods(ctx: &Context, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
    ctx.stores
        .pods
        .state()
        .into_iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(build::INSTANCE_LABEL).map(String::as_str) == Some(name)
        })
        .collect()
}

async fn write_status(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &RedisClusterStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": RedisCluster::api_version(&()),
        "kind": RedisCluster::kind(&()),
        "status": status,
    });
    Api::<RedisCluster>::namespaced(ctx.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Events are for people; failing to record one must not fail the reconcile.
async fn publish(ctx: &Context, cluster: &RedisCluster, events: &[Event]) {
    let reference = cluster.object_ref(&());
    let published = events.iter().map(|event| {
        let reference = &reference;
        async move {
            if let Err(error) = ctx.recorder.publish(event, reference).await {
                warn!(cluster = %ObjectRef::from_obj(cluster), reason = %event.reason, %error, "could not publish event");
            }
        }
    });
    futures::future::join_all(published).await;
}

#[cfg(test)]
mod tests;
