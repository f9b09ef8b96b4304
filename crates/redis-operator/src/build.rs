//! The children a RedisCluster should have: pure functions of the RedisCluster alone.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, Lifecycle,
    LifecycleHandler, LocalObjectReference, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
    VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use rediscluster_crd::{RedisCluster, RedisClusterSpec};
use serde::Serialize;

use crate::MANAGER;
use crate::error::{Error, Result};
use crate::topology::{Role, UNASSIGNED_HOST, UNASSIGNED_PORT};

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label the StatefulSet controller puts on each pod: the revision it was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label the operator sets on each pod once it has given it a role (`primary` or
/// `replica`, see topology.rs); the `-primary` and `-replicas` Services select on it.
pub const ROLE_LABEL: &str = "cache.example.com/role";
/// The value of `app.kubernetes.io/name` on everything the operator creates.
pub const APP_NAME: &str = "redis";
/// The pod template's annotation naming what a pod was made for (`PodConfig`).
pub const POD_CONFIG_ANNOTATION: &str = "cache.example.com/pod-config";
/// The hostname topology key: pods of a cluster are spread over nodes.
const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

pub const REDIS_CONTAINER: &str = "redis";
pub const REDIS_PORT: i32 = 6379;
pub const REDIS_PORT_NAME: &str = "redis";
/// The uid and gid of the `redis` user in the official image.
const REDIS_UID: i64 = 999;
/// The data volume: an emptyDir, or with `spec.storage` the claim template whose claims are
/// named `data-<pod>`.
pub const DATA_VOLUME: &str = "data";
const DATA_PATH: &str = "/data";

/// Label selector (as a string) for everything this operator manages, used to scope the watches.
pub fn managed_by_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGER}")
}

/// The labels that select one cluster's pods. The StatefulSet selector is immutable, so it holds
/// only labels that can never change for a cluster.
pub fn selector_labels(cluster_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), APP_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), cluster_name.to_owned()),
    ])
}

/// `selector_labels` as a label selector string, the form the scale subresource wants.
pub fn selector_string(cluster_name: &str) -> String {
    selector_labels(cluster_name)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object the operator creates for a cluster.
pub fn labels(cluster_name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster_name);
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
    labels
}

