//! One reconcile, as a driver of a screenful with a typed value between its steps:
//!
//! - [`observe`]: what the caches show of the cluster ([`Observed`]; no request sent);
//! - [`plan`]: what it should have ([`Desired`]: its children, the pods to keep, the role
//!   policy), or why nothing can be made for it (a [`Blocker`]); pure;
//! - [`apply`]: children written where they drifted, claims grown, roles run ([`Applied`]);
//! - [`status::assess`] (pure), then [`report`]: the status written only when it changed,
//!   with the events.
//!
//! `spec.replicas` reaches the StatefulSet in four functions: [`plan`] asks
//! [`topology::pods_to_keep`] how many pods to keep and [`desired::statefulset`] sets them;
//! [`apply_statefulset`] hands the StatefulSet to [`children::ensure_child`], which writes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use rediscluster_crd::conditions::{DEGRADED, READY};
use rediscluster_crd::{Phase, RedisCluster, RedisClusterStatus};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::MANAGER;
use crate::auth::{self, Auth, ClusterCredentials, Password};
use crate::children::{self, ChildOutcome, delete_child, ensure_child, switch_to_on_delete};
use crate::context::{Context, Settings};
use crate::desired;
use crate::error::{Error, Result};
use crate::names::INSTANCE_LABEL;
use crate::observed::{
    controller_uid, desired_replicas, immutable_changes, is_controlled_by, is_on_delete,
};
use crate::pod;
use crate::pod_config::{LiveConfig, foreign_template, pod_config};
use crate::redis;
use crate::roles::{self, PodView, Roles};
use crate::status::{self, Assessment, Blocker, Facts};
use crate::storage::{self, Sizing};
use crate::topology::{self, Policy, RoleReport};
use crate::trim::Packed;

/// Reconciles one RedisCluster and logs the outcome: one line per reconcile.
pub async fn reconcile(cluster: Arc<RedisCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(&*cluster);
    let result = reconcile_cluster(&cluster, &ctx).await;
    let elapsed = started.elapsed();
    ctx.pacing.record(elapsed);
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
/// a silent Redis is asked at most once a second (`redis::client`'s backoff), and a status is
/// written only when it changed.
pub const URGENT_RECHECK: Duration = Duration::from_millis(250);

async fn reconcile_cluster(cluster: &RedisCluster, ctx: &Context) -> Result<(Action, Phase)> {
    if cluster.meta().deletion_timestamp.is_some() {
        // Deletion is final: the garbage collector removes the children, and recreating one on
        // the way out would only hold the deletion up.
        let phase = cluster.status.as_ref().map_or(Phase::Pending, |s| s.phase);
        return Ok((Action::await_change(), phase));
    }
    // A former leader (paused past its Lease, its renewal loop not yet aware) writes nothing:
    // no child, no status, no label, no Redis command (checked again before the roles run).
    if !ctx.tenure.holds() {
        return Err(Error::NotLeading);
    }
    let observed = observe(cluster, ctx)?;
    let mut desired = match plan(cluster, &observed, &ctx.settings)? {
        Ok(desired) => desired,
        Err(blocker) => return report_blocked(ctx, cluster, &observed, blocker).await,
    };
    let members = observed.members.iter().map(|p| &p.member);
    let rolling = topology::rolls(members, &desired.policy);
    desired.policy.roll_held = !ctx.rolls.admit(&observed.uid, rolling, Instant::now());
    let mut applied = apply(ctx, cluster, &observed, &desired).await?;
    let pods: Vec<&Pod> = observed.pods.iter().collect();
    let facts = applied.facts(&observed, &desired, &pods, &ctx.settings);
    let assessment = status::assess(cluster, &facts);
    let events = applied.events(cluster, &observed, &assessment.status);
    let held = report(ctx, cluster, &observed, &assessment.status, events).await?;
    let probe_interval = ctx.pacing.probe_interval(ctx.settings.redis_probe_interval);
    ctx.metrics.set_probe_interval(probe_interval);
    let after = requeue_after(&assessment, &applied, &ctx.settings, probe_interval);
    let action = Action::requeue(sooner(after, held));
    Ok((action, assessment.status.phase))
}

/// What the caches show of one cluster.
struct Observed {
    namespace: String,
    uid: String,
    /// Every pod with the cluster's instance label (the status names the unready ones).
    pods: Vec<Pod>,
    /// The StatefulSet under the cluster's name, ours or not.
    statefulset: Option<StatefulSet>,
    budget: Option<Arc<PodDisruptionBudget>>,
    /// The pods of our own StatefulSet, as members of the role decision.
    members: Vec<PodView>,
    /// A handover failed lately (`memory`): none is started again yet.
    handover_held: bool,
    /// How long ago this process last wrote the cluster's status (`memory`).
    since_status_written: Option<Duration>,
    /// Now, to the second (the status's times are whole seconds).
    now: Timestamp,
    /// The cluster's operator-held passwords.
    credentials: ClusterCredentials,
}

impl Observed {
    /// The cluster's pods that exist and are not on their way out.
    fn exist(&self) -> usize {
        self.pods.iter().filter(|p| !pod::is_leaving(p)).count()
    }

    /// The observed StatefulSet, if this cluster controls it.
    fn ours(&self) -> Option<&StatefulSet> {
        controlled(self.statefulset.as_ref(), &self.uid)
    }
}

/// `statefulset`, if the cluster with this uid controls it: one that is not ours says nothing
/// about the cluster.
fn controlled<'a>(statefulset: Option<&'a StatefulSet>, uid: &str) -> Option<&'a StatefulSet> {
    statefulset.filter(|sts| is_controlled_by(*sts, uid))
}

