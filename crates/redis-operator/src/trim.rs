//! What the caches keep of each object: only what a reconcile reads. Objects are trimmed as
//! they arrive, before they are cached, so the operator's memory grows with what it uses
//! rather than with everything the API server sends. The largest part of most objects, their
//! managedFields, is never even decoded (`WithoutManagedFields`): the operator decides drift
//! from the fields themselves. The children that every cluster has (its StatefulSet, Services
//! and pods) are then kept as JSON text (`Packed`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodSpec, PodStatus,
    Service, Volume,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::watcher;
use rediscluster_crd::RedisCluster;

use crate::names;

/// `impl Resource` for a wrapper of `K` that is the same API resource as `K` (requests for it
/// are requests for `K`), given where the wrapper keeps its metadata.
macro_rules! same_resource {
    ($wrapper:ident, |$s:ident| $meta:expr, |$m:ident| $meta_mut:expr) => {
        impl<K: kube::Resource> kube::Resource for $wrapper<K> {
            type DynamicType = K::DynamicType;
            type Scope = K::Scope;

            fn kind(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
                K::kind(dt)
            }
            fn group(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
                K::group(dt)
            }
            fn version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
                K::version(dt)
            }
            fn api_version(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
                K::api_version(dt)
            }
            fn plural(dt: &Self::DynamicType) -> std::borrow::Cow<'_, str> {
                K::plural(dt)
            }
            fn url_path(dt: &Self::DynamicType, namespace: Option<&str>) -> String {
                K::url_path(dt, namespace)
            }
            fn meta(&self) -> &kube::api::ObjectMeta {
                let $s = self;
                $meta
            }
            /// For a packed object, changes made here are not in its JSON: nothing changes a
            /// cached object.
            fn meta_mut(&mut self) -> &mut kube::api::ObjectMeta {
                let $m = self;
                $meta_mut
            }
        }
    };
}
use same_resource;

mod decode;
mod packed;
pub use decode::WithoutManagedFields;
pub use packed::Packed;

/// `kubectl apply` keeps a full copy of the object in this annotation; nothing here reads it.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `event` with each of its objects turned into what a cache keeps of it.
pub fn map_event<K, C>(event: watcher::Event<K>, keep: impl Fn(K) -> C) -> watcher::Event<C> {
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
    match event {
        Apply(object) => Apply(keep(object)),
        Delete(object) => Delete(keep(object)),
        InitApply(object) => InitApply(keep(object)),
        Init => Init,
        InitDone => InitDone,
    }
}

/// A RedisCluster loses only kubectl's copy of itself: reconciles read all the rest.
pub fn cluster(cluster: WithoutManagedFields<RedisCluster>) -> RedisCluster {
    let mut cluster = cluster.0;
    cluster.annotations_mut().remove(LAST_APPLIED);
    cluster
}

/// Disruption budgets and claims are few (clusters with several pods, clusters with storage)
/// and kept typed. Like StatefulSets and Services, they are compared field by field with what
/// the operator would apply, so nothing is dropped.
pub fn keep<K>(object: WithoutManagedFields<K>) -> K {
    object.0
}

/// What a cache drops of a child before packing it (`Packed`).
pub trait Trim {
    fn trim(&mut self) {}
}

/// Compared field by field with what the operator would apply: kept whole.
impl Trim for StatefulSet {}

/// Compared field by field with what the operator would apply: kept whole.
impl Trim for Service {}

impl Trim for Pod {
    fn trim(&mut self) {
        trim_pod(self);
    }
}

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

/// Pods are cached to find which cluster they belong to, where their Redis is, which role it
/// has, whether one is stuck and why one is not ready, and what it was made for: keep the name,
/// namespace, uid, controller reference, instance and role labels, the pod-config and
/// live-config annotations (or, on a pod of an earlier release that has none, the Redis
/// container's image and arguments), whether its data volume is a claim, whether it has an
/// auth or TLS volume, creation and deletion time, the pod IP, a phase that means it will never
/// run again (Failed, Succeeded: an evicted primary is replaced at once), the ContainersReady
/// and PodScheduled conditions, the deletion's grace period, and, of each container that
/// waits, has stopped or has restarted, its waiting or terminated state, restart count and
/// last termination (with its message).
fn trim_pod(pod: &mut Pod) {
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
