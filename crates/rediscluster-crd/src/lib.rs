//! The `RedisCluster` custom resource (`cache.example.com/v1alpha1`).
//!
//! The Rust types here are the single source of truth for the API: the CRD checked in under
//! `crds/` is generated from them (`redis-operator generate-crd`), and a test fails when the two
//! drift apart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, ValidationRule,
};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod quantity;
mod settings;
pub use quantity::{cel_bytes, quantity_value};
pub use settings::{
    MEMORY_DIRECTIVES, OWNED_DIRECTIVES, OWNED_PREFIXES, PodSettings, RESTART_DIRECTIVES,
    ServiceSettings, ServiceType, needs_restart, owned_directive,
};

/// The least and most Redis pods one cluster may ask for.
pub const MIN_REPLICAS: i32 = 1;
pub const MAX_REPLICAS: i32 = 20;

/// The longest RedisCluster name that yields every child the operator makes. The tightest
/// limit is the StatefulSet's: each of its pods carries the label `controller-revision-hash`
/// with the value `<name>-<hash>`, the hash up to 10 characters, and a label value must fit in
/// 63 characters. The other children fit within it: the `<name>-primary` and `<name>-replicas`
/// Services (up to 9 more characters) and the pods `<name>-<ordinal>`.
pub const MAX_NAME_LENGTH: usize = 52;

/// A RedisCluster's name becomes the name of Services, so it must be a DNS-1035 label: lower
/// case letters, digits and '-', starting with a letter and ending with a letter or digit.
pub const NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// What is wrong with this RedisCluster name, if anything: the same rules the CRD enforces at
/// admission (for objects created before the rules existed, the operator reports it).
pub fn name_problem(name: &str) -> Option<String> {
    let dns_label = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if name.len() > MAX_NAME_LENGTH {
        Some(name_too_long_message())
    } else if !dns_label {
        Some(name_not_dns_label_message())
    } else {
        None
    }
}

fn name_too_long_message() -> String {
    format!(
        "the name of a RedisCluster may have at most {MAX_NAME_LENGTH} characters: its StatefulSet's \
         pods carry the label controller-revision-hash=<name>-<hash of up to 10 characters>, \
         which must fit in 63"
    )
}

fn name_not_dns_label_message() -> String {
    "the name of a RedisCluster must consist of lower case letters, digits and '-', start with a \
     letter and end with a letter or digit (a DNS-1035 label), because its Services take it"
        .to_owned()
}

/// Where `crd_yaml()` is checked in, relative to the workspace root.
pub const CRD_PATH: &str = "crds/redisclusters.cache.example.com.yaml";

