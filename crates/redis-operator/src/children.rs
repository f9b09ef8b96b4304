//! Writing one child: create what is missing, apply what drifted, recreate what only a new
//! object can change, delete what the spec no longer asks for; and never touch an object this
//! cluster does not control. Each step says what happened ([`ChildOutcome`]).

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::MANAGER;
use crate::drift;
use crate::error::Result;
use crate::names::NUDGED_AT_ANNOTATION;
use crate::observed::{desired_replicas, is_caught_up, is_controlled_by, redis_image};
use crate::status::Blocker;
use rediscluster_crd::RedisClusterStatus;
use rediscluster_crd::conditions::DEGRADED;

/// What happened to one child in this reconcile.
#[derive(Debug, PartialEq)]
pub enum ChildOutcome<K> {
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
    pub fn blocker(&self) -> Option<&Blocker> {
        match self {
            ChildOutcome::Blocked(blocker) => Some(blocker),
            _ => None,
        }
    }

    pub fn written(&self) -> Option<&K> {
        match self {
            ChildOutcome::Created(object) | ChildOutcome::Updated(object) => Some(object),
            _ => None,
        }
    }

    /// "Kind name" of the object, if this reconcile created it.
    pub fn created(&self) -> Option<String> {
        match self {
            ChildOutcome::Created(object) => {
                Some(format!("{} {}", K::kind(&()), object.name_any()))
            }
            _ => None,
        }
    }
}

/// One event for every child created in a reconcile (each event is a write to the API server).
pub fn creation_event(created: &[Option<String>]) -> Option<Event> {
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
pub async fn ensure_child<K>(
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
        Some(existing) if !is_controlled_by(existing, owner_uid) => return Ok(not_owned()),
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
            if !is_controlled_by(&existing, owner_uid) {
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
pub async fn delete_child<K>(
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
pub async fn switch_to_on_delete(api: &Api<StatefulSet>, sts: &StatefulSet) -> Result<StatefulSet> {
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
/// Makes our create's managed-fields entry our apply's (`fields_for_apply`), on the object as
/// it stands: a controller's status write between the read and the patch (its resource
/// version is the precondition) means reading it again, a few times.
async fn take_over_created_fields<K>(api: &Api<K>, mut object: K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    for _ in 0..5 {
        let entries = object.meta().managed_fields.as_deref().unwrap_or_default();
        let Some(entries) = fields_for_apply(entries) else {
            return Ok(());
        };
        let patch = serde_json::json!({
            "metadata": {
                "managedFields": entries,
                "resourceVersion": object.meta().resource_version,
            }
        });
        let name = object.name_any();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 => {
                object = api.get(&name).await?;
            }
            result => return result.map(|_| ()).map_err(Into::into),
        }
    }
    Ok(())
}

/// What a create sets belongs to our manager's `Update` entry, and server-side apply never
/// takes back a field another entry owns: a field the spec stops asking for (an annotation, a
/// node selector) would stay. These are the object's managed fields with that entry merged
/// into our `Apply` entry, as client-go's `csaupgrade` does; None when there is no such entry.
pub fn fields_for_apply(entries: &[ManagedFieldsEntry]) -> Option<Vec<ManagedFieldsEntry>> {
    let ours = |entry: &ManagedFieldsEntry, operation: &str| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some(operation)
            && entry.subresource.is_none()
    };
    let created = entries.iter().find(|e| ours(e, "Update"))?;
    let applied = entries.iter().find(|e| ours(e, "Apply"));
    let mut fields = created
        .fields_v1
        .as_ref()
        .map_or(serde_json::Value::Null, |f| f.0.clone());
    if let Some(applied) = applied.and_then(|a| a.fields_v1.as_ref()) {
        merge_fields(&mut fields, &applied.0);
    }
    let merged = ManagedFieldsEntry {
        operation: Some("Apply".to_owned()),
        fields_v1: Some(FieldsV1(fields)),
        api_version: applied.unwrap_or(created).api_version.clone(),
        ..created.clone()
    };
    let others = entries
        .iter()
        .filter(|e| !ours(e, "Update") && !ours(e, "Apply"))
        .cloned();
    Some(others.chain([merged]).collect())
}

/// Whether our create's entry owns a field our apply's does not: one the spec stopped
/// asking for.
pub fn left_by_apply(entries: &[ManagedFieldsEntry]) -> bool {
    let ours = |operation: &str| {
        entries.iter().find(|e| {
            e.manager.as_deref() == Some(MANAGER)
                && e.operation.as_deref() == Some(operation)
                && e.subresource.is_none()
        })
    };
    let fields = |entry: Option<&ManagedFieldsEntry>| {
        entry
            .and_then(|e| e.fields_v1.as_ref())
            .map_or(serde_json::Value::Null, |f| f.0.clone())
    };
    ours("Update").is_some() && !covers(&fields(ours("Apply")), &fields(ours("Update")))
}

/// Whether every field of the set `inner` is in the set `outer` (`.` marks only the element
/// itself, which its fields imply).
fn covers(outer: &serde_json::Value, inner: &serde_json::Value) -> bool {
    match inner {
        serde_json::Value::Object(fields) => fields.iter().all(|(key, value)| {
            key == "." || outer.get(key).is_some_and(|outer| covers(outer, value))
        }),
        _ => true,
    }
}

/// `into` ∪ `from`, for the field sets of managed fields (objects of objects).
fn merge_fields(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(into), serde_json::Value::Object(from)) => {
            for (key, value) in from {
                merge_fields(
                    into.entry(key.clone()).or_insert(serde_json::Value::Null),
                    value,
                );
            }
        }
        (into, from) if into.is_null() => *into = from.clone(),
        _ => {}
    }
}

async fn apply<K>(api: &Api<K>, desired: &K) -> Result<ChildOutcome<K>>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let params = PatchParams::apply(MANAGER).force();
    let name = desired.name_any();
    let applied = match api.patch(&name, &params, &Patch::Apply(desired)).await {
        Ok(applied) => applied,
        Err(error) => return rejected_or(error, &K::kind(&())),
    };
    // A field our create set and this apply no longer does stays under the create's entry:
    // that entry becomes our apply's, and the apply is made again, which takes the field
    // away. Once in an object's life, and only when the spec dropped such a field.
    if !left_by_apply(applied.meta().managed_fields.as_deref().unwrap_or_default()) {
        return Ok(ChildOutcome::Updated(applied));
    }
    take_over_created_fields(api, applied).await?;
    match api.patch(&name, &params, &Patch::Apply(desired)).await {
        Ok(applied) => Ok(ChildOutcome::Updated(applied)),
        Err(error) => rejected_or(error, &K::kind(&())),
    }
}

