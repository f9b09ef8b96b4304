//! What a pod is made for (its config): asked of the spec when building the StatefulSet, read
//! back from each pod to tell an outdated pod from a current one. One concept, both ways.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, LocalObjectReference, Pod, Toleration, Volume};
use kube::ResourceExt;
use rediscluster_crd::{PodSettings, RedisClusterSpec, needs_restart};
use serde::Serialize;

use crate::auth::{AUTH_VOLUME, PasswordSecret, RUN_VOLUME, TLS_VOLUME};
use crate::names::{
    DATA_VOLUME, LIVE_CONFIG_ANNOTATION, POD_CONFIG_ANNOTATION, POD_FIELDS_ANNOTATION,
    REDIS_CONTAINER, START_CONFIG_ANNOTATION, labels,
};

/// What a pod is made for that only replacing it can change: the image, storage or not, the
/// resources, Redis's maxmemory, auth and its Secret; what others added to the pod template (a sidecar, the
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
    /// The Secret of the `default` password, with auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a PasswordSecret>,
    /// The TLS Secret, with TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'a str>,
    /// The spec's scheduling and metadata of the pods.
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<&'a PodSettings>,
    /// The spec's directives that Redis takes only at start (the others are set on the
    /// running Redis).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    restart_config: BTreeMap<&'a String, &'a String>,
}

/// The operator's pod template epoch: raised only by a release whose change existing pods
/// cannot do without, so that they are replaced. 1: pods run as replicas of a primary the
/// operator chooses (`--replicaof`); 0 before that.
const POD_EPOCH: u32 = 1;