/// Desired state of a Redis cluster: which image to run and how many pods.
// clippy reads the repeated `type_ = ...` of separate printcolumns as one duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cache.example.com",
    version = "v1alpha1",
    kind = "RedisCluster",
    plural = "redisclusters",
    singular = "rediscluster",
    shortname = "redis",
    category = "all",
    namespaced,
    status = "RedisClusterStatus",
    derive = "PartialEq",
    doc = "A Redis cluster: one primary and replicas that follow it, in a StatefulSet, behind `<name>-primary` (writes) and `<name>-replicas` (reads) Services, managed by redis-operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "Redis container image"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Requested Redis pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Redis pods ready to serve"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.primary",
        description = "The pod that takes writes"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase of the cluster"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterSpec {
    /// Container image that runs Redis, for example `redis:7.0`. Changing it rolls the pods one by one.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Number of Redis pods, from 1 to 20: one primary and `replicas - 1` replicas of it.
    /// Changing it scales the StatefulSet; the primary's pod is never the one removed.
    #[schemars(range(min = MIN_REPLICAS, max = MAX_REPLICAS))]
    pub replicas: i32,

    /// A PersistentVolumeClaim per pod for its data. Without it, data lives in an emptyDir and
    /// goes with the pod (a replica copies it back from the primary). Adding it to a running
    /// cluster replaces the pods one at a time from the lowest ordinal up, the primary handing
    /// over when its turn comes. It cannot be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,

    /// CPU and memory requests and limits of the Redis container. Unset: it requests 100m CPU
    /// and 128Mi memory, with no limit. With a memory limit (at least 32Mi), Redis's maxmemory
    /// is 80% of what is left of it after 24Mi for Redis itself: the rest is for what Redis
    /// uses beyond its data (buffers, memory freed by evictions that the allocator keeps), so
    /// that Redis evicts or refuses writes before the kernel kills it. Changing it replaces the
    /// pods one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// What Redis does when its data reaches maxmemory (with a memory limit only), one of
    /// Redis's maxmemory-policy values. Default: noeviction with storage (writes fail with an
    /// OOM error, no data vanishes), allkeys-lru without (it is a cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maxmemory_policy: Option<MaxmemoryPolicy>,

    /// How a primary that may have been replaced stops acknowledging writes: it takes a write
    /// only while enough replicas acknowledge its stream (Redis's `min-replicas-to-write` and
    /// `min-replicas-max-lag`, set at run time: changing it restarts nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<Fencing>,

    /// Who may use Redis. Unset on a new cluster: clients log in as Redis's `default` user
    /// with the password in the Secret `<name>-auth` (key `password`), which the operator
    /// makes with a random password and which goes with the cluster. A cluster made before
    /// the operator knew auth keeps running without it until this is set. Changing it replaces
    /// the pods one at a time, the primary handing over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,

    /// TLS for every connection to Redis: clients, replication, the operator and the probes.
    /// The plain port is closed. It turns auth on for a cluster made without it, and cannot be
    /// had with `spec.auth.insecureAllowUnauthenticated`. Changing it replaces the pods one at
    /// a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,

    /// Scheduling and metadata of the pods: node selector, tolerations, affinity, topology
    /// spread, priority class, service account, extra labels and annotations. Changing it
    /// replaces the pods one at a time, the primary handing over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,

    /// The type and annotations of the `<name>-primary` and `<name>-replicas` Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSettings>,

    /// `redis.conf` directives for every Redis, name to value as `redis.conf` spells it (for
    /// example `notify-keyspace-events: KEA`). A change is applied to the running Redis with
    /// `CONFIG SET`, no restart; one to a directive Redis takes only at start (`databases`,
    /// `io-threads`, `logfile`...) replaces the pods one at a time. Directives the operator
    /// sets are refused: replication and the write fence, persistence and `dir`, `port` and
    /// `bind`, auth (`requirepass`, `aclfile`, `user`), `tls-*`, `include`,
    /// `rename-command`, `daemonize`, `cluster-*`, and with a memory limit `maxmemory` and
    /// `maxmemory-policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "settings::config_schema")]
    pub config: Option<BTreeMap<String, String>>,
}

/// Where a cluster's Redis finds its certificate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// A `kubernetes.io/tls` Secret in the cluster's namespace with `tls.crt`, `tls.key` and
    /// `ca.crt`, as cert-manager issues it. The certificate must name each pod
    /// (`<pod>.<name>.<namespace>.svc`, or `*.<name>.<namespace>.svc`): the operator dials pod
    /// IPs and verifies that name. A renewed certificate is served without a restart.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: String,
}

/// How clients authenticate to a cluster's Redis.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// A Secret in the cluster's namespace holding the `default` user's password, which the
    /// pods read (the operator never does). Unset: `<name>-auth`, made by the operator with a
    /// random password if it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,

    /// The key of the password in that Secret. Default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,

    /// After a pod takes a new password from the Secret (the kubelet refreshes it within about
    /// a minute and a half of the change), how long the previous one still works there, in
    /// seconds: the time clients have to switch. Default 600. Changing it replaces the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub previous_password_seconds: Option<i32>,

    /// `true` turns authentication off: anyone who can reach a pod reads, writes and
    /// reconfigures Redis without a password. The other fields are then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_allow_unauthenticated: Option<bool>,
}

/// The key of the password in the Secret a cluster's auth names, unless it says another.
pub const DEFAULT_PASSWORD_KEY: &str = "password";

/// The default of `spec.auth.previousPasswordSeconds`.
pub const DEFAULT_PREVIOUS_PASSWORD_SECONDS: u32 = 600;

/// The Secret the operator makes for a cluster whose auth names none.
pub fn generated_secret_name(cluster_name: &str) -> String {
    format!("{cluster_name}-auth")
}

