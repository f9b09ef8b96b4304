//! The names the operator puts on what it creates and reads back: labels, the annotation, the
//! container and the data volume. Builders write them, readers of observed objects look for
//! them; both take them from here.

use std::collections::BTreeMap;

use crate::MANAGER;

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label the operator sets on each pod once it has given it a role (`primary` or
/// `replica`, see `topology::Role`); the `-primary` and `-replicas` Services select on it.
pub const ROLE_LABEL: &str = "cache.example.com/role";
/// The value of `app.kubernetes.io/name` on everything the operator creates.
pub const APP_NAME: &str = "redis";
/// The pod template's annotation naming what a pod was made for (`pod_config`).
pub const POD_CONFIG_ANNOTATION: &str = "cache.example.com/pod-config";
/// The pod template's annotation of the `spec.config` directives its Redis starts with that
/// could be set at run time: `<digest>;<name>,<name>...` (`pod_config::LiveConfig`).
pub const START_CONFIG_ANNOTATION: &str = "cache.example.com/start-config";
/// A pod's annotation of what the operator set at run time: `<run_id>;<digest>;<names>`.
pub const LIVE_CONFIG_ANNOTATION: &str = "cache.example.com/live-config";
/// On the StatefulSet: the pod template fields `spec.pod` set, which are the operator's and
/// not someone else's (`pod_config::foreign_template`), comma-separated.
pub const POD_FIELDS_ANNOTATION: &str = "cache.example.com/pod-fields";
/// On the `-primary` and `-replicas` Services: a digest of the spec's `service`.
pub const SERVICE_CONFIG_ANNOTATION: &str = "cache.example.com/service-config";
/// The StatefulSet's annotation by which the operator makes the StatefulSet controller retry
/// creating pods at once (`children::nudge_due`): when it was last touched, RFC 3339.
pub const NUDGED_AT_ANNOTATION: &str = "cache.example.com/nudged-at";
pub const REDIS_CONTAINER: &str = "redis";
/// The data volume: an emptyDir, or with `spec.storage` the claim template whose claims are
/// named `data-<pod>`.
pub const DATA_VOLUME: &str = "data";

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

/// A pod's role, as its [`ROLE_LABEL`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            _ => None,
        }
    }
}
