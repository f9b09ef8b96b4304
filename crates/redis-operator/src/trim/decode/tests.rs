use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::{ObjectList, WatchEvent};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;

use crate::fixtures::{at, cluster, managed_fields, statefulset, sts_status, waiting_pod};

/// Decodes `object`'s JSON both ways: without managed fields it must be the plain decode with
/// nothing but `metadata.managedFields` missing.
fn assert_decodes_without_managed_fields<K>(mut object: K)
where
    K: Resource + Serialize + DeserializeOwned + Debug,
{
    object.meta_mut().managed_fields = Some(managed_fields());
    let text = serde_json::to_string(&object).unwrap();
    assert!(text.contains("managedFields"));

    let decoded: WithoutManagedFields<K> = serde_json::from_str(&text).unwrap();
    assert_eq!(decoded.0.meta().managed_fields, None);
    let mut plain: K = serde_json::from_str(&text).unwrap();
    assert_eq!(plain.meta().managed_fields.as_ref().map(Vec::len), Some(2));
    plain.meta_mut().managed_fields = None;
    assert_eq!(
        serde_json::to_value(&decoded.0).unwrap(),
        serde_json::to_value(&plain).unwrap()
    );
}

#[test]
fn every_cached_kind_decodes_whole_but_for_its_managed_fields() {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.metadata.annotations = Some([("team".to_owned(), "cache".to_owned())].into());
    let mut pod = waiting_pod(0, "ImagePullBackOff", at(0));
    pod.spec = crate::desired::initial_statefulset(&cluster)
        .unwrap()
        .spec
        .and_then(|spec| spec.template.spec);
    assert!(pod.spec.is_some());

    assert_decodes_without_managed_fields(statefulset(&cluster, sts_status(3, 2)));
    let [headless, primary, _] = crate::desired::services(&cluster).unwrap();
    assert_decodes_without_managed_fields(headless);
    assert_decodes_without_managed_fields(primary);
    assert_decodes_without_managed_fields(pod);
    assert_decodes_without_managed_fields(cluster);
}

#[test]
fn lists_and_watch_events_decode_the_way_the_client_reads_them() {
    let mut sts = statefulset(&cluster(1, "redis:7.0"), sts_status(1, 1));
    sts.metadata.managed_fields = Some(managed_fields());
    let list = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSetList",
        "metadata": {"resourceVersion": "7"},
        "items": [sts, sts],
    });
    let list: ObjectList<WithoutManagedFields<StatefulSet>> =
        serde_json::from_str(&list.to_string()).unwrap();
    assert_eq!(list.items.len(), 2);
    assert!(list.items.iter().all(|s| s.managed_fields().is_empty()));
    assert_eq!(list.metadata.resource_version.as_deref(), Some("7"));

    let line = json!({"type": "MODIFIED", "object": sts}).to_string();
    let event: WatchEvent<WithoutManagedFields<StatefulSet>> = serde_json::from_str(&line).unwrap();
    let WatchEvent::Modified(modified) = event else {
        panic!("not a modification: {event:?}");
    };
    assert!(modified.managed_fields().is_empty());
    assert_eq!(modified.resource_version().as_deref(), Some("100"));
}

#[test]
fn only_the_metadata_key_itself_is_skipped() {
    // Escaped keys are read as owned strings rather than borrowed: both paths must work.
    let text = r#"{
        "apiVersion": "v1", "kind": "Service",
        "met\u0061data": {
            "n\u0061me": "cache",
            "manag\u0065dFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "labels": {"managedFields": "a label, not metadata's own field"},
            "annotations": {"managedFields": "kept"}
        },
        "spec": {"clusterIP": "None"}
    }"#;
    let service: WithoutManagedFields<Service> = serde_json::from_str(text).unwrap();
    let service = service.0;
    assert_eq!(service.name_any(), "cache");
    assert!(service.managed_fields().is_empty());
    assert_eq!(
        service.labels().get("managedFields").map(String::as_str),
        Some("a label, not metadata's own field")
    );
    assert_eq!(
        service
            .annotations()
            .get("managedFields")
            .map(String::as_str),
        Some("kept")
    );
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
}

#[test]
fn bad_input_fails_as_it_would_without_the_filter() {
    let documents = [
        r#"{"metadata": "not an object"}"#,
        r#"{"metadata": {"name": 7}}"#,
        r#"{"metadata": {"managedFields": [}}"#,
        r#"{"metadata": {"name": "cache"}, "status": {"phase": 3}}"#,
        r#"["not", "a", "pod"]"#,
        r#"{"metadata": {"name": "cache"}"#,
    ];
    for document in documents {
        let plain = serde_json::from_str::<Pod>(document).map(|_| ());
        let filtered = serde_json::from_str::<WithoutManagedFields<Pod>>(document).map(|_| ());
        let (Err(plain), Err(filtered)) = (plain, filtered) else {
            panic!("{document}: both must fail");
        };
        // A malformed skipped value may be reported at another column; the reason must match.
        let reason =
            |e: &serde_json::Error| e.to_string().split(" at line").next().unwrap().to_owned();
        assert_eq!(reason(&filtered), reason(&plain), "{document}");
    }
}