/// The write fence of a cluster's primary.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fencing {
    /// Replicas that must have acknowledged the primary's stream within `maxLagSeconds` for it
    /// to take a write; it refuses writes (`NOREPLICAS`) with fewer. 0 turns the fence off.
    /// Default: 1 with 3 pods or more, 0 with fewer (with 2 pods, 1 would refuse every write
    /// while the only replica restarts, as it does in each roll). Never more than
    /// `replicas - 1`, and off until that many replicas are in sync (a new cluster, a
    /// scale-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 19))]
    pub min_replicas: Option<i32>,

    /// How recent a replica's acknowledgement must be, in seconds: a primary cut off from its
    /// replicas stops taking writes this long (plus up to a second) after their last
    /// acknowledgement. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_lag_seconds: Option<i32>,
}

/// The default of `spec.fencing.maxLagSeconds`.
pub const DEFAULT_MAX_LAG_SECONDS: u32 = 3;

impl RedisClusterSpec {
    /// The fence asked for: (replicas that must acknowledge, within how many seconds), with
    /// the defaults and the `replicas - 1` ceiling applied.
    pub fn fencing(&self) -> (u32, u32) {
        let fencing = self.fencing.clone().unwrap_or_default();
        let pods = u32::try_from(self.replicas).unwrap_or(1);
        let default = if pods >= 3 { 1 } else { 0 };
        let min_replicas = fencing
            .min_replicas
            .map_or(default, |n| u32::try_from(n).unwrap_or(0))
            .min(pods.saturating_sub(1));
        let max_lag = fencing
            .max_lag_seconds
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(DEFAULT_MAX_LAG_SECONDS);
        (min_replicas, max_lag)
    }
}

/// Persistent storage of each Redis pod.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of each pod's PersistentVolumeClaim, a quantity such as `1Gi`, at least 1Mi. It
    /// may grow (the claims are expanded where their StorageClass allows it; the status says
    /// when it does not) but never shrink.
    #[schemars(length(min = 1, max = 32), pattern(quantity::CEL_SIZED))]
    pub size: String,

    /// StorageClass of the claims; the cluster's default class when unset. Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,

    /// What becomes of the claims when the cluster is deleted (default Delete) or scaled
    /// down (default Retain: scaling up again reuses a claim, data and all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim_retention_policy: Option<ClaimRetention>,
}

/// When the claims of a cluster's pods are deleted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRetention {
    /// When the RedisCluster is deleted: Delete (the default) or Retain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_deleted: Option<RetentionAction>,
    /// When the cluster scales down, for the pods removed: Retain (the default) or Delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_scaled: Option<RetentionAction>,
}

/// Keep or delete a PersistentVolumeClaim.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionAction {
    Retain,
    Delete,
}

impl RetentionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionAction::Retain => "Retain",
            RetentionAction::Delete => "Delete",
        }
    }
}

impl Storage {
    /// What becomes of the claims when the cluster is deleted, and when it scales down.
    pub fn retention(&self) -> (RetentionAction, RetentionAction) {
        let policy = self
            .persistent_volume_claim_retention_policy
            .clone()
            .unwrap_or_default();
        (
            policy.when_deleted.unwrap_or(RetentionAction::Delete),
            policy.when_scaled.unwrap_or(RetentionAction::Retain),
        )
    }
}

/// Requests and limits of the Redis container, as in a pod (`cpu`, `memory`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// The least CPU and memory the container is scheduled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantities")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// The most the container may use; with `memory`, Redis's maxmemory is 80% of what 24Mi
    /// leaves of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantities")]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

/// A map of resource names to quantities, bounded so that CEL rules over it stay within the
/// API server's cost budget (k8s-openapi's Quantity schema has no length limit, and a
/// three-page description repeated in `kubectl explain`).
fn quantities(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            "description": "A quantity: an integer or a string such as 500m, 1, 64Mi, 1Gi.",
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
            "maxLength": 64,
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
        }
    })
}

/// Redis's maxmemory-policy values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MaxmemoryPolicy {
    Noeviction,
    AllkeysLru,
    AllkeysLfu,
    AllkeysRandom,
    VolatileLru,
    VolatileLfu,
    VolatileRandom,
    VolatileTtl,
}

impl MaxmemoryPolicy {
    /// As Redis spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MaxmemoryPolicy::Noeviction => "noeviction",
            MaxmemoryPolicy::AllkeysLru => "allkeys-lru",
            MaxmemoryPolicy::AllkeysLfu => "allkeys-lfu",
            MaxmemoryPolicy::AllkeysRandom => "allkeys-random",
            MaxmemoryPolicy::VolatileLru => "volatile-lru",
            MaxmemoryPolicy::VolatileLfu => "volatile-lfu",
            MaxmemoryPolicy::VolatileRandom => "volatile-random",
            MaxmemoryPolicy::VolatileTtl => "volatile-ttl",
        }
    }
}

