//! The `RedisCluster` custom resource (`cache.example.com/v1alpha1`).
//!
//! The Rust types here are the single source of truth for the API: the CRD checked in under
//! `crds/` is generated from them (`redis-operator generate-crd`), and a test fails when the two
//! drift apart.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
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

    /// Redis pods that run the current spec (the StatefulSet's update revision).
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

    /// Standard Kubernetes conditions: Ready, Progressing and Degraded.
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
    /// True while a primary serves writes, its reason saying how it became primary (Elected,
    /// FailedOver, SwitchedOver) and its message naming the last change; False says why no
    /// primary serves (PrimaryNotAnswering, NoQuorum, NoCandidate, PrimaryLeaving,
    /// SwitchingOver, NoPrimaryYet).
    pub const PRIMARY_AVAILABLE: &str = "PrimaryAvailable";
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
        }
    }
    crd
}

/// The CRD as YAML, exactly as checked in at [`CRD_PATH`].
pub fn crd_yaml() -> Result<String, serde_norway::Error> {
    serde_norway::to_string(&crd())
}

#[cfg(test)]
mod tests;
