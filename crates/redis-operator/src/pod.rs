//! Readers of observed pods, one definition each: ordinal, conditions and readiness, stuck
//! containers, leaving, the role label, the data claim. Decisions and the status read pods
//! only through these.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodCondition};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::names::Role;
use crate::names::{DATA_VOLUME, REDIS_CONTAINER, ROLE_LABEL};

/// The ordinal of a StatefulSet pod, from its name `<statefulset>-<ordinal>`.
pub fn ordinal(pod_name: &str) -> Option<i32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

/// The pod's condition of this type, if the kubelet or scheduler reports it with `status`.
pub fn condition<'a>(pod: &'a Pod, type_: &str, status: &str) -> Option<&'a PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

/// The pod's condition of this type, if the kubelet or scheduler reports it False.
pub fn false_condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    condition(pod, type_, "False")
}

/// The pod's containers are ready (its readiness probe passes).
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "ContainersReady", "True").is_some()
}

/// The pod's containers are known not to be ready.
pub fn is_not_ready(pod: &Pod) -> bool {
    false_condition(pod, "ContainersReady").is_some()
}

/// Being deleted, or finished for good (evicted by the kubelet, say): it never runs again.
pub fn is_leaving(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|phase| matches!(phase, "Failed" | "Succeeded"));
    pod.metadata.deletion_timestamp.is_some() || finished
}

/// The role the operator's label gives the pod.
pub fn role(pod: &Pod) -> Option<Role> {
    pod.labels()
        .get(ROLE_LABEL)
        .and_then(|value| Role::parse(value))
}

/// Container waiting reasons that mean a pod will not start without someone fixing something.
pub const STUCK_REASONS: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "RunContainerError",
];

/// A container that waits in one of [`STUCK_REASONS`].
pub struct StuckContainer<'a> {
    pub name: &'a str,
    pub reason: &'static str,
    pub message: &'a str,
    pub restarts: i32,
}

/// The pod's containers (init containers first) that wait in one of [`STUCK_REASONS`].
pub fn stuck_containers(pod: &Pod) -> impl Iterator<Item = StuckContainer<'_>> {
    let status = pod.status.as_ref();
    status
        .into_iter()
        .flat_map(|s| s.init_container_statuses.iter().flatten())
        .chain(
            status
                .into_iter()
                .flat_map(|s| s.container_statuses.iter().flatten()),
        )
        .filter_map(|container| {
            let waiting = container.state.as_ref()?.waiting.as_ref()?;
            let reason = STUCK_REASONS
                .into_iter()
                .find(|r| waiting.reason.as_deref() == Some(*r))?;
            // A container that keeps exiting is best explained by what it said as it exited
            // (`redis::scripts::start` says what it lacks).
            let said = container
                .last_state
                .as_ref()
                .and_then(|state| state.terminated.as_ref()?.message.as_deref())
                .map(str::trim)
                .filter(|message| !message.is_empty());
            Some(StuckContainer {
                name: &container.name,
                reason,
                message: said.or(waiting.message.as_deref()).unwrap_or_default(),
                restarts: container.restart_count,
            })
        })
}

/// Why the pod's Redis container never ran, if it is stuck and never restarted: it holds no
/// data, and may never run.
pub fn never_started(pod: &Pod) -> Option<&'static str> {
    stuck_containers(pod)
        .find(|c| c.name == REDIS_CONTAINER && c.restarts == 0)
        .map(|c| c.reason)
}

/// How long the pod has been stuck at `now`: since its containers last stopped being ready, or
/// since it was created.
pub fn stuck_for(pod: &Pod, now: Timestamp) -> Option<Duration> {
    let since = false_condition(pod, "ContainersReady")
        .and_then(|c| c.last_transition_time.as_ref())
        .or(pod.metadata.creation_timestamp.as_ref())?;
    Some(
        now.duration_since(since.0)
            .try_into()
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether the kubelet reports the pod's Redis container not running (waiting or terminated):
/// whatever its Redis did before, it acknowledges nothing now. A pod with no report of it yet
/// is not known to be stopped.
pub fn redis_stopped(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter(|c| c.name == REDIS_CONTAINER)
        .any(|c| {
            c.state.as_ref().is_some_and(|s| {
                s.running.is_none() && (s.waiting.is_some() || s.terminated.is_some())
            })
        })
}

/// Whether the pod's data volume is a claim (made from the storage template), not an
/// emptyDir.
pub fn mounts_data_claim(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .any(|volume| volume.name == DATA_VOLUME && volume.persistent_volume_claim.is_some())
}