/// Memory a Redis process takes whatever its data, and the kernel counts against the
/// container's limit: measured with the official image, about 14 MB resident beyond
/// `used_memory` and 9.5 MB of mapped binary and libraries.
pub const MAXMEMORY_RESERVED: u64 = 24 * 1024 * 1024;
/// The share of the rest of the limit that Redis may fill with data (maxmemory); the other
/// 20% is for what the allocator holds beyond the data (memory freed by evictions, in
/// pieces) and for buffers. Measured: with maxmemory at 80% of a 64Mi limit, a Redis filled
/// with 1 KB values under allkeys-lru reached 64 MB resident and the kernel killed it.
pub const MAXMEMORY_SHARE_PERCENT: u64 = 80;
/// The least memory limit Redis is given (6.4Mi of data).
pub const MIN_MEMORY_LIMIT: &str = "32Mi";
/// The least storage size.
pub const MIN_STORAGE_SIZE: &str = "1Mi";

impl RedisClusterSpec {
    /// The container's memory limit, if it has one.
    fn memory_limit(&self) -> Option<&Quantity> {
        self.resources.as_ref()?.limits.as_ref()?.get("memory")
    }

    /// Redis's maxmemory and its policy: only with a memory limit (that is a quantity).
    pub fn maxmemory(&self) -> Option<(u64, MaxmemoryPolicy)> {
        let limit = quantity_value(&self.memory_limit()?.0)? as u64;
        let policy = self.maxmemory_policy.unwrap_or(if self.storage.is_some() {
            MaxmemoryPolicy::Noeviction
        } else {
            MaxmemoryPolicy::AllkeysLru
        });
        let rest = limit.saturating_sub(MAXMEMORY_RESERVED);
        Some((rest.saturating_mul(MAXMEMORY_SHARE_PERCENT) / 100, policy))
    }
}

/// What is wrong with this spec that the schema could not catch (quantities in forms CEL does
/// not size, objects admitted before the rules existed), if anything.
pub fn spec_problem(spec: &RedisClusterSpec) -> Option<String> {
    let at_least = |what: &str, value: &str, least: &str| -> Option<String> {
        match quantity_value(value) {
            None => Some(format!("{what} {value:?} is not a quantity")),
            Some(bytes) if bytes < quantity_value(least).unwrap_or_default() => {
                Some(format!("{what} must be at least {least}, not {value}"))
            }
            Some(_) => None,
        }
    };
    let unauthenticated = spec
        .auth
        .as_ref()
        .is_some_and(|auth| auth.insecure_allow_unauthenticated == Some(true));
    if spec.tls.is_some() && unauthenticated {
        return Some(
            "spec.tls needs auth: remove spec.auth.insecureAllowUnauthenticated".to_owned(),
        );
    }
    let memory = spec.memory_limit();
    let owned = spec
        .config
        .iter()
        .flatten()
        .find_map(|(directive, _)| owned_directive(directive, memory.is_some()));
    if owned.is_some() {
        return owned;
    }
    let size = spec.storage.as_ref().map(|storage| &storage.size);
    memory
        .and_then(|limit| at_least("spec.resources.limits.memory", &limit.0, MIN_MEMORY_LIMIT))
        .or_else(|| size.and_then(|size| at_least("spec.storage.size", size, MIN_STORAGE_SIZE)))
}

/// Observed state of a Redis cluster, written by the operator only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisClusterStatus {
    /// Lifecycle phase: Pending, Running, Scaling or Failed.
    #[serde(default)]
    pub phase: Phase,

    /// Redis pods that are ready in their role: the primary serving, each replica linked to
    /// it with its initial sync done.
    #[serde(default)]
    pub ready_replicas: i32,

    /// The pod that takes writes (labelled `cache.example.com/role=primary`, behind the
    /// `<name>-primary` Service), once the operator has made one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,

    /// Redis pods that currently exist (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,

    /// Redis pods made for the current spec (the pod config the operator rolls pods by).
    #[serde(default)]
    pub updated_replicas: i32,

    /// While the cluster is not Running: when its pod counts last moved (or its spec last
    /// changed). Counts that stay still for the operator's failure grace period make it Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,

    /// Label selector of the cluster's pods, as a string (the scale subresource's selector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The metadata.generation of the RedisCluster that this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard Kubernetes conditions: Ready, Progressing and Degraded; PrimaryAvailable; and,
    /// with storage, StorageSized.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The condition types the operator writes.
