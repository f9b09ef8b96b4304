//! Test objects shared by the unit and mocked-API tests.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod,
    PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use rediscluster_crd::{RedisCluster, RedisClusterSpec, RedisClusterStatus};
use serde_json::json;

pub const NAMESPACE: &str = "team-a";
pub const NAME: &str = "cache";
pub const UID: &str = "6a3c1f0e-0000-4000-8000-000000000001";
/// The uid of the cluster's StatefulSet, which controls its pods.
pub const STATEFULSET_UID: &str = "6a3c1f0e-0000-4000-8000-000000000002";

/// A RedisCluster as read from the API server (namespace, uid and generation set).
pub fn cluster(replicas: i32, image: &str) -> RedisCluster {
    let mut cluster = RedisCluster::new(
        NAME,
        RedisClusterSpec {
            image: image.to_owned(),
            replicas,
            storage: None,
            resources: None,
            maxmemory_policy: None,
            fencing: None,
            auth: None,
            tls: None,
            pod: None,
            service: None,
            config: None,
        },
    );
    cluster.metadata.namespace = Some(NAMESPACE.to_owned());
    cluster.metadata.uid = Some(UID.to_owned());
    cluster.metadata.generation = Some(1);
    cluster
}

pub fn with_status(mut cluster: RedisCluster, status: RedisClusterStatus) -> RedisCluster {
    cluster.status = Some(status);
    cluster
}

/// The StatefulSet the operator would build for `cluster`, as the API server reports it back:
/// generation 1 and the given status counts.
pub fn statefulset(cluster: &RedisCluster, status: StatefulSetStatus) -> StatefulSet {
    let mut sts = crate::desired::initial_statefulset(cluster).unwrap();
    sts.metadata.generation = Some(1);
    sts.metadata.uid = Some(STATEFULSET_UID.to_owned());
    sts.metadata.resource_version = Some("100".to_owned());
    sts.status = Some(status);
    sts
}

/// A rolled-out StatefulSet status: `ready` of `replicas` ready, all on the current revision.
pub fn sts_status(replicas: i32, ready: i32) -> StatefulSetStatus {
    StatefulSetStatus {
        observed_generation: Some(1),
        replicas,
        ready_replicas: Some(ready),
        updated_replicas: Some(replicas),
        current_revision: Some("rev-1".to_owned()),
        update_revision: Some("rev-1".to_owned()),
        ..StatefulSetStatus::default()
    }
}

pub fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// A pod of the cluster whose container waits with `reason` since `since`.
pub fn waiting_pod(index: u32, reason: &str, since: Timestamp) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-{index}")),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some(crate::names::labels(NAME)),
            creation_timestamp: Some(Time(since)),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Pending".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "ContainersReady".to_owned(),
                status: "False".to_owned(),
                last_transition_time: Some(Time(since)),
                ..PodCondition::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "redis".to_owned(),
                image: "redis:does-not-exist".to_owned(),
                image_id: String::new(),
                ready: false,
                restart_count: 0,
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.to_owned()),
                        message: Some(format!("{reason} for the test")),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

/// The status of `pod`'s Redis container (its first).
fn redis_status(pod: &mut Pod) -> &mut ContainerStatus {
    &mut pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
}

/// `pod` with its Redis container terminated (SIGKILL), as the kubelet reports a killed one.
pub fn terminated(mut pod: Pod) -> Pod {
    let redis = redis_status(&mut pod);
    redis.ready = false;
    redis.state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    });
    pod
}

/// `pod` after its Redis container exited `restarts` times, the last with `reason` and `code`.
pub fn restarted(mut pod: Pod, restarts: i32, reason: &str, code: i32) -> Pod {
    let redis = redis_status(&mut pod);
    redis.restart_count = restarts;
    redis.last_state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            reason: Some(reason.to_owned()),
            exit_code: code,
            message: Some("redis said goodbye".to_owned()),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    });
    pod
}

/// Managed fields as the API server writes them: one entry per manager, each a tree of the
/// fields it owns.
pub fn managed_fields() -> Vec<ManagedFieldsEntry> {
    let entry =
        |manager: &str, subresource: Option<&str>, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some("Apply".to_owned()),
            api_version: Some("v1".to_owned()),
            fields_type: Some("FieldsV1".to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            subresource: subresource.map(str::to_owned),
            time: Some(Time(at(0))),
        };
    vec![
        entry(
            "redis-operator",
            None,
            json!({"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"redis\"}": {".": {}, "f:image": {}}}}}}}),
        ),
        entry(
            "kube-controller-manager",
            Some("status"),
            json!({"f:status": {"f:readyReplicas": {}, "f:conditions": {
                "k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}}}}}),
        ),
    ]
}

/// The IP of the cluster's pod `index`.
pub fn pod_ip(index: i32) -> String {
    format!("10.244.0.{}", 10 + index)
}

/// A running pod of the cluster, with an IP, ready or not, labelled with `role` if given.
pub fn redis_pod(index: i32, ready: bool, role: Option<crate::names::Role>) -> Pod {
    let mut labels = crate::names::labels(NAME);
    if let Some(role) = role {
        labels.insert(
            crate::names::ROLE_LABEL.to_owned(),
            role.as_str().to_owned(),
        );
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{NAME}-{index}")),
            namespace: Some(NAMESPACE.to_owned()),
            uid: Some(format!("pod-uid-{index}")),
            labels: Some(labels),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "apps/v1".to_owned(),
                    kind: "StatefulSet".to_owned(),
                    name: NAME.to_owned(),
                    uid: STATEFULSET_UID.to_owned(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            creation_timestamp: Some(Time(at(0))),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some(pod_ip(index)),
            conditions: Some(vec![PodCondition {
                type_: "ContainersReady".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                last_transition_time: Some(Time(at(0))),
                ..PodCondition::default()
            }]),
            // Running, whether or not it answers.
            container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: crate::names::REDIS_CONTAINER.to_owned(),
                ready,
                state: Some(k8s_openapi::api::core::v1::ContainerState {
                    running: Some(k8s_openapi::api::core::v1::ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

/// The pod spec of a pod made by a release before pods said what they were made for (the
/// pod-config annotation): the Redis container, with the replication release's arguments.
pub fn earlier_release_spec(image: &str) -> k8s_openapi::api::core::v1::PodSpec {
    k8s_openapi::api::core::v1::PodSpec {
        containers: vec![k8s_openapi::api::core::v1::Container {
            name: crate::names::REDIS_CONTAINER.to_owned(),
            image: Some(image.to_owned()),
            args: Some(
                ["redis-server", "--replicaof", "127.0.0.1", "1"]
                    .map(String::from)
                    .to_vec(),
            ),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The operator's credentials in tests: a fixed key.
pub fn operator_credentials() -> crate::auth::Credentials {
    crate::auth::Credentials::from_key(b"test key")
}

/// The test cluster's operator-held passwords.
pub fn credentials() -> crate::auth::ClusterCredentials {
    operator_credentials().of_cluster(UID)
}