/// An object the API server refuses as invalid, or forbids (a ResourceQuota, a missing RBAC
/// grant), or cannot make for want of addresses (a full service IP range, which it reports as
/// an internal error), is the user's to fix, not ours to retry: the status says why.
fn rejected_or<K>(error: kube::Error, kind: &str) -> Result<ChildOutcome<K>> {
    match error {
        kube::Error::Api(status)
            if matches!(status.code, 400 | 403 | 422) || is_range_full(&status) =>
        {
            Ok(ChildOutcome::Blocked(Blocker::Rejected {
                kind: kind.to_owned(),
                message: status.message,
            }))
        }
        error => Err(error.into()),
    }
}

/// The API server's answer when a Service's ClusterIP (or node port) range has no address
/// left: `Internal error occurred: failed to allocate a serviceIP: range is full`.
fn is_range_full(status: &kube::core::Status) -> bool {
    status.code == 500
        && status.message.contains("failed to allocate")
        && status.message.contains("range is full")
}

/// Events for a StatefulSet we are about to change: a scale and an image roll.
pub fn statefulset_changes(observed: &StatefulSet, desired: &StatefulSet) -> Vec<Event> {
    let mut events = Vec::new();
    let (from, to) = (desired_replicas(observed), desired_replicas(desired));
    if from != to {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Scaling".to_owned(),
            note: Some(format!("scaling from {from} to {to} replicas")),
            action: "Scale".to_owned(),
            secondary: None,
        });
    }
    let (from, to) = (redis_image(observed), redis_image(desired));
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

/// How often a StatefulSet whose pods could not be created is nudged.
pub const NUDGE_INTERVAL: Duration = Duration::from_secs(30);

