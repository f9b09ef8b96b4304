//! What the caches keep of each object: only what a reconcile reads. Objects are trimmed as
//! they arrive, before they are cached, so the operator's memory grows with what it uses
//! rather than with everything the API server sends. The largest part of most objects, their
//! managedFields, is never even decoded (`WithoutManagedFields`): the operator decides drift
//! from the fields themselves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodSpec, PodStatus,
    Volume,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use rediscluster_crd::RedisCluster;

use crate::names;

mod decode;
pub use decode::WithoutManagedFields;

/// `kubectl apply` keeps a full copy of the object in this annotation; nothing here reads it.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub fn cluster(cluster: &mut RedisCluster) {
    cluster.annotations_mut().remove(LAST_APPLIED);
}

/// StatefulSets and Services are compared field by field with what the operator would apply,
/// so they are kept whole.
pub fn keep<K>(_: &mut K) {}

/// Pods are cached to find which cluster they belong to, where their Redis is, which role it
/// has, whether one is stuck and why one is not ready, and what it was made for: keep the name,
/// namespace, uid, controller reference, instance and role labels, the pod-config and
/// live-config annotations (or, on a pod of an earlier release that has none, the Redis container's image and
/// arguments), whether its data volume is a claim, whether it has an auth or TLS volume, creation and deletion time, the pod IP, a
/// phase that means it will never run again (Failed, Succeeded: an evicted primary is
/// replaced at once), the ContainersReady and PodScheduled conditions, the deletion's grace
/// period, and, of each container that waits, has stopped or has restarted, its waiting or
/// terminated state, restart count and last termination (with its message).
/// The annotations that say what a pod was made for and what its Redis was given.
fn what_it_was_made_for(annotations: Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    annotations
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            [
                names::POD_CONFIG_ANNOTATION,
                names::START_CONFIG_ANNOTATION,
                names::LIVE_CONFIG_ANNOTATION,
            ]
            .contains(&key.as_str())
        })
        .collect()
}

pub fn pod(pod: &mut Pod) {
    let metadata = std::mem::take(&mut pod.metadata);
    let annotations = what_it_was_made_for(metadata.annotations);
    let made_before_annotation = !annotations.contains_key(names::POD_CONFIG_ANNOTATION);
    pod.spec = pod
        .spec
        .take()
        .map(|spec| PodSpec {
            containers: spec
                .containers
                .into_iter()
                .filter(|container| {
                    made_before_annotation && container.name == names::REDIS_CONTAINER
                })
                .map(|container| Container {
                    name: container.name,
                    image: container.image,
                    args: container.args,
                    ..Container::default()
                })
                .collect(),
            // Whether the data volume is a claim, and whether there is an auth or TLS volume
            // (`auth::pod_has_auth`, `auth::pod_has_tls`), nothing more.
            volumes: spec.volumes.map(|volumes| {
                volumes
                    .into_iter()
                    .filter(|volume| {
                        [
                            names::DATA_VOLUME,
                            crate::auth::AUTH_VOLUME,
                            crate::auth::TLS_VOLUME,
                        ]
                        .contains(&volume.name.as_str())
                    })
                    .map(|volume| Volume {
                        name: volume.name,
                        persistent_volume_claim: volume.persistent_volume_claim,
                        ..Volume::default()
                    })
                    .collect()
            }),
            ..PodSpec::default()
        })
        .filter(|spec| {
            !spec.containers.is_empty() || spec.volumes.as_ref().is_some_and(|v| !v.is_empty())
        });
    pod.metadata = ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        uid: metadata.uid,
        // Only the controller: the StatefulSet a pod belongs to.
        owner_references: metadata.owner_references.map(|owners| {
            owners
                .into_iter()
                .filter(|owner| owner.controller == Some(true))
                .collect()
        }),
        annotations: (!annotations.is_empty()).then_some(annotations),
        creation_timestamp: metadata.creation_timestamp,
        deletion_timestamp: metadata.deletion_timestamp,
        deletion_grace_period_seconds: metadata.deletion_grace_period_seconds,
        labels: metadata.labels.map(|labels| {
            labels
                .into_iter()
                .filter(|(key, _)| {
                    [names::INSTANCE_LABEL, names::ROLE_LABEL].contains(&key.as_str())
                })
                .collect()
        }),
        ..ObjectMeta::default()
    };
    pod.status = pod.status.take().map(status);
}

/// What `pod` keeps of a pod's status.
fn status(status: PodStatus) -> PodStatus {
    PodStatus {
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "ContainersReady" || c.type_ == "PodScheduled")
                .collect()
        }),
        container_statuses: waiting_or_restarted(status.container_statuses),
        init_container_statuses: waiting_or_restarted(status.init_container_statuses),
        pod_ip: status.pod_ip,
        phase: status
            .phase
            .filter(|phase| matches!(phase.as_str(), "Failed" | "Succeeded")),
        ..PodStatus::default()
    }
}

fn waiting_or_restarted(statuses: Option<Vec<ContainerStatus>>) -> Option<Vec<ContainerStatus>> {
    statuses.map(|statuses| {
        statuses
            .into_iter()
            .filter_map(|container| {
                let state = container.state.unwrap_or_default();
                let (waiting, stopped) = (state.waiting, state.terminated);
                if waiting.is_none() && stopped.is_none() && container.restart_count == 0 {
                    return None;
                }
                let terminated = container.last_state.and_then(|state| state.terminated);
                Some(ContainerStatus {
                    name: container.name,
                    restart_count: container.restart_count,
                    state: (waiting.is_some() || stopped.is_some()).then(|| ContainerState {
                        waiting,
                        terminated: stopped.map(|stopped| ContainerStateTerminated {
                            reason: stopped.reason,
                            exit_code: stopped.exit_code,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    last_state: terminated.map(|terminated| ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            reason: terminated.reason,
                            exit_code: terminated.exit_code,
                            // What a start that failed said (`scripts::start`), for the status.
                            message: terminated.message,
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests;