/// A short, stable digest (FNV-1a): compared, never read back.
pub fn digest(text: &str) -> String {
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
/// to the StatefulSet's pod template (`foreign_template`), and the cluster's `auth` (its
/// password Secret).
pub fn pod_config(
    spec: &RedisClusterSpec,
    foreign: Option<&str>,
    auth: Option<&PasswordSecret>,
) -> String {
    PodConfig {
        image: &spec.image,
        epoch: POD_EPOCH,
        storage: spec.storage.is_some(),
        resources: spec.resources.as_ref(),
        maxmemory: spec
            .maxmemory()
            .map(|(bytes, policy)| (bytes, policy.as_str())),
        foreign,
        tls: crate::auth::tls_secret(spec, auth),
        auth,
        pod: spec.pod.as_ref(),
        restart_config: spec
            .config
            .iter()
            .flatten()
            .filter(|(directive, _)| needs_restart(directive))
            .collect(),
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
            auth: None,
            tls: None,
            pod: None,
            restart_config: BTreeMap::new(),
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
/// changes its own fields rolls nothing. So are the fields `spec.pod` sets (`ours`): they
/// are the spec's, part of the pod config already; and those the last apply set from it.
pub fn foreign_template(
    statefulset: &StatefulSet,
    cluster_name: &str,
    ours: Option<&PodSettings>,
) -> Option<String> {
    let template = &statefulset.spec.as_ref()?.template;
    let settings = ours.cloned().unwrap_or_default();
    // What the last apply set from spec.pod is ours too: the spec may have just dropped it,
    // and the apply that takes it away has not run yet.
    let applied: Vec<&str> = statefulset
        .annotations()
        .get(POD_FIELDS_ANNOTATION)
        .map(|fields| fields.split(',').collect())
        .unwrap_or_default();
    let managed = |field: &str| applied.contains(&field);
    let mut ours = labels(cluster_name);
    ours.extend(settings.labels.clone().unwrap_or_default());
    let our_annotations = settings.annotations.clone().unwrap_or_default();
    let theirs = |set_by_spec: bool, field: &str| !set_by_spec && !managed(field);
    let metadata = template.metadata.as_ref();
    let spec = template.spec.as_ref();
    let foreign = ForeignTemplate {
        annotations: metadata
            .into_iter()
            .flat_map(|m| m.annotations.iter().flatten())
            .filter(|(key, _)| {
                ![POD_CONFIG_ANNOTATION, START_CONFIG_ANNOTATION].contains(&key.as_str())
                    && !our_annotations.contains_key(*key)
                    && !managed(&format!("annotation:{key}"))
            })
            .collect(),
        labels: metadata
            .into_iter()
            .flat_map(|m| m.labels.iter().flatten())
            .filter(|(key, _)| !ours.contains_key(*key) && !managed(&format!("label:{key}")))
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
            .filter(|v| {
                ![DATA_VOLUME, AUTH_VOLUME, RUN_VOLUME, TLS_VOLUME].contains(&v.name.as_str())
            })
            .collect(),
        tolerations: list(
            spec.map(|s| &s.tolerations)
                .filter(|_| theirs(settings.tolerations.is_some(), "tolerations")),
        ),
        node_selector: spec
            .and_then(|s| s.node_selector.as_ref())
            .filter(|_| theirs(settings.node_selector.is_some(), "nodeSelector")),
        priority_class_name: spec
            .and_then(|s| s.priority_class_name.as_ref())
            .filter(|_| theirs(settings.priority_class_name.is_some(), "priorityClassName")),
        service_account_name: spec
            .and_then(|s| s.service_account_name.as_ref())
            .filter(|_| {
                theirs(
                    settings.service_account_name.is_some(),
                    "serviceAccountName",
                )
            }),
        image_pull_secrets: list(spec.map(|s| &s.image_pull_secrets)),
        runtime_class_name: spec.and_then(|s| s.runtime_class_name.as_ref()),
    };
    let json = serde_json::to_string(&foreign).unwrap_or_default();
    (json != "{}").then(|| digest(&json))
}
/// The pod template fields `settings` sets, as the StatefulSet's [`POD_FIELDS_ANNOTATION`]
/// lists them: `nodeSelector`, `tolerations`, `priorityClassName`, `serviceAccountName`,
/// `label:<key>`, `annotation:<key>`.
pub fn pod_fields(settings: &PodSettings) -> Vec<String> {
    let set = [
        ("nodeSelector", settings.node_selector.is_some()),
        ("tolerations", settings.tolerations.is_some()),
        ("priorityClassName", settings.priority_class_name.is_some()),
        (
            "serviceAccountName",
            settings.service_account_name.is_some(),
        ),
    ];
    let keys = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Vec<String> {
        map.iter()
            .flatten()
            .map(|(k, _)| format!("{prefix}:{k}"))
            .collect()
    };
    set.iter()
        .filter(|(_, set)| *set)
        .map(|(field, _)| (*field).to_owned())
        .chain(keys("label", &settings.labels))
        .chain(keys("annotation", &settings.annotations))
        .collect()
}

/// Whether a pod made for `made_for` is outdated when the spec asks for `wanted`: both known,
/// and different. A pod whose config cannot be told, or a spec that changes no pod (invalid,
/// or no StatefulSet to make it again), makes no pod outdated.
pub fn is_outdated(made_for: Option<&str>, wanted: Option<&str>) -> bool {
    matches!((made_for, wanted), (Some(made_for), Some(wanted)) if made_for != wanted)
}

/// The spec's directives that Redis takes at run time (`CONFIG SET`), by lower-case name:
/// given to every pod's Redis without replacing it. The others are part of the pod config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveConfig {
    pub directives: BTreeMap<String, String>,
}

impl LiveConfig {
    pub fn of(spec: &RedisClusterSpec) -> Self {
        LiveConfig {
            directives: spec
                .config
                .iter()
                .flatten()
                .filter(|(directive, _)| !needs_restart(directive))
                .map(|(directive, value)| (directive.to_ascii_lowercase(), value.clone()))
                .collect(),
        }
    }

    pub fn digest(&self) -> String {
        digest(&serde_json::to_string(&self.directives).unwrap_or_default())
    }

    /// The pod template's [`START_CONFIG_ANNOTATION`]: what its Redis starts with.
    pub fn start_annotation(&self) -> String {
        format!("{};{}", self.digest(), names(self.directives.keys()))
    }

    /// The [`LIVE_CONFIG_ANNOTATION`] of a pod whose Redis run `run_id` was given this
    /// config, and still carries the directives it had (`carried`).
    pub fn live_annotation(&self, run_id: &str, carried: &BTreeSet<String>) -> String {
        let all = carried.iter().chain(self.directives.keys());
        format!("{run_id};{};{}", self.digest(), names(all))
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: BTreeSet<&String> = names.collect();
    names.into_iter().cloned().collect::<Vec<_>>().join(",")
}

/// What a pod's Redis was given of the live config: what it started with (its template's
/// annotation), and what the operator set at run time (which a restart of its Redis undoes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLiveConfig {
    /// The digest it started with, None for a pod made before the annotation.
    started: Option<String>,
    /// The Redis run (`run_id`) the operator gave a config to, and that config's digest.
    given: Option<(String, String)>,
    /// Every directive it started with or was given.
    carried: BTreeSet<String>,
}

impl PodLiveConfig {
    pub fn of(pod: &Pod) -> Self {
        let annotation = |key: &str| pod.annotations().get(key).map(String::as_str);
        let split_names = |names: &str| -> Vec<String> {
            names
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut config = PodLiveConfig::default();
        if let Some((digest, names)) =
            annotation(START_CONFIG_ANNOTATION).and_then(|a| a.split_once(';'))
        {
            config.started = Some(digest.to_owned());
            config.carried.extend(split_names(names));
        }
        let mut given = annotation(LIVE_CONFIG_ANNOTATION)
            .into_iter()
            .flat_map(|a| a.splitn(3, ';'));
        if let (Some(run), Some(digest), Some(names)) = (given.next(), given.next(), given.next()) {
            config.given = Some((run.to_owned(), digest.to_owned()));
            config.carried.extend(split_names(names));
        }
        config
    }

    /// Whether the Redis run `run_id` has `wanted` in effect: the one the operator gave it, or
    /// else the one it started with (an empty one for a pod made before the annotation).
    pub fn in_effect(&self, wanted: &LiveConfig, run_id: &str) -> bool {
        let digest = wanted.digest();
        match &self.given {
            Some((run, given)) if run == run_id => *given == digest,
            _ => match &self.started {
                Some(started) => *started == digest,
                None => wanted.directives.is_empty(),
            },
        }
    }

    /// Whether it carries a directive the spec no longer sets: Redis cannot be told to go
    /// back to its default, so only a new pod drops it.
    pub fn carries_dropped(&self, wanted: &LiveConfig) -> bool {
        self.carried
            .iter()
            .any(|name| !wanted.directives.contains_key(name))
    }

    pub fn carried(&self) -> &BTreeSet<String> {
        &self.carried
    }
}
