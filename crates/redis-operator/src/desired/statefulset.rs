//! The StatefulSet of a cluster and the pods it makes: how Redis runs in each, and what the
//! pod template says.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, ExecAction, KeyToPath,
    Lifecycle, LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, TCPSocketAction, TopologySpreadConstraint,
    Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use rediscluster_crd::{RedisCluster, RedisClusterSpec};

use super::child_meta;
use crate::auth::{
    AUTH_DIR, AUTH_VOLUME, ClusterCredentials, PasswordSecret, RUN_DIR, RUN_VOLUME, TLS_DIR,
    TLS_VOLUME,
};
use crate::error::Result;
use crate::names::{
    DATA_VOLUME, POD_CONFIG_ANNOTATION, POD_FIELDS_ANNOTATION, REDIS_CONTAINER,
    START_CONFIG_ANNOTATION, labels, selector_labels,
};
use crate::pod_config::{LiveConfig, pod_fields};
use crate::redis::scripts::{self, Login};
use crate::redis::{REDIS_PORT, REDIS_PORT_NAME, UNASSIGNED_HOST, UNASSIGNED_PORT};

/// The hostname topology key: pods of a cluster are spread over nodes.
const HOSTNAME_KEY: &str = "kubernetes.io/hostname";
/// The uid and gid of the `redis` user in the official image.
const REDIS_UID: i64 = 999;
const DATA_PATH: &str = "/data";

/// What the pods of a cluster with auth are made with: the Secret of the `default` password,
/// and the operator-held passwords (only their SHA-256 reaches the template).
#[derive(Clone, Copy)]
pub struct PodAuth<'a> {
    pub secret: &'a PasswordSecret,
    pub credentials: &'a ClusterCredentials,
    /// The TLS Secret (`spec.tls`), if Redis serves TLS.
    pub tls: Option<&'a str>,
}

