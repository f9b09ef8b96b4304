//! Growing the claims of a cluster whose `spec.storage.size` grew. A StatefulSet's claim
//! template only shapes claims it has yet to make; claims that exist are patched one by one,
//! and grow where their StorageClass allows volume expansion. Where it does not, the API
//! server refuses, and the status says so (the `StorageSized` condition).

use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use rediscluster_crd::{RedisCluster, quantity_value};
use tracing::info;

use crate::context::Context;
use crate::error::Result;
use crate::names::{DATA_VOLUME, INSTANCE_LABEL};

/// The `StorageSized` condition: whether every claim holds the spec's size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub sized: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Bytes of a claim's request and of what it holds.
fn requested(claim: &PersistentVolumeClaim) -> Option<f64> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    quantity_value(&requests.get("storage")?.0)
}

fn holds(claim: &PersistentVolumeClaim) -> Option<f64> {
    quantity_value(&claim.status.as_ref()?.capacity.as_ref()?.get("storage")?.0)
}

/// The claims of the cluster's pods (`data-<cluster>-<ordinal>` in its namespace), by name.
pub fn cluster_claims<'a>(
    claims: &'a [Arc<PersistentVolumeClaim>],
    namespace: &str,
    cluster: &str,
) -> Vec<&'a PersistentVolumeClaim> {
    let prefix = format!("{}-{cluster}-", DATA_VOLUME);
    let mut ours: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .map(AsRef::as_ref)
        .filter(|claim| {
            claim.namespace().as_deref() == Some(namespace)
                && claim.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(cluster)
                && claim
                    .name_any()
                    .strip_prefix(&prefix)
                    .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
        })
        .collect();
    ours.sort_by_key(|claim| claim.name_any());
    ours
}

/// Claims that ask for less than `size`: each is to be patched to ask for it.
pub fn to_grow<'a>(
    claims: &[&'a PersistentVolumeClaim],
    size: &str,
) -> Vec<&'a PersistentVolumeClaim> {
    let Some(wanted) = quantity_value(size) else {
        return Vec::new();
    };
    claims
        .iter()
        .copied()
        .filter(|claim| requested(claim).is_some_and(|bytes| bytes < wanted))
        .collect()
}

/// The condition, from the claims after this look's patches and the refusals of those that
/// could not grow.
pub fn sizing(
    claims: &[&PersistentVolumeClaim],
    size: &str,
    refused: &[(String, String)],
) -> Sizing {
    if let Some((claim, message)) = refused.first() {
        return Sizing {
            sized: false,
            reason: "ResizeRefused",
            message: format!(
                "claim {claim} cannot grow to {size}: {message}; its StorageClass must allow \
                 volume expansion (allowVolumeExpansion: true)"
            ),
        };
    }
    let wanted = quantity_value(size).unwrap_or_default();
    let short: Vec<String> = claims
        .iter()
        .filter(|claim| holds(claim).is_some_and(|bytes| bytes < wanted))
        .map(|claim| claim.name_any())
        .collect();
    if short.is_empty() {
        Sizing {
            sized: true,
            reason: "AsRequested",
            message: format!("every claim holds {size} or more"),
        }
    } else {
        Sizing {
            sized: false,
            reason: "Resizing",
            message: format!("claims {} are growing to {size}", short.join(", ")),
        }
    }
}

/// Patches the claims of `cluster` that ask for less than its storage size; returns the
/// condition, or `None` without storage (then the claims are not even looked at).
pub async fn grow(
    ctx: &Context,
    cluster: &RedisCluster,
    namespace: &str,
) -> Result<Option<Sizing>> {
    let Some(storage) = cluster.spec.storage.as_ref() else {
        return Ok(None);
    };
    let cached = ctx.stores.claims.state();
    let claims = cluster_claims(&cached, namespace, &cluster.name_any());
    let size = &storage.size;
    let cluster_uid = cluster.uid().unwrap_or_default();
    let recent = |uid: &str| {
        ctx.memory
            .recall(&cluster_uid, |m| m.refusals.recent(uid, size))
    };
    let record = |uid: &str, message: Option<String>| {
        ctx.memory
            .recall(&cluster_uid, |m| m.refusals.record(uid, size, message));
    };
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), namespace);
    let mut refused = Vec::new();
    let mut grown = Vec::new();
    for claim in to_grow(&claims, size) {
        let uid = claim.uid().unwrap_or_default();
        if let Some(message) = recent(&uid) {
            refused.push((claim.name_any(), message));
            continue;
        }
        let patch = serde_json::json!({
            "metadata": { "uid": uid },
            "spec": { "resources": { "requests": { "storage": size } } }
        });
        match api
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(patched) => {
                info!(claim = %claim.name_any(), %size, "claim asked to grow");
                record(&uid, None);
                grown.push(patched);
            }
            // The StorageClass does not allow expansion (403 from the admission plugin), or
            // the claim cannot take it (422).
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => {
                record(&uid, Some(status.message.clone()));
                refused.push((claim.name_any(), status.message));
            }
            Err(error) => return Err(error.into()),
        }
    }
    let after: Vec<&PersistentVolumeClaim> = claims
        .iter()
        .map(|claim| {
            grown
                .iter()
                .find(|g| g.uid() == claim.uid())
                .unwrap_or(claim)
        })
        .collect();
    Ok(Some(sizing(&after, size, &refused)))
}

#[cfg(test)]
mod tests;