fn observe(cluster: &RedisCluster, ctx: &Context) -> Result<Observed> {
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let uid = cluster.uid().ok_or(Error::MissingObjectKey("uid"))?;
    let name = cluster.name_any();
    let pods = cluster_pods(ctx, &namespace, &name)?;
    let statefulset = ctx
        .stores
        .statefulsets
        .get(&ObjectRef::new(&name).within(&namespace))
        .map(|cached| unpack(&cached))
        .transpose()?;
    let statefulset_uid = controlled(statefulset.as_ref(), &uid).and_then(|sts| sts.uid());
    let (demoted, handover_held, since_status_written) = ctx.memory.recall(&uid, |m| {
        let since_status_written = m.status_written.map(|at| at.elapsed());
        (
            m.demoted(),
            m.handover_failed_lately(),
            since_status_written,
        )
    });
    // Roles are given only to the pods of our own StatefulSet: pods that another controller
    // owns are not ours to label or to tell whom to follow. Pods without a controller are
    // the StatefulSet's while it is recreated (orphaned by us, soon adopted by the new one):
    // leaving them out would show the roles a part of the cluster, without its primary.
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    let credentials = ctx.credentials.of_cluster(&uid);
    let members = pods
        .iter()
        .filter(|pod| match controller_uid(*pod) {
            Some(owner) => Some(owner) == statefulset_uid.as_deref(),
            None => true,
        })
        .filter_map(|pod| PodView::of(pod, &demoted, now, &credentials))
        .collect();
    Ok(Observed {
        budget: ctx
            .stores
            .disruption_budgets
            .get(&ObjectRef::new(&name).within(&namespace)),
        namespace,
        uid,
        pods,
        statefulset,
        members,
        handover_held,
        since_status_written,
        now,
        credentials,
    })
}

/// What the cluster should have.
struct Desired {
    statefulset: StatefulSet,
    services: [Service; 3],
    budget: Option<PodDisruptionBudget>,
    /// What the pods should be made for (`pod_config`).
    pod_config: String,
    /// A spec the schema could not check fully (`rediscluster_crd::spec_problem`): the
    /// StatefulSet keeps the last valid one, and no pod is replaced, while roles, failover and
    /// the other children carry on.
    invalid_spec: Option<Blocker>,
    /// What the role decision goes by.
    policy: Policy,
    auth: Auth,
}

