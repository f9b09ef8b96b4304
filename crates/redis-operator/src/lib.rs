//! redis-operator: runs `RedisCluster` objects as a StatefulSet of Redis pods behind a headless
//! Service, and reports what it sees in the RedisCluster's status.
//!
//! The shape follows the data flow of one reconcile: `build` (desired children, pure), `drift`
//! (does what is there already match, pure), `status` (phase and conditions, pure), and
//! `reconcile` (the thin I/O around them). `controller` wires watches and caches together.

pub mod backoff;
pub mod build;
pub mod cli;
pub mod context;
pub mod controller;
pub mod drift;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod permissions;
pub mod pod_redis;
pub mod reconcile;
pub mod roles;
pub mod status;
pub mod storage;
pub mod telemetry;
pub mod topology;
pub mod trim;

/// The field manager of every write, and the `app.kubernetes.io/managed-by` value of every child.
pub const MANAGER: &str = "redis-operator";
