use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::*;
use crate::fixtures::{NAME, NAMESPACE};

/// A claim of the cluster asking for `requested` and holding `holds` (once bound).
fn claim(name: &str, requested: &str, holds: Option<&str>) -> PersistentVolumeClaim {
    let storage = |q: &str| BTreeMap::from([("storage".to_owned(), Quantity(q.to_owned()))]);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            uid: Some(format!("uid-{name}")),
            labels: Some(crate::names::selector_labels(NAME)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            resources: Some(VolumeResourceRequirements {
                requests: Some(storage(requested)),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            capacity: holds.map(storage),
            ..PersistentVolumeClaimStatus::default()
        }),
    }
}

#[test]
fn the_claims_of_a_cluster_are_its_pods_data_claims() {
    let mut other_cluster = claim("data-cache-other-0", "1Gi", None);
    other_cluster.labels_mut().insert(
        crate::names::INSTANCE_LABEL.to_owned(),
        "cache-other".to_owned(),
    );
    // The same cluster name in another namespace.
    let mut elsewhere = claim("data-cache-2", "1Gi", None);
    elsewhere.metadata.namespace = Some("team-b".to_owned());
    let claims = [
        claim("data-cache-1", "1Gi", None),
        claim("data-cache-0", "1Gi", None),
        // Same instance label, not a pod's data claim.
        claim("scratch-cache-0", "1Gi", None),
        claim("data-cache-x", "1Gi", None),
        other_cluster,
        elsewhere,
    ]
    .map(Arc::new);
    let names: Vec<String> = cluster_claims(&claims, NAMESPACE, NAME)
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(names, ["data-cache-0", "data-cache-1"]);
}

#[test]
fn claims_asking_for_less_than_the_size_grow() {
    let small = claim("data-cache-0", "1Gi", Some("1Gi"));
    let equal_other_unit = claim("data-cache-1", "2048Mi", Some("2Gi"));
    let larger = claim("data-cache-2", "3Gi", Some("3Gi"));
    let claims = [&small, &equal_other_unit, &larger];
    let names = |grow: Vec<&PersistentVolumeClaim>| -> Vec<String> {
        grow.iter().map(|c| c.name_any()).collect()
    };
    assert_eq!(names(to_grow(&claims, "2Gi")), ["data-cache-0"]);
    assert!(to_grow(&claims, "1Gi").is_empty());
    assert!(to_grow(&claims, "not a size").is_empty());
}

#[test]
fn the_condition_says_whether_the_claims_hold_the_size() {
    let held = claim("data-cache-0", "2Gi", Some("2Gi"));
    let growing = claim("data-cache-1", "2Gi", Some("1Gi"));
    let unbound = claim("data-cache-2", "2Gi", None);
    let cases = [
        (vec![&held, &unbound], vec![], true, "AsRequested"),
        (vec![&held, &growing], vec![], false, "Resizing"),
        (
            vec![&held, &growing],
            vec![("data-cache-1".to_owned(), "forbidden".to_owned())],
            false,
            "ResizeRefused",
        ),
    ];
    for (claims, refused, sized, reason) in cases {
        let condition = sizing(&claims, "2Gi", &refused);
        assert_eq!(
            (condition.sized, condition.reason),
            (sized, reason),
            "{condition:?}"
        );
    }
    let refused = sizing(
        &[&growing],
        "2Gi",
        &[(
            "data-cache-1".to_owned(),
            "only dynamically provisioned pvc can be resized".to_owned(),
        )],
    );
    assert!(
        refused.message.contains("data-cache-1")
            && refused.message.contains("only dynamically provisioned")
            && refused.message.contains("allowVolumeExpansion"),
        "{}",
        refused.message
    );
    assert_eq!(
        sizing(&[&growing], "2Gi", &[]).message,
        "claims data-cache-1 are growing to 2Gi"
    );
}

#[test]
fn a_refusal_holds_the_same_request_back_not_another() {
    let mut refusals = crate::memory::Refusals::default();
    refusals.record("uid-1", "2Gi", Some("forbidden".to_owned()));
    assert_eq!(
        refusals.recent("uid-1", "2Gi").as_deref(),
        Some("forbidden")
    );
    assert_eq!(refusals.recent("uid-1", "3Gi"), None, "a new size is asked");
    assert_eq!(refusals.recent("uid-2", "2Gi"), None);
    refusals.record("uid-1", "2Gi", None);
    assert_eq!(refusals.recent("uid-1", "2Gi"), None);
}