/// The StatefulSet that keeps `replicas` Redis pods of `spec.image`, each made for
/// `pod_config` (`pod_config::pod_config`, counting what others added to the template), with
/// `auth` or none. The replicas are the ones place the StatefulSet's count is set: the
/// spec's, or more while a primary above it still hands over (`topology::pods_to_keep`).
pub fn statefulset(
    cluster: &RedisCluster,
    pod_config: &str,
    replicas: i32,
    auth: Option<PodAuth<'_>>,
) -> Result<StatefulSet> {
    let name = cluster.name_any();
    let storage = cluster.spec.storage.as_ref();
    Ok(StatefulSet {
        metadata: statefulset_meta(cluster)?,
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
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
                metadata: Some(pod_meta(&cluster.spec, &name, pod_config)),
                spec: Some(pod_spec(&cluster.spec, &name, auth)),
            },
            volume_claim_templates: storage.map(|storage| {
                vec![PersistentVolumeClaim {
                    // No labels of our own: the StatefulSet controller gives each claim the
                    // selector's labels (which say the cluster). It would also add them to
                    // ours, in place, from several goroutines at once, and Kubernetes 1.28.0's
                    // controller manager dies of that (concurrent map writes).
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

/// The StatefulSet's metadata: a child's, and the template fields `spec.pod` sets
/// (`pod_config::foreign_template` reads them).
fn statefulset_meta(cluster: &RedisCluster) -> Result<ObjectMeta> {
    let mut metadata = child_meta(cluster)?;
    let pod_fields = cluster
        .spec
        .pod
        .as_ref()
        .map(pod_fields)
        .unwrap_or_default();
    if !pod_fields.is_empty() {
        metadata.annotations = Some(BTreeMap::from([(
            POD_FIELDS_ANNOTATION.to_owned(),
            pod_fields.join(","),
        )]));
    }
    Ok(metadata)
}

/// The pods' labels and annotations: the user's (`spec.pod`), then the operator's, which the
/// schema keeps the user from setting and which win here all the same.
fn pod_meta(spec: &RedisClusterSpec, cluster_name: &str, pod_config: &str) -> ObjectMeta {
    let settings = spec.pod.as_ref();
    let mut pod_labels = settings
        .and_then(|pod| pod.labels.clone())
        .unwrap_or_default();
    pod_labels.extend(labels(cluster_name));
    let mut annotations = settings
        .and_then(|pod| pod.annotations.clone())
        .unwrap_or_default();
    annotations.insert(POD_CONFIG_ANNOTATION.to_owned(), pod_config.to_owned());
    let live = LiveConfig::of(spec);
    // Only with directives: the templates of clusters without stay as they were.
    if !live.directives.is_empty() {
        annotations.insert(START_CONFIG_ANNOTATION.to_owned(), live.start_annotation());
    }
    ObjectMeta {
        labels: Some(pod_labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    }
}

/// How long a pod may take to stop: a primary's wait for its handover (`scripts::pre_stop`),
/// then Redis's own shutdown (up to 10 s waiting for replicas to take its last writes, then
/// the append-only file flushed and synced), with room to spare. Redis killed before that
/// could lose the last second of writes.
const TERMINATION_GRACE_SECONDS: i64 = 60;

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

fn pod_spec(spec: &RedisClusterSpec, cluster_name: &str, auth: Option<PodAuth<'_>>) -> PodSpec {
    let (affinity, spread) = spread_over_nodes(cluster_name);
    let settings = spec.pod.clone().unwrap_or_default();
    // With storage, the claim template provides the data volume.
    let data = spec.storage.is_none().then(|| Volume {
        name: DATA_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });
    let volumes: Vec<Volume> = data
        .into_iter()
        .chain(
            auth.map(|auth| auth_volumes(auth.secret))
                .into_iter()
                .flatten(),
        )
        .chain(auth.and_then(|auth| auth.tls).map(tls_volume))
        .collect();
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
        affinity: Some(settings.affinity.unwrap_or(affinity)),
        topology_spread_constraints: Some(
            settings
                .topology_spread_constraints
                .unwrap_or_else(|| vec![spread]),
        ),
        node_selector: settings.node_selector,
        tolerations: settings.tolerations,
        priority_class_name: settings.priority_class_name,
        service_account_name: settings.service_account_name,
        containers: vec![redis_container(spec, auth)],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    }
}

/// How Redis runs in every pod: append-only persistence, so that a Redis restarting in its pod
/// reloads its data instead of coming back empty (and no RDB snapshots besides: the
/// append-only file has everything, and a snapshot at shutdown would only delay it); a full
/// sync that starts at once rather than after Redis's default 5 s wait for more replicas to
/// share it (a replica is unready, and the roll or the scale waits, until it is synced); with
/// a memory limit, maxmemory and its policy; and no role until the operator gives one.
fn redis_args(spec: &RedisClusterSpec, tls: bool) -> Vec<String> {
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
    // The user's directives, as `redis.conf` spells them (Redis splits the value the same
    // way); the schema refuses the ones set here.
    for (directive, value) in spec.config.iter().flatten() {
        args.extend([format!("--{directive}"), value.clone()]);
    }
    if tls {
        // TLS on Redis's port, the plain port closed; replicas sync over TLS. Clients need no
        // certificate of their own: they log in with a password.
        let file = |name: &str| format!("{TLS_DIR}/{name}");
        args.extend([
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            REDIS_PORT.to_string(),
            "--tls-cert-file".to_owned(),
            file("tls.crt"),
            "--tls-key-file".to_owned(),
            file("tls.key"),
            "--tls-ca-cert-file".to_owned(),
            file("ca.crt"),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
            "--tls-replication".to_owned(),
            "yes".to_owned(),
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

/// The volumes of a pod with auth: the password, readable only by Redis's group (the pod's
/// `fsGroup`), with a missing Secret or key left for the start script to report (a volume that
/// cannot be mounted would leave the pod waiting, with the reason only in an event); and the
/// in-memory run directory for the ACL file and the probe password.
fn auth_volumes(secret: &PasswordSecret) -> [Volume; 2] {
    [
        Volume {
            name: AUTH_VOLUME.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: secret.key.clone(),
                    path: "password".to_owned(),
                    mode: None,
                }]),
                default_mode: Some(0o440),
                optional: Some(true),
            }),
            ..Volume::default()
        },
        Volume {
            name: RUN_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                size_limit: Some(Quantity("1Mi".to_owned())),
            }),
            ..Volume::default()
        },
    ]
}

/// Where the container mounts its volumes: the data, and with auth the password (read-only)
/// and the run directory.
fn volume_mounts(auth: Option<PodAuth<'_>>) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![mount(DATA_VOLUME, DATA_PATH, false)];
    if let Some(auth) = auth {
        mounts.extend([
            mount(AUTH_VOLUME, AUTH_DIR, true),
            mount(RUN_VOLUME, RUN_DIR, false),
        ]);
        if auth.tls.is_some() {
            mounts.push(mount(TLS_VOLUME, TLS_DIR, true));
        }
    }
    mounts
}

/// With auth, the container's command: a shell that writes the ACL file and then runs Redis
/// (`scripts::start`, with the container's arguments after `$0`); without, none (the image
/// runs Redis itself).
fn start_command(auth: PodAuth<'_>) -> Vec<String> {
    let start = scripts::start(
        auth.secret,
        &auth.credentials.operator.sha256(),
        &auth.credentials.replica.sha256(),
        auth.tls,
    );
    ["sh", "-c", start.as_str(), "redis-start"]
        .map(String::from)
        .to_vec()
}

/// The TLS Secret's volume: like the password's, optional, so that the start script names
/// what is missing.
fn tls_volume(secret: &str) -> Volume {
    Volume {
        name: TLS_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            optional: Some(true),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn redis_container(spec: &RedisClusterSpec, auth: Option<PodAuth<'_>>) -> Container {
    let tls = auth.is_some_and(|auth| auth.tls.is_some());
    let login = match auth {
        Some(_) => Login::Probe { tls },
        None => Login::None,
    };
    // With auth, each readiness probe first takes a new password from the Secret; with TLS,
    // a renewed certificate.
    let rotate = auth.map(|auth| scripts::rotate(login, auth.secret.previous_seconds));
    let reload = tls.then(scripts::reload_certificate);
    let readiness =
        rotate.unwrap_or_default() + &reload.unwrap_or_default() + &scripts::readiness(login);
    Container {
        name: REDIS_CONTAINER.to_owned(),
        image: Some(spec.image.clone()),
        command: auth.map(start_command),
        args: Some(redis_args(spec, tls)),
        ports: Some(vec![ContainerPort {
            name: Some(REDIS_PORT_NAME.to_owned()),
            container_port: i32::from(REDIS_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        // Ready only in a role: a primary that answers, or a replica whose link to its primary
        // is up (so its initial sync is done). A new pod is unready until it holds the
        // primary's data, so a roll waits for it before it takes the next one.
        readiness_probe: Some(Probe {
            exec: exec(&readiness),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        // Up to 30 minutes to load a large dataset before the other probes start.
        startup_probe: Some(Probe {
            exec: exec(&scripts::startup(login)),
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
                exec: exec(&scripts::pre_stop(login)),
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
        volume_mounts: Some(volume_mounts(auth)),
        ..Container::default()
    }
}