pub mod conditions {
    /// True exactly when the phase is Running: `kubectl wait --for=condition=Ready` works.
    pub const READY: &str = "Ready";
    /// True while the operator is creating, scaling or rolling pods.
    pub const PROGRESSING: &str = "Progressing";
    /// True when the cluster is Failed; its reason and message say why.
    pub const DEGRADED: &str = "Degraded";
    /// With auth only: True when every pod that answers accepts the same passwords (reason
    /// OnePassword, or BothPasswords while the previous one still works after a rotation);
    /// False while some pod has not taken the Secret's new password yet (Rotating).
    pub const PASSWORDS_AGREE: &str = "PasswordsAgree";
    /// True while a primary serves writes, its reason saying how it became primary (Elected,
    /// FailedOver, SwitchedOver) and its message naming the last change; False says why no
    /// primary serves (PrimaryNotAnswering, NoQuorum, NoCandidate, PrimaryLeaving,
    /// SwitchingOver, NoPrimaryYet).
    pub const PRIMARY_AVAILABLE: &str = "PrimaryAvailable";
    /// With `spec.storage` only: True when every pod's claim holds the spec's size; False
    /// while claims grow (Resizing) or when their StorageClass does not let them
    /// (ResizeRefused, with the API server's answer).
    pub const STORAGE_SIZED: &str = "StorageSized";
}

impl RedisClusterStatus {
    /// The condition of this type, if the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Lifecycle phase of a Redis cluster.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// No StatefulSet yet, or no pod has become ready since the cluster was created.
    #[default]
    Pending,
    /// Every desired pod is ready and runs the current spec.
    Running,
    /// The operator is adding, removing, rolling or recovering pods.
    Scaling,
    /// The operator cannot make progress; the conditions say why.
    Failed,
}

impl Phase {
    /// Every phase, in declaration order.
    pub const ALL: [Phase; 4] = [
        Phase::Pending,
        Phase::Running,
        Phase::Scaling,
        Phase::Failed,
    ];

    /// The phase as it is spelled in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Scaling => "Scaling",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CustomResourceDefinition, with `listKind` spelled out rather than left to the server,
/// and the name rules as CEL on the root (the only place a rule may read `metadata.name`).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = RedisCluster::crd();
    crd.spec.names.list_kind = Some(format!("{}List", crd.spec.names.kind));
    let rules = vec![
        ValidationRule {
            rule: format!("self.metadata.name.size() <= {MAX_NAME_LENGTH}"),
            message: Some(name_too_long_message()),
            ..ValidationRule::default()
        },
        ValidationRule {
            rule: format!("self.metadata.name.matches('{NAME_PATTERN}')"),
            message: Some(name_not_dns_label_message()),
            ..ValidationRule::default()
        },
    ];
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            schema.x_kubernetes_validations = Some(rules.clone());
            tidy(schema);
            for (path, rules) in field_rules().into_iter().chain(settings_rules()) {
                if let Some(field) = property(schema, path) {
                    field
                        .x_kubernetes_validations
                        .get_or_insert_default()
                        .extend(rules);
                }
            }
        }
    }
    crd
}

/// For `kubectl explain` and admission messages: descriptions as paragraphs (doc comments are
/// wrapped at 100 columns; a terminal wraps them again), and no `null` among an optional
/// enum's values (a missing field is how to say none).
fn tidy(schema: &mut JSONSchemaProps) {
    if let Some(description) = schema.description.as_mut() {
        *description = description
            .split("\n\n")
            .map(|paragraph| paragraph.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n\n");
    }
    if let Some(values) = schema.enum_.as_mut() {
        values.retain(|value| !value.0.is_null());
    }
    for property in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        tidy(property);
    }
}

/// The schema of the property at `path` (names from the root).
fn property<'a>(schema: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    path.iter().try_fold(schema, |schema, name| {
        schema.properties.as_mut()?.get_mut(*name)
    })
}