/// What `cluster` should have, from what was observed; or why no child can be made for it.
fn plan(
    cluster: &RedisCluster,
    observed: &Observed,
    settings: &Settings,
) -> Result<Result<Desired, Blocker>> {
    let name = cluster.name_any();
    if let Some(problem) = rediscluster_crd::name_problem(&name) {
        // Made before the CRD refused such names: no child could work, so none is made.
        return Ok(Err(Blocker::InvalidName(problem)));
    }
    let ours = observed.ours();
    let invalid_spec = rediscluster_crd::spec_problem(&cluster.spec).map(Blocker::InvalidSpec);
    let foreign = ours.and_then(|sts| foreign_template(sts, &name, cluster.spec.pod.as_ref()));
    let auth = auth::auth(cluster, ours, observed.pods.iter());
    let pod_config = pod_config(&cluster.spec, foreign.as_deref(), auth.secret());
    let in_place = ours.is_some_and(|sts| sts.metadata.deletion_timestamp.is_none());
    // A scale-down waits for the primary to hand over to a pod that stays (and, in `apply`,
    // for it to answer).
    let members = observed.members.iter().map(|p| &p.member);
    let kept = topology::pods_to_keep(members, cluster.spec.replicas);
    let (min_replicas, max_lag) = cluster.spec.fencing();
    let policy = Policy {
        kept,
        desired: cluster.spec.replicas,
        failover_after: settings.failover_after,
        // No pod is replaced while there is no StatefulSet to make it again.
        config: (invalid_spec.is_none() && in_place).then(|| pod_config.clone()),
        in_ordinal_order: cluster.spec.storage.is_some()
            && observed.pods.iter().any(|pod| !pod::mounts_data_claim(pod)),
        handover_held: observed.handover_held,
        settings: redis::Settings {
            min_replicas,
            max_lag,
            ping_period: redis::PING_PERIOD_SECONDS,
            replication_auth: auth.secret().is_some(),
        },
        live_config: LiveConfig::of(&cluster.spec),
        // Whether another cluster's roll holds this one's is asked when it is applied.
        roll_held: false,
    };
    let pod_auth = auth.secret().map(|secret| desired::PodAuth {
        secret,
        credentials: &observed.credentials,
        tls: auth::tls_secret(&cluster.spec, Some(secret)),
    });
    Ok(Ok(Desired {
        statefulset: desired::statefulset(cluster, &pod_config, kept, pod_auth)?,
        services: desired::services(cluster)?,
        budget: desired::disruption_budget(cluster)?,
        pod_config,
        invalid_spec,
        policy,
        auth,
    }))
}

/// What this reconcile wrote and found.
struct Applied {
    services: Vec<ChildOutcome<Service>>,
    statefulset: ChildOutcome<StatefulSet>,
    budget: ChildOutcome<PodDisruptionBudget>,
    sizing: Option<Sizing>,
    roles: Roles,
}

/// Writes the children that drifted, grows the claims and runs the roles. They do not depend
/// on each other: one round trip, not several; except a scale-down, which waits for the roles
/// to say the primary answers ([`scale_down_held`]), every pod still a candidate meanwhile.
async fn apply(
    ctx: &Context,
    cluster: &RedisCluster,
    observed: &Observed,
    desired: &Desired,
) -> Result<Applied> {
    let namespace = &observed.namespace;
    let name = cluster.name_any();
    make_password_secret(ctx, cluster, observed, &desired.auth).await?;
    let run_roles = |policy: Policy| {
        let members = observed.members.clone();
        let name = &name;
        async move { roles::ensure(ctx, namespace, name, &observed.uid, members, &policy).await }
    };
    let current = observed.ours().map(desired_replicas);
    let (roles_first, held) = match current {
        Some(current) if current > desired.policy.kept => {
            let before = Policy {
                kept: current,
                ..desired.policy.clone()
            };
            let roles = run_roles(before).await?;
            let held = scale_down_held(&roles.report, desired, current);
            (Some(roles), held)
        }
        _ => (None, None),
    };
    let statefulset = held.as_ref().unwrap_or(&desired.statefulset);
    let service_steps = desired.services.iter().map(|service| {
        let key = ObjectRef::new(&service.name_any()).within(namespace);
        let cached = ctx
            .stores
            .services
            .get(&key)
            .map(|c| unpack(&c))
            .transpose();
        let api = Api::<Service>::namespaced(ctx.client.clone(), namespace);
        async move { ensure_child(&api, cached?.as_ref(), service, &observed.uid).await }
    });
    let roles = async {
        match roles_first {
            Some(roles) => Ok(roles),
            None => run_roles(desired.policy.clone()).await,
        }
    };
    let (services, statefulset, budget, sizing, roles) = futures::try_join!(
        futures::future::try_join_all(service_steps),
        apply_statefulset(
            ctx,
            cluster,
            observed,
            desired.invalid_spec.as_ref(),
            statefulset
        ),
        apply_budget(ctx, observed, desired),
        storage::grow(ctx, cluster, namespace),
        roles,
    )?;
    Ok(Applied {
        services,
        statefulset,
        budget,
        sizing,
        roles,
    })
}