/// Whether to nudge the StatefulSet controller now: the cluster failed because pods could not
/// be created (a ResourceQuota, an admission policy); the StatefulSet controller has acted on
/// the current spec, and fewer of the cluster's pods `exist` than it asks for (a controller
/// that has not got to the StatefulSet yet, as under a thousand new clusters at once, is busy,
/// not refused, and a nudge would only add to its queue; and its own count lags the pods it
/// has just made, so the pods are counted, not its status); and the last nudge is
/// [`NUDGE_INTERVAL`] old or more. The StatefulSet controller retries a refused pod create with
/// a delay that doubles up to about 16 minutes, and nothing it watches changes when the cause
/// goes (a quota raised or deleted): without a nudge the pods can come minutes after the fix.
/// Any change to the StatefulSet makes it try again at once.
pub fn nudge_due(
    previous: Option<&RedisClusterStatus>,
    statefulset: &StatefulSet,
    exist: usize,
    now: Timestamp,
) -> bool {
    let not_created = previous
        .and_then(|status| status.condition(DEGRADED))
        .is_some_and(|degraded| degraded.status == "True" && degraded.reason == "PodsNotCreated");
    let wanted = usize::try_from(desired_replicas(statefulset)).unwrap_or(0);
    let refused = is_caught_up(statefulset) && exist < wanted;
    let last = statefulset
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NUDGED_AT_ANNOTATION))
        .and_then(|at| at.parse::<Timestamp>().ok());
    let due = last.is_none_or(|last| {
        now.duration_since(last)
            .try_into()
            .is_ok_and(|since: Duration| since >= NUDGE_INTERVAL)
    });
    not_created && refused && due
}

/// Touches the StatefulSet's [`NUDGED_AT_ANNOTATION`] (a merge patch of that annotation alone,
/// its uid a precondition): the StatefulSet controller syncs it, and creates its missing pods
/// if it now can.
pub async fn nudge(
    api: &Api<StatefulSet>,
    statefulset: &StatefulSet,
    now: Timestamp,
) -> Result<()> {
    let patch = serde_json::json!({
        "metadata": {
            "uid": statefulset.uid(),
            "annotations": { NUDGED_AT_ANNOTATION: now.to_string() },
        }
    });
    let name = statefulset.name_any();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(statefulset = %name, "nudged: pods could not be created; asking again");
            Ok(())
        }
        // Gone, or recreated meanwhile: the next look sees it.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            api_version: Some("v1".to_owned()),
            fields_type: Some("FieldsV1".to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn what_our_create_set_becomes_our_applys_to_take_back() {
        let created = entry(
            MANAGER,
            "Update",
            json!({"f:metadata": {"f:annotations": {"f:lb": {}}}, "f:spec": {"f:type": {}}}),
        );
        let applied = entry(MANAGER, "Apply", json!({"f:spec": {"f:selector": {}}}));
        let theirs = entry("kube-controller-manager", "Update", json!({"f:status": {}}));
        let upgraded =
            fields_for_apply(&[created.clone(), theirs.clone(), applied.clone()]).unwrap();
        assert_eq!(upgraded.len(), 2);
        assert_eq!(upgraded[0], theirs, "others' entries stay as they are");
        assert_eq!(upgraded[1].operation.as_deref(), Some("Apply"));
        assert_eq!(
            upgraded[1].fields_v1.as_ref().unwrap().0,
            json!({
                "f:metadata": {"f:annotations": {"f:lb": {}}},
                "f:spec": {"f:type": {}, "f:selector": {}},
            })
        );
        // Only what the apply left is worth the extra writes.
        assert!(
            left_by_apply(&[created.clone(), applied.clone()]),
            "f:lb and f:type"
        );
        let full = entry(
            MANAGER,
            "Apply",
            json!({"f:metadata": {"f:annotations": {"f:lb": {}}}, "f:spec": {"f:type": {}}}),
        );
        assert!(!left_by_apply(&[created.clone(), full]));
        assert!(!left_by_apply(std::slice::from_ref(&applied)));
        // Only our create's entry is taken over; with none, nothing is sent.
        assert_eq!(fields_for_apply(&[applied, theirs.clone()]), None);
        assert_eq!(fields_for_apply(&[theirs]), None);
        let upgraded = fields_for_apply(&[created]).unwrap();
        assert_eq!(upgraded[0].operation.as_deref(), Some("Apply"));
    }
}