fn rule(rule: String, message: &str) -> ValidationRule {
    ValidationRule {
        rule,
        message: Some(message.to_owned()),
        ..ValidationRule::default()
    }
}

/// The rules of `spec.config` and `spec.pod`: directives and labels the operator owns.
fn settings_rules() -> Vec<(&'static [&'static str], Vec<ValidationRule>)> {
    let memory_limit = "has(self.resources) && has(self.resources.limits) && \
                        'memory' in self.resources.limits";
    vec![
        (
            &["spec"],
            vec![rule(
                format!(
                    "!has(self.config) || !({memory_limit}) || \
                     !self.config.exists(k, {})",
                    settings::cel_memory_directive()
                ),
                "spec.config cannot set maxmemory or maxmemory-policy with a memory limit: \
                 the operator sets them from spec.resources.limits.memory and \
                 spec.maxmemoryPolicy",
            )],
        ),
        (
            &["spec", "config"],
            vec![message_rule(
                format!("self.all(k, {})", settings::cel_allowed_directive()),
                format!(
                    "'spec.config cannot set ' + self.filter(k, !({}))[0] + ': the operator \
                     sets it (replication, fencing, persistence, port, auth, TLS)'",
                    settings::cel_allowed_directive()
                ),
            )],
        ),
        (
            &["spec", "pod", "labels"],
            vec![rule(
                format!("self.all(k, {})", settings::cel_allowed_label()),
                "spec.pod.labels cannot set the operator's labels (app.kubernetes.io/name, \
                 instance, managed-by, cache.example.com/*)",
            )],
        ),
        (
            &["spec", "pod", "annotations"],
            vec![rule(
                "self.all(k, !k.startsWith('cache.example.com/'))".to_owned(),
                "spec.pod.annotations cannot set the operator's annotations (cache.example.com/*)",
            )],
        ),
    ]
}

/// A rule whose message is a CEL expression (naming what it refused).
fn message_rule(rule: String, message_expression: String) -> ValidationRule {
    ValidationRule {
        rule,
        message_expression: Some(message_expression),
        ..ValidationRule::default()
    }
}

/// CEL rules of fields, and the changes they may not make (rules that read `oldSelf` run only
/// on an update that keeps the field). A quantity in a form CEL does not size (an exponent)
/// passes here, and the operator reports it in the status when it is too small. So does the
/// memory limit: it may be an integer or a string, and the API server's cost estimate for any
/// rule that reads such a value as text exceeds the schema's budget by far (Kubernetes 1.28
/// has no `quantity()` for new rules), so `spec_problem` checks it before any pod changes.
fn field_rules() -> Vec<(&'static [&'static str], Vec<ValidationRule>)> {
    let sized = |quantity: &str| format!("{quantity}.matches('{}')", quantity::CEL_SIZED);
    let bytes = |quantity: &str, least: &str| {
        format!(
            "!{} || {} >= {:.1}",
            sized(quantity),
            cel_bytes(quantity),
            quantity_value(least).unwrap_or_default()
        )
    };
    let class =
        |object: &str| format!("(has({object}.storageClassName) ? {object}.storageClassName : '')");
    vec![
        (
            &["spec"],
            vec![rule(
                "!has(oldSelf.storage) || has(self.storage)".to_owned(),
                "spec.storage cannot be removed: the data is on the claims; delete the \
                 RedisCluster (and, if retained, its claims) to go back to emptyDir",
            )],
        ),
        (
            &["spec", "storage"],
            vec![
                rule(
                    bytes("self.size", MIN_STORAGE_SIZE),
                    "spec.storage.size must be at least 1Mi",
                ),
                rule(
                    format!(
                        "!{} || !{} || {} >= {}",
                        sized("self.size"),
                        sized("oldSelf.size"),
                        cel_bytes("self.size"),
                        cel_bytes("oldSelf.size")
                    ),
                    "spec.storage.size cannot shrink: a PersistentVolumeClaim can only grow",
                ),
                rule(
                    format!("{} == {}", class("self"), class("oldSelf")),
                    "spec.storage.storageClassName cannot change: the claims keep the class \
                     they were made with",
                ),
            ],
        ),
    ]
}

/// The CRD as YAML, exactly as checked in at [`CRD_PATH`].
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&crd())
}

#[cfg(test)]
mod tests;