/// Makes the generated password Secret before the pods are made with auth: when there is no
/// StatefulSet yet, or ours was made without auth. Only ever created: a Secret of that name
/// that exists already (an earlier reconcile's, or the user's) is used as it is, and the
/// operator never reads it. Once the pods have auth, nothing is sent.
async fn make_password_secret(
    ctx: &Context,
    cluster: &RedisCluster,
    observed: &Observed,
    auth: &Auth,
) -> Result<()> {
    let Auth::On(secret) = auth else {
        return Ok(());
    };
    if !secret.generated || observed.ours().is_some_and(auth::statefulset_has_auth) {
        return Ok(());
    }
    let password = Password::random().map_err(Error::Randomness)?;
    let object = desired::password_secret(cluster, secret, &password)?;
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match Api::<Secret>::namespaced(ctx.client.clone(), &observed.namespace)
        .create(&params, &object)
        .await
    {
        Ok(_) => {
            info!(secret = %secret.name, "made the password Secret");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The desired StatefulSet kept larger than the plan's, from what the roles found: at its `current` size while the primary is in trouble (a scale-down now could remove
/// the in-sync replica that has to take over), and never below the primary Redis named (the
/// cache the plan read may not show its label yet). None when the scale-down may go on.
fn scale_down_held(roles: &RoleReport, desired: &Desired, current: i32) -> Option<StatefulSet> {
    let primary_needs = roles
        .primary
        .as_deref()
        .and_then(pod::ordinal)
        .map_or(0, |ordinal| ordinal + 1);
    let kept = match roles.outage {
        Some(_) => current,
        None => desired.policy.kept.max(primary_needs).min(current),
    };
    if kept == desired.policy.kept {
        return None;
    }
    let mut held = desired.statefulset.clone();
    if let Some(spec) = held.spec.as_mut() {
        spec.replicas = Some(kept);
    }
    Some(held)
}

/// Writes the StatefulSet: refused for an invalid spec, recreated (its pods orphaned, then
/// adopted) when an immutable field must change, switched to `OnDelete` if an earlier release
/// made it, else created or applied where it drifted; and nudged while its pods could not be
/// created (`children::nudge_due`).
async fn apply_statefulset(
    ctx: &Context,
    cluster: &RedisCluster,
    observed: &Observed,
    invalid_spec: Option<&Blocker>,
    desired: &StatefulSet,
) -> Result<ChildOutcome<StatefulSet>> {
    if let Some(invalid) = invalid_spec {
        return Ok(ChildOutcome::Blocked(invalid.clone()));
    }
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &observed.namespace);
    let ours = observed.ours();
    if let Some(sts) = ours {
        if sts.metadata.deletion_timestamp.is_some() {
            // On its way out (we orphaned it): created anew once it is gone.
            return Ok(ChildOutcome::Terminating);
        }
        let changes = immutable_changes(desired, sts);
        if !changes.is_empty() {
            delete_child(&api, sts, Some(PropagationPolicy::Orphan)).await?;
            return Ok(ChildOutcome::Recreating(changes));
        }
    }
    let migrated = match ours {
        Some(sts) if !is_on_delete(sts) => Some(switch_to_on_delete(&api, sts).await?),
        _ => None,
    };
    let current = migrated.as_ref().or(observed.statefulset.as_ref());
    let outcome = ensure_child(&api, current, desired, &observed.uid).await?;
    if let (ChildOutcome::Unchanged, Some(sts)) = (&outcome, ours)
        && children::nudge_due(cluster.status.as_ref(), sts, observed.exist(), observed.now)
    {
        children::nudge(&api, sts, observed.now).await?;
    }
    Ok(outcome)
}

/// Writes the PodDisruptionBudget, or deletes ours when a single pod needs none.
async fn apply_budget(
    ctx: &Context,
    observed: &Observed,
    desired: &Desired,
) -> Result<ChildOutcome<PodDisruptionBudget>> {
    let api = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &observed.namespace);
    match (&desired.budget, observed.budget.as_deref()) {
        (Some(budget), cached) => ensure_child(&api, cached, budget, &observed.uid).await,
        // A single pod has nothing to keep available while another stops.
        (None, Some(ours)) if is_controlled_by(ours, &observed.uid) => {
            delete_child(&api, ours, None).await?;
            Ok(ChildOutcome::Removed)
        }
        (None, _) => Ok(ChildOutcome::Unchanged),
    }
}

impl Applied {
    /// Why a child could not be written, if one could not.
    fn blocker(&self) -> Option<&Blocker> {
        self.services
            .iter()
            .find_map(ChildOutcome::blocker)
            .or_else(|| self.statefulset.blocker())
            .or_else(|| self.budget.blocker())
    }

    /// What the status is assessed from. What the API server answered to our write is newer
    /// than the cache: assessing from it gives the status the next reconcile would compute,
    /// so that one has nothing to write. A StatefulSet that is not ours says nothing about
    /// this cluster.
    fn facts<'a>(
        &'a self,
        observed: &'a Observed,
        desired: &'a Desired,
        pods: &'a [&'a Pod],
        settings: &Settings,
    ) -> Facts<'a> {
        let written = self.statefulset.written();
        let statefulset = controlled(written.or(observed.statefulset.as_ref()), &observed.uid);
        Facts {
            statefulset,
            pods,
            statefulset_in_sync: matches!(self.statefulset, ChildOutcome::Unchanged),
            blocker: self.blocker(),
            roles: &self.roles.report,
            primary_change: self.roles.primary_change.as_ref(),
            storage: self.sizing.as_ref(),
            pod_config: Some(&desired.pod_config),
            passwords: desired
                .auth
                .secret()
                .map(|_| self.roles.passwords.as_slice()),
            now: observed.now,
            failure_grace: settings.failure_grace,
            progress_deadline: settings.progress_deadline,
        }
    }

    /// The events of this reconcile: children created, a StatefulSet changed or recreated,
    /// the roles' changes, and a cluster that lost a pod on its own.
    fn events(
        &mut self,
        cluster: &RedisCluster,
        observed: &Observed,
        status: &RedisClusterStatus,
    ) -> Vec<Event> {
        let created: Vec<Option<String>> = self
            .services
            .iter()
            .map(ChildOutcome::created)
            .chain([self.statefulset.created(), self.budget.created()])
            .collect();
        let mut events: Vec<Event> = children::creation_event(&created).into_iter().collect();
        events.append(&mut self.roles.events);
        match (&self.statefulset, observed.statefulset.as_ref()) {
            // What was written, which a scale-down held back may make differ from the plan.
            (ChildOutcome::Updated(written), Some(before)) => {
                events.extend(children::statefulset_changes(before, written));
            }
            (ChildOutcome::Recreating(changes), _) => {
                events.push(recreating_event(&cluster.name_any(), changes));
            }
            _ => {}
        }
        events.extend(lost_readiness_event(cluster, status));
        events
    }
}