/// Metadata of a child: same name and namespace as the cluster, our labels, and a controller
/// owner reference so that deleting the cluster deletes the child.
fn child_meta(cluster: &RedisCluster) -> Result<ObjectMeta> {
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

/// The Services of a cluster: the headless one for per-pod DNS, then `<name>-primary` (writes)
/// and `<name>-replicas` (reads), which route to pods by their role label, so that a change of
/// primary moves the label and never rewrites a Service.
pub fn services(cluster: &RedisCluster) -> Result<[Service; 3]> {
    let name = cluster.name_any();
    let by_role = |role: Role| -> Result<Service> {
        let mut selector = selector_labels(&name);
        selector.insert(ROLE_LABEL.to_owned(), role.as_str().to_owned());
        let mut metadata = child_meta(cluster)?;
        metadata.name = Some(role_service_name(&name, role));
        Ok(Service {
            metadata,
            spec: Some(ServiceSpec {
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
        port: REDIS_PORT,
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

/// What a pod is made for that only replacing it can change: the image, storage or not, the
/// resources, Redis's maxmemory; what others added to the pod template (a sidecar, the
/// `kubectl rollout restart` annotation); and the operator's template epoch. A pod whose
/// config differs from the one asked for is replaced (one at a time, the primary after
/// handing over). What the operator itself adds to the template (probes,
/// spreading, shutdown) is not part of it: a new release changes the template, and existing
/// pods take it when they are next replaced, rather than all being restarted for it.
#[derive(Serialize)]
struct PodConfig<'a> {
    image: &'a str,
    epoch: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    storage: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a rediscluster_crd::Resources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maxmemory: Option<(u64, &'static str)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    foreign: Option<&'a str>,
}

/// The operator's pod template epoch: raised only by a release whose change existing pods
/// cannot do without, so that they are replaced. 1: pods run as replicas of a primary the
/// operator chooses (`--replicaof`, the replication release).
const POD_EPOCH: u32 = 1;

/// A short, stable digest (FNV-1a): compared, never read back.
fn digest(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

impl PodConfig<'_> {
    fn digest(&self) -> String {
        digest(&serde_json::to_string(self).unwrap_or_default())
    }
}

/// The config pods should have: the spec's, with `foreign`, the digest of what others added
/// to the StatefulSet's pod template (`foreign_template`).
pub fn pod_config(spec: &RedisClusterSpec, foreign: Option<&str>) -> String {
    PodConfig {
        image: &spec.image,
        epoch: POD_EPOCH,
        storage: spec.storage.is_some(),
        resources: spec.resources.as_ref(),
        maxmemory: spec
            .maxmemory()
            .map(|(bytes, policy)| (bytes, policy.as_str())),
        foreign,
    }
    .digest()
}

/// The config a pod was made with: its template's annotation, or, for a pod of an earlier
/// release (made before the annotation existed, with only an image to choose), the config of
/// its image and its epoch (1 if it runs as a replica of a chosen primary, 0 before that).
pub fn pod_config_of(pod: &Pod) -> Option<String> {
    if let Some(config) = pod.annotations().get(POD_CONFIG_ANNOTATION) {
        return Some(config.clone());
    }
    let redis = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|container| container.name == REDIS_CONTAINER)?;
    let replicates = redis.args.iter().flatten().any(|arg| arg == "--replicaof");
    Some(
        PodConfig {
            image: redis.image.as_deref()?,
            epoch: u32::from(replicates),
            storage: false,
            resources: None,
            maxmemory: None,
            foreign: None,
        }
        .digest(),
    )
}

/// What others added to the StatefulSet's pod template, for `foreign_template`: what is
/// unset or empty is left out, so that nothing at all serializes as `{}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ForeignTemplate<'a> {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a String, &'a String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a String, &'a String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    containers: Vec<&'a Container>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    init_containers: &'a [Container],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<&'a Volume>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tolerations: &'a [Toleration],
    #[serde(skip_serializing_if = "Option::is_none")]
    node_selector: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority_class_name: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_account_name: Option<&'a String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    image_pull_secrets: &'a [LocalObjectReference],
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime_class_name: Option<&'a String>,
}

/// The items of an optional list, none when it is unset.
fn list<T>(list: Option<&Option<Vec<T>>>) -> &[T] {
    list.and_then(Option::as_deref).unwrap_or(&[])
}

/// A digest of what others added to the StatefulSet's pod template (containers, volumes,
/// annotations, labels, scheduling), or `None` when nothing: a change there is theirs to
/// make and rolls the pods, as it would with any StatefulSet. Fields the operator sets, and
/// what the API server defaults, are left out, so that a release of the operator that
/// changes its own fields rolls nothing.
pub fn foreign_template(statefulset: &StatefulSet, cluster_name: &str) -> Option<String> {
    let template = &statefulset.spec.as_ref()?.template;
    let ours = labels(cluster_name);
    let metadata = template.metadata.as_ref();
    let spec = template.spec.as_ref();
    let foreign = ForeignTemplate {
        annotations: metadata
            .into_iter()
            .flat_map(|m| m.annotations.iter().flatten())
            .filter(|(key, _)| key.as_str() != POD_CONFIG_ANNOTATION)
            .collect(),
        labels: metadata
            .into_iter()
            .flat_map(|m| m.labels.iter().flatten())
            .filter(|(key, _)| !ours.contains_key(*key))
            .collect(),
        containers: spec
            .into_iter()
            .flat_map(|spec| &spec.containers)
            .filter(|c| c.name != REDIS_CONTAINER)
            .collect(),
        init_containers: list(spec.map(|s| &s.init_containers)),
        volumes: spec
            .into_iter()
            .flat_map(|spec| spec.volumes.iter().flatten())
            .filter(|v| v.name != DATA_VOLUME)
            .collect(),
        tolerations: list(spec.map(|s| &s.tolerations)),
        node_selector: spec.and_then(|s| s.node_selector.as_ref()),
        priority_class_name: spec.and_then(|s| s.priority_class_name.as_ref()),
        service_account_name: spec.and_then(|s| s.service_account_name.as_ref()),
        image_pull_secrets: list(spec.map(|s| &s.image_pull_secrets)),
        runtime_class_name: spec.and_then(|s| s.runtime_class_name.as_ref()),
    };
    let json = serde_json::to_string(&foreign).unwrap_or_default();
    (json != "{}").then(|| digest(&json))
}

/// Whether the pod's data volume is a claim (made from the storage template), not an
/// emptyDir.
pub fn mounts_data_claim(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .any(|volume| volume.name == DATA_VOLUME && volume.persistent_volume_claim.is_some())
}

/// The StatefulSet that runs `spec.replicas` Redis pods of `spec.image`, for a template
/// nobody else has added to.
pub fn statefulset(cluster: &RedisCluster) -> Result<StatefulSet> {
    statefulset_for(cluster, &pod_config(&cluster.spec, None))
}

/// The StatefulSet whose pods are made for `pod_config` (`pod_config`, counting what others
/// added to the template).
pub fn statefulset_for(cluster: &RedisCluster, pod_config: &str) -> Result<StatefulSet> {
    let name = cluster.name_any();
    let storage = cluster.spec.storage.as_ref();
    Ok(StatefulSet {
        metadata: child_meta(cluster)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(cluster.spec.replicas),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            // Redis pods do not depend on each other's start order, so scale them all at once.
            pod_management_policy: Some("Parallel".to_owned()),
            // The operator replaces outdated pods itself, one at a time, replicas first and the
            // primary last, after it handed its role to an updated replica: the StatefulSet
            // controller's own roll goes by ordinal and would take the primary down whenever
            // its turn came.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    annotations: Some(BTreeMap::from([(
                        POD_CONFIG_ANNOTATION.to_owned(),
                        pod_config.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(&cluster.spec, &name)),
            },
            volume_claim_templates: storage.map(|storage| {
                vec![PersistentVolumeClaim {
                    // No labels of our own: the StatefulSet controller gives each claim the
                    // selector's labels (which say the cluster). It would also add them to
                    // ours, in place, from several goroutines at once, and Kubernetes 1.28.0's
                    // controller manager dies of that (concurrent map writes), as it did here
                    // while storage was being added to a running cluster.
                    metadata: ObjectMeta {
                        name: Some(DATA_VOLUME.to_owned()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                        storage_class_name: storage.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_owned(),
                                Quantity(storage.size.clone()),
                            )])),
                            ..VolumeResourceRequirements::default()
                        }),
                        volume_mode: Some("Filesystem".to_owned()),
                        ..PersistentVolumeClaimSpec::default()
                    }),
                    ..PersistentVolumeClaim::default()
                }]
            }),
            persistent_volume_claim_retention_policy: storage.map(|storage| {
                let (when_deleted, when_scaled) = storage.retention();
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.as_str().to_owned()),
                    when_scaled: Some(when_scaled.as_str().to_owned()),
                }
            }),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
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

