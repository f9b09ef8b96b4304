//! redis-operator: runs each `RedisCluster` as one replicated Redis service: a StatefulSet of
//! Redis pods, one of them the primary and the others its replicas, behind a headless Service
//! and the `<name>-primary` and `<name>-replicas` Services; and reports what it sees in the
//! RedisCluster's status.
//!
//! Where everything lives:
//! - `controller`: the wiring (client, watches and their caches, the kube-runtime Controller,
//!   leader election in `leader`, whose `Tenure` says whether this instance may still write);
//!   `context`: what every reconcile shares, with `memory`, what is remembered of each cluster,
//!   and `pacing`, how often the loop can probe every cluster.
//! - `reconcile`: one reconcile, a driver of a screenful: observe, plan, apply, assess,
//!   report. `children` writes one child; `storage` grows claims.
//! - `desired`: the children a cluster should have (pure builders); `pod_config`: what a pod is
//!   made for; `names`: the labels and names on everything; `auth`: whether a cluster has auth,
//!   its Redis users and the operator's passwords for them.
//! - `observed` and `pod`: one reader each for what observed objects say (ownership, ordinal,
//!   readiness, stuck containers, outdated pods).
//! - `topology`: the role decision (pure): who is primary, failovers (with the replicas as
//!   witnesses, a silent primary stopped before it is replaced), handovers, the write fence's
//!   settings, the roll order; `roles`: runs its plan and says what happened.
//! - `redis`: the Redis side of the role protocol: constants, commands, `INFO` parsing, the
//!   client and the pods' own scripts.
//! - `status`: phase and conditions (pure); `drift`: whether a child needs writing (pure);
//!   `trim`: what the caches keep; `http`, `metrics`, `permissions`, `cli`, `telemetry`.
//!
//! Two paths through the code:
//! - `spec.replicas` to the StatefulSet write, four functions: `reconcile::plan` (which asks
//!   `topology::pods_to_keep` how many pods to keep while a primary above the spec still hands
//!   over) → `desired::statefulset` (sets them) → `reconcile::apply_statefulset` →
//!   `children::ensure_child` (writes what drifted); `reconcile::apply` holds a scale-down back
//!   while the roles find the primary in trouble (`reconcile::scale_down_held`).
//! - Which pod is primary, from Redis's answer to the label and `status.primary`, six:
//!   `redis::info::Replication::parse` (the `INFO` each pod answered) → `topology::decide` →
//!   `roles::execute` → `roles::relabel_all` (the label); `topology::Plan::report` →
//!   `status::assess` (`status.primary`).

pub mod auth;
mod backoff;
mod children;
pub mod cli;
mod context;
mod controller;
pub mod desired;
mod drift;
mod error;
mod figures;
#[cfg(test)]
mod fixtures;
mod http;
mod leader;
mod memory;
mod metrics;
pub mod names;
mod observed;
mod pacing;
#[cfg(test)]
mod permissions;
mod pod;
mod pod_config;
mod reconcile;
mod redis;
mod roles;
mod rolls;
mod status;
mod storage;
mod sync;
mod telemetry;
mod topology;
mod trim;

/// The field manager of every write, and the `app.kubernetes.io/managed-by` value of every child.
pub const MANAGER: &str = "redis-operator";