/// The status of a cluster for which no child can be made, and a look again at the resync.
async fn report_blocked(
    ctx: &Context,
    cluster: &RedisCluster,
    observed: &Observed,
    blocker: Blocker,
) -> Result<(Action, Phase)> {
    let facts = Facts {
        statefulset: None,
        pods: &[],
        statefulset_in_sync: false,
        blocker: Some(&blocker),
        roles: &RoleReport::default(),
        primary_change: None,
        storage: None,
        pod_config: None,
        passwords: None,
        now: observed.now,
        failure_grace: ctx.settings.failure_grace,
        progress_deadline: ctx.settings.progress_deadline,
    };
    let status = status::assess(cluster, &facts).status;
    let held = report(ctx, cluster, observed, &status, Vec::new()).await?;
    let after = sooner(ctx.settings.resync_interval, held);
    Ok((Action::requeue(after), status.phase))
}

/// `after`, or a held status's look if that comes sooner.
fn sooner(after: Duration, held: Option<Duration>) -> Duration {
    held.map_or(after, |held| held.min(after))
}

/// When to look again: at the resync, or sooner when time alone changes the status, a child
/// is blocked, the pods' Redis is worth asking again (`probe_interval`, from `pacing`), or the
/// primary is in trouble.
fn requeue_after(
    assessment: &Assessment,
    applied: &Applied,
    settings: &Settings,
    probe_interval: Duration,
) -> Duration {
    let mut after = assessment
        .recheck_after
        .map_or(settings.resync_interval, |after| {
            // A moment past the grace period, so the next look sees it expired.
            (after + Duration::from_secs(1)).min(settings.resync_interval)
        });
    if applied.blocker().is_some() {
        after = after.min(BLOCKED_RECHECK);
    }
    if applied.roles.reachable {
        // Replication breaks without a pod event (a link drops, a Redis hangs): look again.
        after = after.min(probe_interval);
    }
    if applied.roles.urgent {
        // A primary in trouble or changing hands: every moment counts toward writes failing.
        after = after.min(URGENT_RECHECK);
    }
    after
}