/// How long a pod may take to stop: a primary's wait for its handover (`PRE_STOP_SCRIPT`),
/// then Redis's own shutdown (up to 10 s waiting for replicas to take its last writes, then
/// the append-only file flushed and synced), with room to spare. Redis killed before that
/// could lose the last second of writes.
const TERMINATION_GRACE_SECONDS: i64 = 60;

/// Before a pod stops, a primary that has replicas waits (up to 20 s) for the operator to
/// hand its role to one of them (the operator sees the pod terminating and hands over while
/// its Redis still answers), so that it stops as a replica: writes move to the new primary
/// with nothing lost. A replica, a primary without replicas, or a Redis that does not answer
/// stops at once.
const PRE_STOP_SCRIPT: &str = "i=0; while [ $i -lt 20 ]; do \
     info=$(timeout 2 redis-cli -p 6379 info replication) || exit 0; \
     case \"$info\" in *role:master*) ;; *) exit 0;; esac; \
     case \"$info\" in *connected_slaves:0*) exit 0;; esac; \
     sleep 1; i=$((i+1)); done";

/// Exit 0 once Redis answers commands: while it loads its data from disk it answers
/// `LOADING`, and the liveness probe waits.
const STARTUP_SCRIPT: &str = "timeout 2 redis-cli -p 6379 ping | grep -q PONG";

/// Soft rules that put the pods of a cluster on different nodes where there are several, and
/// still schedule them all on one node when there is only one.
fn spread_over_nodes(cluster_name: &str) -> (Affinity, TopologySpreadConstraint) {
    let selector = LabelSelector {
        match_labels: Some(selector_labels(cluster_name)),
        ..LabelSelector::default()
    };
    let affinity = Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector.clone()),
                        topology_key: HOSTNAME_KEY.to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    };
    let spread = TopologySpreadConstraint {
        max_skew: 1,
        topology_key: HOSTNAME_KEY.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        label_selector: Some(selector),
        ..TopologySpreadConstraint::default()
    };
    (affinity, spread)
}

