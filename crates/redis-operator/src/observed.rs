//! Readers of observed children: who controls an object, and what an existing StatefulSet
//! says (its strategy, image, replicas, and the fields that only a recreation can change).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use kube::Resource;

use crate::names::REDIS_CONTAINER;

/// The uid of the object's controller, if it has one.
pub fn controller_uid<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true))
        .map(|owner| owner.uid.as_str())
}

/// Whether `child` is controlled by the RedisCluster with this uid.
pub fn is_controlled_by<K: Resource>(child: &K, owner_uid: &str) -> bool {
    controller_uid(child) == Some(owner_uid)
}

/// The StatefulSet fields the API server refuses to update, by name, that differ between what
/// we would apply and what exists. A StatefulSet made by another version of the operator (or a
/// spec change that reaches such a field) can only get them by being recreated.
pub fn immutable_changes(desired: &StatefulSet, observed: &StatefulSet) -> Vec<&'static str> {
    let (Some(desired), Some(observed)) = (desired.spec.as_ref(), observed.spec.as_ref()) else {
        return Vec::new();
    };
    let mut changed = Vec::new();
    if desired.selector != observed.selector {
        changed.push("selector");
    }
    if desired.service_name != observed.service_name {
        changed.push("serviceName");
    }
    // The API server defaults an absent policy to OrderedReady.
    let policy = |spec: &StatefulSetSpec| {
        spec.pod_management_policy
            .clone()
            .unwrap_or_else(|| "OrderedReady".to_owned())
    };
    if policy(desired) != policy(observed) {
        changed.push("podManagementPolicy");
    }
    // Claim templates: the same names, each saying at least what we would (the server adds
    // defaults and a status to every template).
    let templates =
        |spec: &StatefulSetSpec| spec.volume_claim_templates.clone().unwrap_or_default();
    let (want, have) = (templates(desired), templates(observed));
    let same_templates = want.len() == have.len()
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| w.metadata.name == h.metadata.name && crate::drift::is_applied(w, h));
    if !same_templates {
        changed.push("volumeClaimTemplates");
    }
    changed
}

/// Whether the StatefulSet leaves pod replacement to the operator (`OnDelete`); Kubernetes
/// defaults a missing strategy to `RollingUpdate`.
pub fn is_on_delete(statefulset: &StatefulSet) -> bool {
    statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.update_strategy.as_ref())
        .and_then(|strategy| strategy.type_.as_deref())
        == Some("OnDelete")
}

/// The image of the Redis container in a StatefulSet, if it has one.
pub fn redis_image(statefulset: &StatefulSet) -> Option<&str> {
    statefulset
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|container| container.name == REDIS_CONTAINER)?
        .image
        .as_deref()
}

/// The StatefulSet controller has acted on the StatefulSet's latest spec.
pub fn is_caught_up(sts: &StatefulSet) -> bool {
    let observed = sts.status.as_ref().and_then(|s| s.observed_generation);
    matches!((sts.metadata.generation, observed), (Some(generation), Some(observed)) if observed >= generation)
}

/// The replicas a StatefulSet asks for (Kubernetes defaults a missing value to 1).
pub fn desired_replicas(statefulset: &StatefulSet) -> i32 {
    statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}