fn recreating_event(name: &str, changes: &[&'static str]) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "RecreatingStatefulSet".to_owned(),
        note: Some(format!(
            "recreating StatefulSet {name} to change {}, which cannot be updated; its pods \
             are kept and adopted by the new one",
            changes.join(", ")
        )),
        action: "RecreateStatefulSet".to_owned(),
        secondary: None,
    }
}

/// The cluster's pods from the cache.
fn cluster_pods(ctx: &Context, namespace: &str, name: &str) -> Result<Vec<Pod>> {
    ctx.stores
        .pods
        .state()
        .iter()
        .filter(|pod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(name)
        })
        .map(|cached| unpack(cached))
        .collect()
}

/// A cached child as it was cached.
fn unpack<K>(cached: &Packed<K>) -> Result<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    cached.unpack().map_err(|source| Error::Unpack {
        kind: K::kind(&()).into_owned(),
        source,
    })
}

/// Writes the status if it changed (or, when it only refines the last one written, once
/// [`status::DETAIL_HOLD`] has passed: then returns when to look again), with `events` and,
/// when the cluster has just failed, an event that says why. Events go out alongside the
/// status write rather than after it: a reconcile holds its cluster's slot until it returns,
/// and events are for people, not for correctness.
async fn report(
    ctx: &Context,
    cluster: &RedisCluster,
    observed: &Observed,
    status: &RedisClusterStatus,
    mut events: Vec<Event>,
) -> Result<Option<Duration>> {
    let previous_phase = cluster.status.as_ref().map(|s| s.phase);
    if status.phase == Phase::Failed && previous_phase != Some(Phase::Failed) {
        events.push(failure_event(status));
    }
    let when = status::when_to_write(
        cluster.status.as_ref(),
        status,
        observed.since_status_written,
    );
    let write = async {
        if when == status::Write::Now {
            write_status(ctx, cluster, status).await?;
            ctx.memory
                .recall(&observed.uid, |m| m.status_written = Some(Instant::now()));
        }
        Ok(())
    };
    let (written, ()) = futures::join!(write, publish(ctx, cluster, &events));
    written.map(|()| match when {
        status::Write::After(wait) => Some(wait),
        _ => None,
    })
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

async fn write_status(
    ctx: &Context,
    cluster: &RedisCluster,
    status: &RedisClusterStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": RedisCluster::api_version(&()),
        "kind": RedisCluster::kind(&()),
        "status": status,
    });
    let namespace = cluster.namespace().unwrap_or_default();
    Api::<RedisCluster>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &cluster.name_any(),
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
