//! What a user adds to the pods, the Services and Redis's configuration (`spec.pod`,
//! `spec.service`, `spec.config`), and what of them the operator keeps for itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scheduling and metadata of the Redis pods, copied to each. A change replaces the pods one
/// at a time, the primary handing over. The operator keeps the containers, probes, volumes,
/// security context and shutdown for itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Only nodes with these labels run the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod affinity. Set, it replaces the operator's default: a soft anti-affinity
    /// that puts the pods of a cluster on different nodes where it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Set, these replace the operator's default: spread over nodes (`kubernetes.io/hostname`,
    /// maxSkew 1, ScheduleAnyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// The pods' PriorityClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// The pods' ServiceAccount (Redis gets no token: the operator mounts none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Labels added to the pods. The operator's own (`app.kubernetes.io/name`, `instance`,
    /// `managed-by`, and those under `cache.example.com/`) cannot be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "labels")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations added to the pods. Those under `cache.example.com/` are the operator's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "annotations")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// How clients reach the `<name>-primary` and `<name>-replicas` Services.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    /// ClusterIP (the default), NodePort or LoadBalancer: the last two reach Redis from
    /// outside the cluster (with auth, and TLS if it crosses a network you do not trust).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,

    /// Annotations of both Services, for example a cloud load balancer's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "annotations")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The type of the `-primary` and `-replicas` Services.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

fn string_map(max_properties: u32, value_length: u32) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": value_length}
    })
}

fn labels(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(64, 63)
}

fn annotations(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(64, 4096)
}

/// `spec.config`: `redis.conf` directives (name to value, the value as `redis.conf` spells
/// it) passed to every Redis.
pub(crate) fn config_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    string_map(64, 1024)
}

/// Directives the operator sets itself: its replication and write fence, persistence and
/// where it lives, the port, auth and TLS, and what would take Redis out of the container's
/// hands. Matched without regard to case, as Redis matches them.
pub const OWNED_DIRECTIVES: &[&str] = &[
    // Replication and the write fence (with Redis's older names).
    "replicaof",
    "slaveof",
    "masterauth",
    "masteruser",
    "replica-read-only",
    "slave-read-only",
    "replica-announce-ip",
    "slave-announce-ip",
    "replica-announce-port",
    "slave-announce-port",
    "repl-diskless-sync-delay",
    "repl-ping-replica-period",
    "repl-ping-slave-period",
    // Persistence and its layout.
    "dir",
    "dbfilename",
    "appendonly",
    "appendfilename",
    "appenddirname",
    "appendfsync",
    "save",
    // Where Redis listens.
    "port",
    "bind",
    // Auth.
    "requirepass",
    "aclfile",
    "user",
    // What changes Redis's commands or process.
    "include",
    "rename-command",
    "daemonize",
    "supervised",
    "pidfile",
];

/// Prefixes of directives the operator sets: the write fence (`min-replicas-*`,
/// `min-slaves-*`), TLS (`tls-*`) and cluster mode (`cluster-*`, which a replicated Redis
/// does not run).
pub const OWNED_PREFIXES: &[&str] = &["min-replicas-", "min-slaves-", "tls-", "cluster-"];

/// Directives the operator sets when the container has a memory limit (from it and
/// `spec.maxmemoryPolicy`).
pub const MEMORY_DIRECTIVES: &[&str] = &["maxmemory", "maxmemory-policy"];

/// Directives Redis takes only when it starts (`CONFIG SET` refuses them): a change to one
/// replaces the pods; any other is applied to the running Redis.
pub const RESTART_DIRECTIVES: &[&str] = &[
    "databases",
    "io-threads",
    "io-threads-do-reads",
    "tcp-backlog",
    "unixsocket",
    "unixsocketperm",
    "logfile",
    "syslog-enabled",
    "syslog-ident",
    "syslog-facility",
    "always-show-logo",
    "set-proc-title",
    "enable-protected-configs",
    "enable-debug-command",
    "enable-module-command",
    "loadmodule",
    "disable-thp",
];

/// Why `spec.config` may not set `directive`, if it may not. `memory_limit`: the container
/// has one.
pub fn owned_directive(directive: &str, memory_limit: bool) -> Option<String> {
    let name = directive.to_ascii_lowercase();
    let owner = if OWNED_DIRECTIVES.contains(&name.as_str())
        || OWNED_PREFIXES.iter().any(|p| name.starts_with(p))
    {
        "the operator sets it (replication, fencing, persistence, port, auth, TLS)"
    } else if memory_limit && MEMORY_DIRECTIVES.contains(&name.as_str()) {
        "the operator sets it from spec.resources.limits.memory and spec.maxmemoryPolicy"
    } else {
        return None;
    };
    Some(format!("spec.config cannot set {directive}: {owner}"))
}

/// Whether Redis takes `directive` only at start.
pub fn needs_restart(directive: &str) -> bool {
    RESTART_DIRECTIVES.contains(&directive.to_ascii_lowercase().as_str())
}

/// A CEL list literal of `items`.
fn cel_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The CEL predicate, over a key `k`, that `spec.config` may set it (without regard to the
/// memory limit).
pub(crate) fn cel_allowed_directive() -> String {
    format!(
        "!(k.lowerAscii() in {}) && !{}.exists(p, k.lowerAscii().startsWith(p))",
        cel_list(OWNED_DIRECTIVES),
        cel_list(OWNED_PREFIXES)
    )
}

/// The CEL predicate, over a key `k`, that it is one of [`MEMORY_DIRECTIVES`].
pub(crate) fn cel_memory_directive() -> String {
    format!("k.lowerAscii() in {}", cel_list(MEMORY_DIRECTIVES))
}

/// The CEL predicate, over a key `k`, that a label may be set by `spec.pod.labels`.
pub(crate) fn cel_allowed_label() -> String {
    "!(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', \
     'app.kubernetes.io/managed-by']) && !k.startsWith('cache.example.com/')"
        .to_owned()
}
