//! Helpers for the live suite, by concern: [`namespace`] (the cluster and a namespace per
//! test), [`operator`] (the operator under test), [`waits`] (watch-based waits with limits),
//! [`metrics`] (an operator's /metrics), [`redis`] (a pod's Redis through the API server),
//! [`setup`] (one scenario's cluster and what is asserted of it) and [`faults`] (faults under a
//! measuring writer, shared with the bench).
//!
//! The tests are `#[ignore]`d so that `cargo test --workspace` stays hermetic; `make e2e-local`
//! runs them against the current kubeconfig.

use std::time::Duration;

pub mod faults;
pub mod fencing;
pub mod mass;
pub mod metrics;
pub mod namespace;
pub mod operator;
pub mod redis;
pub mod setup;
pub mod waits;

pub use metrics::{
    http_get, metric, quantile, reconciles_total, redis_command_counts, request_counts,
    request_counts_by_resource,
};
pub use namespace::{TestNamespace, client, has_real_node, real_node_or_skip};
pub use operator::{Operator, failure_grace, in_cluster, progress_deadline};
pub use redis::{
    PASSWORD_FILE, assert_redis_serves, cli_login, cluster_pods, exec, kubectl, password,
    password_volume, redis_cli, redis_url, replication_info, test_keys,
};
pub use redis_operator::names::ROLE_LABEL;
pub use setup::{Setup, claims_of_pods, redis_cluster};
pub use waits::{StatusLog, WatchLog, reports, wait_for, wait_for_within};

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(90);

/// The name of the cluster each scenario creates (the sample's).
pub const NAME: &str = "test-redis";
