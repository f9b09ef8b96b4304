//! Reaching a pod's Redis the way that works everywhere, kind included: through the API server
//! (`kubectl exec`), never by routing to a pod IP from the host.

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::{Api, Client};
use redis_operator::names::INSTANCE_LABEL;

use crate::{TestResult, has_real_node};

/// Runs `kubectl ARGS` off the async runtime and returns its stdout, or its stderr as the error.
pub async fn kubectl(args: impl IntoIterator<Item = impl Into<String>>) -> TestResult<String> {
    let args: Vec<String> = args.into_iter().map(Into::into).collect();
    let output =
        tokio::task::spawn_blocking(move || Command::new("kubectl").args(&args).output()).await??;
    if output.status.success() {
        Ok(String::from_utf8(output.stdout)?)
    } else {
        Err(format!(
            "kubectl failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into())
    }
}

/// Runs a command in the Redis container of a pod, through the API server (`kubectl exec`), so
/// that it works where the host cannot reach pod IPs (kind). Returns its trimmed stdout.
pub async fn exec(namespace: &str, pod: &str, command: &[&str]) -> TestResult<String> {
    let args = ["exec", "-n", namespace, pod, "-c", "redis", "--"];
    Ok(kubectl(args.iter().chain(command).copied())
        .await?
        .trim()
        .to_owned())
}

/// Where a Redis pod has its cluster's password (the auth volume), and where the test's own
/// client pods mount the same Secret.
pub const PASSWORD_FILE: &str = "/etc/redis/auth/password";

/// Where a Redis pod of a cluster with TLS has its CA.
pub const CA_FILE: &str = "/etc/redis/tls/ca.crt";

/// A shell prefix that logs `redis-cli` in with the password at [`PASSWORD_FILE`], if there
/// is one, the way an application would: through `REDISCLI_AUTH`, not on a command line; and
/// with TLS where the pod has a CA (for `redis-cli "$@"`).
pub fn cli_login() -> String {
    format!(
        "[ -s {PASSWORD_FILE} ] && export REDISCLI_AUTH=\"$(cat {PASSWORD_FILE})\"; \
         [ -s {CA_FILE} ] && set -- --tls --cacert {CA_FILE} \"$@\"; "
    )
}

/// A `redis-cli` command against the Redis in `pod`, logged in with the cluster's password
/// when it has one.
pub async fn redis_cli(namespace: &str, pod: &str, command: &[&str]) -> TestResult<String> {
    let script = format!("{}exec redis-cli \"$@\"", cli_login());
    let mut full = vec!["sh", "-c", script.as_str(), "redis-cli"];
    full.extend_from_slice(command);
    exec(namespace, pod, &full).await
}

/// The password of `cluster`'s `default` user, from the Secret the operator made
/// (`<cluster>-auth`); None for a cluster without one.
pub async fn password(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> TestResult<Option<String>> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let Some(secret) = secrets.get_opt(&format!("{cluster}-auth")).await? else {
        return Ok(None);
    };
    let password = secret
        .data
        .and_then(|mut data| data.remove("password"))
        .ok_or("the password Secret has no key password")?;
    Ok(Some(String::from_utf8(password.0)?))
}

/// A `redis://` URL for the Redis at `address`, with the password if there is one, for the
/// user `default` named: `AUTH default <password>` also works against a Redis without a
/// password (while a cluster turns auth on), where `AUTH <password>` is an error.
pub fn redis_url(address: &str, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://default:{password}@{address}:6379/"),
        None => format!("redis://{address}:6379/"),
    }
}

/// The volume and mount that give a test's client pod `cluster`'s password at
/// [`PASSWORD_FILE`] (optional: a cluster without auth has no Secret).
pub fn password_volume(cluster: &str) -> (serde_json::Value, serde_json::Value) {
    (
        serde_json::json!({"name": "auth", "secret": {
            "secretName": format!("{cluster}-auth"), "optional": true
        }}),
        serde_json::json!({"name": "auth", "mountPath": "/etc/redis/auth", "readOnly": true}),
    )
}

/// The pods of one RedisCluster, by its instance label, sorted by name.
pub async fn cluster_pods(client: &Client, namespace: &str, cluster: &str) -> TestResult<Vec<Pod>> {
    let selector = format!("{INSTANCE_LABEL}={cluster}");
    let mut pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    pods.sort_by_key(|pod| pod.metadata.name.clone());
    Ok(pods)
}

/// Proves that Redis serves on each of the cluster's `expected` pods: each answers PING through
/// the API server. Without a real node there is no Redis to ask; that is said, not hidden.
pub async fn assert_redis_serves(
    client: &Client,
    namespace: &str,
    cluster: &str,
    expected: usize,
) -> TestResult {
    if !has_real_node(client).await? {
        eprintln!("note: Redis itself not checked in {namespace}: no node runs pods here");
        return Ok(());
    }
    let pods = cluster_pods(client, namespace, cluster).await?;
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), expected, "pods of {cluster}");
    for pod in live {
        let name = pod.metadata.name.as_deref().ok_or("pod without a name")?;
        let answer = redis_cli(namespace, name, &["ping"]).await?;
        assert_eq!(answer, "PONG", "redis-cli ping in {name}");
    }
    Ok(())
}

/// `key:1 … key:count`, and the value written under each: `value-<i>`.
pub fn test_keys(count: usize) -> Vec<(String, String)> {
    (1..=count)
        .map(|i| (format!("key:{i}"), format!("value-{i}")))
        .collect()
}

/// A pod's `INFO replication`, field by field.
pub async fn replication_info(namespace: &str, pod: &str) -> TestResult<BTreeMap<String, String>> {
    let info = redis_cli(namespace, pod, &["info", "replication"]).await?;
    Ok(info
        .lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}