fn pod_spec(spec: &RedisClusterSpec, cluster_name: &str) -> PodSpec {
    let (affinity, spread) = spread_over_nodes(cluster_name);
    PodSpec {
        // Passes the Pod Security "restricted" level with the official image's redis user.
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(REDIS_UID),
            run_as_group: Some(REDIS_UID),
            fs_group: Some(REDIS_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        // Redis needs no Kubernetes API access and no service environment variables.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        affinity: Some(affinity),
        topology_spread_constraints: Some(vec![spread]),
        containers: vec![redis_container(spec)],
        // With storage, the claim template provides the volume.
        volumes: spec.storage.is_none().then(|| {
            vec![Volume {
                name: DATA_VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }]
        }),
        ..PodSpec::default()
    }
}

/// Exit 0 when this Redis serves as a primary or is a replica linked to one.
const READINESS_SCRIPT: &str = "info=$(timeout 2 redis-cli -p 6379 info replication) || exit 1; \
     case \"$info\" in *role:master*|*master_link_status:up*) exit 0;; esac; exit 1";

/// How Redis runs in every pod: append-only persistence, so that a Redis restarting in its pod
/// reloads its data instead of coming back empty (and no RDB snapshots besides: the
/// append-only file has everything, and a snapshot at shutdown would only delay it); a full
/// sync that starts at once rather than after Redis's default 5 s wait for more replicas to
/// share it (a replica is unready, and the roll or the scale waits, until it is synced); with
/// a memory limit, maxmemory and its policy; and no role until the operator gives one.
fn redis_args(spec: &RedisClusterSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "redis-server",
        "--dir",
        DATA_PATH,
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(String::from)
    .to_vec();
    if let Some((bytes, policy)) = spec.maxmemory() {
        args.extend([
            "--maxmemory".to_owned(),
            bytes.to_string(),
            "--maxmemory-policy".to_owned(),
            policy.as_str().to_owned(),
        ]);
    }
    args.extend([
        "--replicaof".to_owned(),
        UNASSIGNED_HOST.to_owned(),
        UNASSIGNED_PORT.to_string(),
    ]);
    args
}

/// The container's requests and limits: the spec's, else a modest request and no limit.
fn resources(spec: &RedisClusterSpec) -> ResourceRequirements {
    match &spec.resources {
        Some(resources) => ResourceRequirements {
            requests: resources.requests.clone(),
            limits: resources.limits.clone(),
            ..ResourceRequirements::default()
        },
        None => ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".to_owned())),
                ("memory".to_owned(), Quantity("128Mi".to_owned())),
            ])),
            ..ResourceRequirements::default()
        },
    }
}

fn exec(script: &str) -> Option<ExecAction> {
    Some(ExecAction {
        command: Some(["sh", "-c", script].map(String::from).to_vec()),
    })
}

fn redis_container(spec: &RedisClusterSpec) -> Container {
    Container {
        name: REDIS_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        args: Some(redis_args(spec)),
        ports: Some(vec![ContainerPort {
            name: Some(REDIS_PORT_NAME.to_owned()),
            container_port: REDIS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // Ready only in a role: a primary that answers, or a replica whose link to its primary
        // is up (so its initial sync is done). A pod the operator has not given a role yet is
        // a replica of nothing and stays unready; a StatefulSet roll therefore waits for each
        // new pod to hold the primary's data before it takes the next one. The probe bounds
        // redis-cli itself: when the kubelet's timeout kills only `sh`, a hung redis-cli keeps
        // the pipe open and the runtime waits for it, so a Redis that stopped answering was
        // seen failing once every 35 s instead of every period, and stayed ready.
        readiness_probe: Some(Probe {
            exec: exec(READINESS_SCRIPT),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Up to 30 minutes to load a large dataset before the other probes start.
        startup_probe: Some(Probe {
            exec: exec(STARTUP_SCRIPT),
            period_seconds: Some(2),
            timeout_seconds: Some(3),
            failure_threshold: Some(900),
            ..Probe::default()
        }),
        // Restart only a Redis that stopped listening: a slow command must not kill it.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(REDIS_PORT_NAME.to_owned()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        resources: Some(resources(spec)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: exec(PRE_STOP_SCRIPT),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_PATH.to_owned(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
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

/// The replicas a StatefulSet asks for (Kubernetes defaults a missing value to 1).
pub fn desired_replicas(statefulset: &StatefulSet) -> i32 {
    statefulset
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;
