use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, ContainerStateRunning, PodCondition, PodIP, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use kube::{Resource, ResourceExt};
use rediscluster_crd::Phase;

use super::*;
use crate::fixtures::{NAME, at, cluster, restarted, statefulset, sts_status, waiting_pod};
use crate::status::{Assessment, Facts, assess};
use crate::topology::RoleReport;

/// A pod as the API server sends it: spec, every label, all conditions, addresses, and a
/// running container beside the waiting one.
fn full_pod(index: u32, reason: &str) -> Pod {
    let mut pod = waiting_pod(index, reason, at(0));
    // Created well before its containers stopped being ready: the condition decides.
    pod.metadata.creation_timestamp = Some(Time(at(-1000)));
    pod.labels_mut()
        .insert("controller-revision-hash".to_owned(), "rev-1".to_owned());
    // Made for the spec of the cluster below, `cluster(2, "redis:does-not-exist")`.
    pod.annotations_mut().insert(
        names::POD_CONFIG_ANNOTATION.to_owned(),
        crate::pod_config::pod_config(&cluster(2, "redis:does-not-exist").spec, None, None),
    );
    pod.annotations_mut().insert(
        "kubectl.kubernetes.io/restartedAt".to_owned(),
        "now".to_owned(),
    );
    pod.metadata.uid = Some(format!("uid-{index}"));
    pod.metadata.resource_version = Some("42".to_owned());
    pod.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
    pod.spec = Some(PodSpec {
        containers: vec![Container {
            name: "redis".to_owned(),
            image: Some("redis:does-not-exist".to_owned()),
            ..Container::default()
        }],
        ..PodSpec::default()
    });
    let status = pod.status.as_mut().unwrap();
    status.pod_ips = Some(vec![PodIP {
        ip: "10.0.0.7".to_owned(),
    }]);
    status.qos_class = Some("Burstable".to_owned());
    let conditions = status.conditions.as_mut().unwrap();
    conditions.push(PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "True".to_owned(),
        ..PodCondition::default()
    });
    let containers = status.container_statuses.as_mut().unwrap();
    containers.push(ContainerStatus {
        name: "sidecar".to_owned(),
        image: "busybox".to_owned(),
        ready: true,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    });
    pod
}

/// The pod's Redis container exited and was restarted; it is running again but not yet ready.
fn restarted_running(pod: Pod) -> Pod {
    let mut pod = restarted(pod, 3, "Completed", 0);
    pod.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state = Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..ContainerState::default()
    });
    pod
}

/// A pod as a reconcile reads it from the cache.
fn trimmed(full: Pod) -> Pod {
    Packed::new(full).unpack().unwrap()
}

#[test]
fn trimming_pods_never_changes_the_status() {
    let cluster = cluster(2, "redis:does-not-exist");
    let sts = statefulset(&cluster, sts_status(2, 0));
    let cases = [
        (
            "one stuck, within the grace period",
            vec![full_pod(0, "ImagePullBackOff")],
            60,
        ),
        (
            "one stuck, past the grace period",
            vec![full_pod(0, "ImagePullBackOff")],
            600,
        ),
        (
            "stuck and merely creating",
            vec![
                full_pod(0, "ContainerCreating"),
                full_pod(1, "ErrImagePull"),
            ],
            600,
        ),
        ("none stuck", vec![full_pod(0, "ContainerCreating")], 600),
        (
            "restarted and not ready yet",
            vec![restarted_running(full_pod(0, "ContainerCreating"))],
            600,
        ),
    ];
    for (name, pods, seconds) in cases {
        let trimmed_pods: Vec<Pod> = pods.iter().cloned().map(trimmed).collect();
        assert_eq!(
            assess_at(&cluster, &sts, &trimmed_pods, seconds),
            assess_at(&cluster, &sts, &pods, seconds),
            "{name}"
        );
    }
    // The sanity check that the table exercises the stuck path at all.
    let stuck = [trimmed(full_pod(0, "ImagePullBackOff"))];
    assert_eq!(
        assess_at(&cluster, &sts, &stuck, 600).status.phase,
        Phase::Failed
    );
}

/// The status of `cluster` with these pods, `seconds` after they stopped being ready.
fn assess_at(cluster: &RedisCluster, sts: &StatefulSet, pods: &[Pod], seconds: i64) -> Assessment {
    let pods: Vec<&Pod> = pods.iter().collect();
    assess(
        cluster,
        &Facts {
            statefulset: Some(sts),
            pods: &pods,
            statefulset_in_sync: true,
            blocker: None,
            roles: &RoleReport::default(),
            primary_change: None,
            storage: None,
            pod_config: Some(&crate::pod_config::pod_config(&cluster.spec, None, None)),
            passwords: None,
            now: at(seconds),
            failure_grace: Duration::from_secs(120),
            progress_deadline: Duration::from_secs(600),
        },
    )
}

