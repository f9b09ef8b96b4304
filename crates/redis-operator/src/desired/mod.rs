//! The children a RedisCluster should have: pure functions of the RedisCluster (and, for the
//! StatefulSet, of the pod config and the replicas the reconcile decided).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use rediscluster_crd::RedisCluster;

use crate::auth::{Password, PasswordSecret};
use crate::error::{Error, Result};
use crate::names::Role;
use crate::names::{ROLE_LABEL, SERVICE_CONFIG_ANNOTATION, labels, selector_labels};
use crate::redis::{REDIS_PORT, REDIS_PORT_NAME};

mod statefulset;

pub use statefulset::{PodAuth, statefulset};

/// The StatefulSet a first reconcile writes for `cluster` without auth: `spec.replicas` pods
/// made for the spec's config, with nothing added to the template by others.
pub fn initial_statefulset(
    cluster: &RedisCluster,
) -> Result<k8s_openapi::api::apps::v1::StatefulSet> {
    let config = crate::pod_config::pod_config(&cluster.spec, None, None);
    statefulset(cluster, &config, cluster.spec.replicas, None)
}

/// The Secret the operator makes for a cluster whose auth names none: `password` under the
/// Secret's key, owned by the cluster (it goes with it). Only created, never applied: the
/// password is the one the applications were given.
pub fn password_secret(
    cluster: &RedisCluster,
    secret: &PasswordSecret,
    password: &Password,
) -> Result<Secret> {
    let mut metadata = child_meta(cluster)?;
    metadata.name = Some(secret.name.clone());
    Ok(Secret {
        metadata,
        string_data: Some(BTreeMap::from([(
            secret.key.clone(),
            password.expose().to_owned(),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}

/// Metadata of a child: same name and namespace as the cluster, our labels, and a controller
/// owner reference so that deleting the cluster deletes the child.
pub(super) fn child_meta(cluster: &RedisCluster) -> Result<ObjectMeta> {
    let name = cluster.name_any();
    Ok(ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(
            cluster
                .namespace()
                .ok_or(Error::MissingObjectKey("namespace"))?,
        ),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner_reference(cluster)?]),
        ..ObjectMeta::default()
    })
}

fn owner_reference(cluster: &RedisCluster) -> Result<OwnerReference> {
    cluster
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("uid"))
}

/// The Services of a cluster: the headless one for per-pod DNS, then `<name>-primary` (writes)
/// and `<name>-replicas` (reads), of the type and with the annotations of `spec.service`,
/// which route to pods by their role label, so that a change of
/// primary moves the label and never rewrites a Service.
pub fn services(cluster: &RedisCluster) -> Result<[Service; 3]> {
    let name = cluster.name_any();
    let exposure = cluster.spec.service.as_ref();
    // What the drift check cannot see otherwise: an annotation or type the spec no longer
    // asks for (it compares only what is applied). A new digest makes the apply, which drops
    // them.
    let exposure_digest = crate::pod_config::digest(
        &serde_json::to_string(&cluster.spec.service).unwrap_or_default(),
    );
    let by_role = |role: Role| -> Result<Service> {
        let mut selector = selector_labels(&name);
        selector.insert(ROLE_LABEL.to_owned(), role.as_str().to_owned());
        let mut metadata = child_meta(cluster)?;
        metadata.name = Some(role_service_name(&name, role));
        let mut annotations = exposure
            .and_then(|s| s.annotations.clone())
            .unwrap_or_default();
        annotations.insert(
            SERVICE_CONFIG_ANNOTATION.to_owned(),
            exposure_digest.clone(),
        );
        metadata.annotations = Some(annotations);
        Ok(Service {
            metadata,
            spec: Some(ServiceSpec {
                type_: Some(
                    exposure
                        .and_then(|s| s.type_)
                        .unwrap_or_default()
                        .as_str()
                        .to_owned(),
                ),
                selector: Some(selector),
                ports: Some(vec![redis_service_port()]),
                // The primary role is the operator's to give and take, from its own probe of
                // Redis every second while in doubt: the kubelet's readiness (probed every
                // 5 s) would hold a promoted pod out of the Service for up to that long after
                // a restart. Replicas serve reads only while ready: linked and synced.
                publish_not_ready_addresses: (role == Role::Primary).then_some(true),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        })
    };
    Ok([
        headless_service(cluster)?,
        by_role(Role::Primary)?,
        by_role(Role::Replica)?,
    ])
}

/// `<name>-primary` or `<name>-replicas`.
pub fn role_service_name(cluster_name: &str, role: Role) -> String {
    match role {
        Role::Primary => format!("{cluster_name}-primary"),
        Role::Replica => format!("{cluster_name}-replicas"),
    }
}

fn redis_service_port() -> ServicePort {
    ServicePort {
        name: Some(REDIS_PORT_NAME.to_owned()),
        port: i32::from(REDIS_PORT),
        target_port: Some(IntOrString::String(REDIS_PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The headless Service that gives each Redis pod a stable DNS name.
fn headless_service(cluster: &RedisCluster) -> Result<Service> {
    Ok(Service {
        metadata: child_meta(cluster)?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(selector_labels(&cluster.name_any())),
            // Peers must find each other before they are ready, for replication to start.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![redis_service_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}
/// A PodDisruptionBudget that lets a node drain (or any eviction) take at most one Redis pod
/// at a time, when there are two or more: the next waits until the replacement is ready in
/// its role. A pod that is not ready may always be evicted: it serves nothing, and a drain
/// must not hang on it.
pub fn disruption_budget(cluster: &RedisCluster) -> Result<Option<PodDisruptionBudget>> {
    if cluster.spec.replicas < 2 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: child_meta(cluster)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&cluster.name_any())),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }))
}

#[cfg(test)]
mod tests;
