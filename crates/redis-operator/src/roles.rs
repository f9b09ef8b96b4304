//! The Redis side of a reconcile: ask each pod's Redis (I/O), decide roles (topology.rs,
//! pure), act: role labels on the pods and `REPLICAOF` on the Redis side (I/O).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::build;
use crate::context::Context;
use crate::error::Result;
use crate::pod_redis::PodAddress;
use crate::status::{self, STUCK_REASONS};
use crate::topology::{self, Member, Plan, Relabel, Role, Seen};

/// What the Redis side of one reconcile found and did.
pub struct Roles {
    pub plan: Plan,
    /// Some pod of the cluster has an address: its Redis is worth asking again soon.
    pub reachable: bool,
    pub events: Vec<Event>,
}

/// The cluster's pods as topology members (not yet asked: `Seen::NoAddress`), each with where
/// its Redis is when it has an address and is not terminating.
pub fn members(pods: &[Arc<Pod>]) -> Vec<(Member, Option<PodAddress>)> {
    pods.iter()
        .filter_map(|pod| {
            let name = pod.name_any();
            let ordinal = topology::ordinal(&name)?;
            let address = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let target = match (&address, terminating) {
                (Some(ip), false) => Some(PodAddress {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: name.clone(),
                    uid: pod.uid().unwrap_or_default(),
                    ip: ip.clone(),
                }),
                _ => None,
            };
            let never_started = never_started(pod);
            let member = Member {
                name,
                ordinal,
                address,
                ready: status::pod_condition(pod, "ContainersReady", "True").is_some(),
                terminating,
                label: pod
                    .labels()
                    .get(build::ROLE_LABEL)
                    .and_then(|value| Role::parse(value)),
                seen: never_started
                    .clone()
                    .map_or(Seen::NoAddress, Seen::NeverStarted),
            };
            // Nothing to ask where Redis never ran.
            Some((member, target.filter(|_| never_started.is_none())))
        })
        .collect()
}

/// Asks the Redis of every member that has an address, all at once.
async fn probe(
    ctx: &Context,
    members: Vec<(Member, Option<PodAddress>)>,
) -> Vec<(Member, Option<PodAddress>)> {
    let asked = members.into_iter().map(|(member, target)| async move {
        let seen = match &target {
            Some(target) => match ctx.redis.replication(target).await {
                Ok(replication) => Seen::Answered(replication),
                Err(why) => Seen::Silent(why),
            },
            None => member.seen.clone(),
        };
        (Member { seen, ..member }, target)
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

/// Observes, decides and acts for a cluster that keeps `replicas` pods. `previous_primary` is
/// what the status said, for the event when the primary changes.
pub async fn ensure(
    ctx: &Context,
    namespace: &str,
    members: Vec<(Member, Option<PodAddress>)>,
    replicas: i32,
    previous_primary: Option<&str>,
) -> Result<Roles> {
    let (members, targets): (Vec<Member>, Vec<Option<PodAddress>>) =
        probe(ctx, members).await.into_iter().unzip();
    let reachable = targets.iter().any(Option::is_some);
    let mut plan = topology::decide(&members, replicas);
    // Where the pod of this name is, if it was asked.
    let target_of = |pod: &str| {
        let index = members.iter().position(|m| m.name == pod)?;
        targets[index].as_ref()
    };
    let uid_of = |pod: &str| target_of(pod).map(|t| t.uid.clone());
    let api = Api::<Pod>::namespaced(ctx.client.clone(), namespace);

    // No moment with two pods labelled primary: the old one loses the label first.
    relabel_all(&api, &plan.demote, &uid_of).await?;

    let run = plan.commands.iter().map(|(pod, command)| {
        let target = target_of(pod);
        async move {
            let result = match target {
                Some(target) => ctx.redis.run(target, command).await,
                None => Err("no address".to_owned()),
            };
            (pod.clone(), command.clone(), result)
        }
    });
    let mut failed = Vec::new();
    for (pod, command, result) in futures::future::join_all(run).await {
        match result {
            Ok(()) => info!(%pod, %command, "sent to Redis"),
            Err(why) => {
                if command == topology::Command::Promote {
                    plan.primary = None;
                }
                plan.waiting
                    .get_or_insert_with(|| format!("{command} on pod {pod} failed: {why}"));
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

    let mut events = Vec::new();
    if let Some(primary) = plan.primary.as_deref()
        && previous_primary != Some(primary)
    {
        events.push(Event {
            type_: EventType::Normal,
            reason: "PrimaryChanged".to_owned(),
            note: Some(match previous_primary {
                Some(previous) => format!("pod {primary} is the primary, in place of {previous}"),
                None => format!("pod {primary} is the primary"),
            }),
            action: "AssignRoles".to_owned(),
            secondary: None,
        });
    }
    Ok(Roles {
        plan,
        reachable,
        events,
    })
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