#[test]
fn a_trimmed_pod_keeps_its_cache_key_and_loses_the_rest() {
    let full = full_pod(0, "ImagePullBackOff");
    let full_size = serde_json::to_vec(&full).unwrap().len();
    let pod = trimmed(full);
    assert_eq!(pod.name_any(), format!("{NAME}-0"));
    assert!(pod.namespace().is_some());
    assert_eq!(
        pod.labels(),
        &BTreeMap::from([(names::INSTANCE_LABEL.to_owned(), NAME.to_owned())])
    );
    assert_eq!(
        pod.annotations().keys().collect::<Vec<_>>(),
        [names::POD_CONFIG_ANNOTATION]
    );
    assert_eq!(
        crate::pod_config::pod_config_of(&pod),
        Some(crate::pod_config::pod_config(
            &cluster(2, "redis:does-not-exist").spec,
            None,
            None
        ))
    );
    assert!(pod.spec.is_none() && pod.metadata.managed_fields.is_none());
    let status = pod.status.as_ref().unwrap();
    let kept: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(kept, ["ContainersReady", "PodScheduled"]);
    // Only the waiting container is kept.
    assert_eq!(status.container_statuses.as_ref().unwrap().len(), 1);
    // A phase only when the pod will never run again.
    assert_eq!(status.phase, None);
    let mut evicted = full_pod(1, "ImagePullBackOff");
    evicted.status.as_mut().unwrap().phase = Some("Failed".to_owned());
    assert_eq!(
        trimmed(evicted).status.unwrap().phase.as_deref(),
        Some("Failed")
    );
    // A real pod of ours is 4-5 KB as the API server sends it (this fixture is a small one);
    // what is cached stays a few hundred bytes whatever the pod carries.
    let size = serde_json::to_vec(&pod).unwrap().len();
    assert!(
        size < 700 && size < full_size,
        "{size} of {full_size} bytes kept"
    );
}

#[test]
fn a_pod_of_an_earlier_release_keeps_the_image_it_was_made_for() {
    let mut full = full_pod(0, "ImagePullBackOff");
    full.metadata.annotations = None;
    let expected = crate::pod_config::pod_config_of(&full);
    let pod = trimmed(full);
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("redis:does-not-exist")
    );
    assert_eq!(crate::pod_config::pod_config_of(&pod), expected);
    assert!(expected.is_some());
}

#[test]
fn clusters_lose_only_kubectls_copy_of_themselves() {
    let mut cluster = cluster(3, "redis:7.0");
    cluster
        .annotations_mut()
        .insert(LAST_APPLIED.to_owned(), "{\"spec\":{}}".to_owned());
    cluster
        .annotations_mut()
        .insert("team".to_owned(), "cache".to_owned());
    let cluster = super::cluster(WithoutManagedFields(cluster));
    assert_eq!(
        cluster.annotations(),
        &BTreeMap::from([("team".to_owned(), "cache".to_owned())])
    );
}

#[test]
fn trimming_pods_never_changes_what_the_role_decision_sees() {
    use k8s_openapi::jiff::Timestamp;

    use crate::topology::Member;

    let stopped_primary = |pod: Pod| {
        let mut pod = crate::fixtures::terminated(pod);
        pod.metadata.deletion_timestamp = Some(Time(at(0)));
        pod.metadata.deletion_grace_period_seconds = Some(1);
        pod
    };
    let pods = [
        full_pod(0, "ContainerCreating"),
        restarted_running(full_pod(1, "ContainerCreating")),
        stopped_primary(full_pod(2, "ContainerCreating")),
    ];
    let now = Timestamp::from_second(at(3).as_second()).unwrap();
    let seen = |pod: &Pod| {
        let m = Member::of(pod, None, now).unwrap();
        (m.stopped, m.stopping, m.terminating, m.address, m.ready)
    };
    for pod in pods {
        assert_eq!(
            seen(&trimmed(pod.clone())),
            seen(&pod),
            "{}",
            pod.name_any()
        );
    }
    // The table exercises a stop at all: killed, deleted 4 s ago with a grace period of 1 s.
    let stopped = seen(&trimmed(stopped_primary(full_pod(2, "ContainerCreating"))));
    assert_eq!((stopped.0, stopped.1), (true, Some(Duration::from_secs(4))));
}

#[test]
fn a_packed_child_keeps_what_finds_it_and_reads_back_whole() {
    let mut sts = statefulset(&cluster(3, "redis:7.0"), sts_status(3, 3));
    sts.metadata.uid = Some("sts-uid".to_owned());
    sts.metadata.resource_version = Some("7".to_owned());
    sts.annotations_mut()
        .insert("team".to_owned(), "cache".to_owned());
    let mut not_controller = sts.owner_references()[0].clone();
    not_controller.controller = None;
    not_controller.name = "someone-else".to_owned();
    sts.owner_references_mut().push(not_controller);

    let packed = Packed::new(sts.clone());

    let meta = packed.meta();
    assert_eq!(meta.name, sts.metadata.name);
    assert_eq!(meta.namespace, sts.metadata.namespace);
    assert_eq!(meta.uid.as_deref(), Some("sts-uid"));
    assert_eq!(meta.resource_version.as_deref(), Some("7"));
    assert_eq!(
        meta.owner_references,
        Some(vec![sts.owner_references()[0].clone()])
    );
    assert_eq!(
        meta.labels,
        Some(BTreeMap::from([(
            names::INSTANCE_LABEL.to_owned(),
            NAME.to_owned()
        )]))
    );
    assert_eq!(meta.annotations, None);
    assert_eq!(packed.unpack().unwrap(), sts);
}
