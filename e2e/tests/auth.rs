//! Auth on a real node: a new cluster asks every client for its password and shows it nowhere;
//! a rotated password works beside the old one for the stated time, under a writer that
//! switches at a random moment; a missing Secret and an operator whose login is refused are
//! named in the status, and the pods that run keep serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::faults::{clock, figures, keys_on_primary};
use e2e::fencing::PooledWriter;
use e2e::{
    NAME, Operator, Setup, TestResult, cluster_pods, exec, kubectl, redis_cli,
    redis_command_counts, redis_url, reports, wait_for, wait_for_within,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use rediscluster_crd::RedisCluster;
use rediscluster_crd::conditions::{PASSWORDS_AGREE, PRIMARY_AVAILABLE};
use serde_json::json;

/// A Running cluster of 3 with `fields` in its spec (`Setup::running_on_real_pods`).
async fn running(test: &str, fields: serde_json::Value) -> TestResult<Option<(Setup, Operator)>> {
    Setup::running_on_real_pods(test, 3, fields).await
}

/// The reason of the cluster's condition `type_`, if it has one.
fn reason(cluster: Option<&RedisCluster>, type_: &str) -> Option<String> {
    Some(cluster?.status.as_ref()?.condition(type_)?.reason.clone())
}

async fn pod_uids(setup: &Setup) -> TestResult<Vec<String>> {
    Ok(cluster_pods(&setup.client, &setup.namespace.name, NAME)
        .await?
        .iter()
        .filter_map(|p| p.uid())
        .collect())
}

async fn pod_ips(setup: &Setup) -> TestResult<Vec<(String, String)>> {
    Ok(cluster_pods(&setup.client, &setup.namespace.name, NAME)
        .await?
        .iter()
        .filter_map(|p: &Pod| Some((p.name_any(), p.status.as_ref()?.pod_ip.clone()?)))
        .collect())
}

async fn connect(ip: &str, password: &str) -> Result<MultiplexedConnection, String> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    redis::Client::open(redis_url(ip, Some(password)))
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_new_cluster_asks_every_client_for_its_password_and_shows_it_nowhere() -> TestResult {
    let Some((setup, operator)) = running("auth-basic", json!({})).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    let password = setup
        .password()
        .await?
        .ok_or("a new cluster has no password Secret")?;
    assert_eq!(password.len(), 64, "a random password");
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    let service = format!("{NAME}-primary");
    let anonymous = exec(
        &ns,
        &primary,
        &["redis-cli", "-h", &service, "set", "k", "v"],
    )
    .await?;
    assert!(anonymous.contains("NOAUTH"), "{anonymous}");
    let authenticated = redis_cli(&ns, &primary, &["-h", &service, "set", "k", "v"]).await?;
    assert_eq!(authenticated, "OK");
    let cluster = setup.clusters.get(NAME).await?;
    assert_eq!(
        reason(Some(&cluster), PASSWORDS_AGREE).as_deref(),
        Some("OnePassword")
    );

    // Wherever an operator's user or an admin looks, the password is not there.
    let mut seen = Vec::new();
    for what in ["pods", "events", "redisclusters", "statefulsets"] {
        seen.push((
            what.to_owned(),
            kubectl(["get", what, "-n", &ns, "-o", "yaml"]).await?,
        ));
    }
    for (pod, _) in pod_ips(&setup).await? {
        seen.push((
            format!("logs {pod}"),
            kubectl(["logs", "-n", &ns, &pod]).await?,
        ));
        let cmdlines = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done";
        seen.push((
            format!("cmdlines {pod}"),
            exec(&ns, &pod, &["sh", "-c", cmdlines]).await?,
        ));
    }
    seen.push(("operator log".to_owned(), operator.logged()?));
    for (what, text) in &seen {
        assert!(!text.contains(&password), "the password is in {what}");
        assert!(!text.is_empty(), "nothing read from {what}");
    }
    Ok(())
}

/// One write at a time on one pooled connection to `ip`, as an application does; the
/// password can be swapped at any moment, as an application reloading its configuration
/// does: it then connects again with it.
struct SwitchingWriter {
    password: tokio::sync::watch::Sender<String>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl SwitchingWriter {
    async fn start(ip: String, password: String) -> TestResult<Self> {
        let first = connect(&ip, &password).await?;
        let (sender, wanted) = tokio::sync::watch::channel(password.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut connection, mut used) = (first, password);
            let (mut acknowledged, mut failures) = (0_u64, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                let wanted = wanted.borrow().clone();
                if wanted != used {
                    match connect(&ip, &wanted).await {
                        Ok(new) => connection = new,
                        Err(e) => failures.push(format!("reconnect: {e}")),
                    }
                    used = wanted;
                }
                let key = format!("r{acknowledged}-{}", failures.len());
                let set: Result<String, _> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .query_async(&mut connection)
                    .await;
                match set {
                    Ok(_) => acknowledged += 1,
                    Err(e) => failures.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acknowledged, failures)
        });
        Ok(Self {
            password: sender,
            stop,
            task,
        })
    }

    fn switch(&self, password: &str) {
        self.password.send_replace(password.to_owned());
    }

    async fn stop(self) -> TestResult<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// How long a rotated-out password still works in the rotation test.
const PREVIOUS_SECONDS: u64 = 120;

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_rotated_password_fails_no_write_and_the_old_one_is_refused_after() -> TestResult {
    let fields = json!({"auth": {"previousPasswordSeconds": PREVIOUS_SECONDS}});
    let Some((setup, _operator)) = running("auth-rotate", fields).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    let old = setup.password().await?.ok_or("no Secret")?;
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    let ips = pod_ips(&setup).await?;
    let primary_ip = ips
        .iter()
        .find(|(pod, _)| *pod == primary)
        .ok_or("no IP")?
        .1
        .clone();
    let writer = SwitchingWriter::start(primary_ip, old.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let new = format!("rotated-{nanos}");
    let secrets = Api::<Secret>::namespaced(setup.client.clone(), &ns);
    let patch = json!({"stringData": {"password": new}});
    secrets
        .patch(
            &format!("{NAME}-auth"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    let changed = std::time::Instant::now();
    let both =
        |c: Option<&RedisCluster>| reason(c, PASSWORDS_AGREE).as_deref() == Some("BothPasswords");
    // The kubelet refreshes a mounted Secret within about a minute and a half.
    let refresh = Duration::from_secs(180);
    let what = "every pod accepting both passwords";
    wait_for_within(refresh, &setup.clusters, NAME, what, both).await?;
    let accepted = changed.elapsed();
    // Pods take the Secret up to a kubelet sync apart: each keeps the old password for
    // PREVIOUS_SECONDS after it took the new one, so every pod accepts both for at least that
    // much less the skew (90 s at most here). The writer switches at a random moment in it.
    let switch_after = Duration::from_millis(u64::from(nanos % 25_000));
    tokio::time::sleep(switch_after).await;
    writer.switch(&new);
    let one =
        |c: Option<&RedisCluster>| reason(c, PASSWORDS_AGREE).as_deref() == Some("OnePassword");
    let what = "every pod accepting only the new password";
    let end = refresh + Duration::from_secs(PREVIOUS_SECONDS);
    wait_for_within(end, &setup.clusters, NAME, what, one).await?;
    let retired = changed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (acknowledged, failures) = writer.stop().await?;
    eprintln!(
        "rotation: new password accepted everywhere {accepted:?} after the change, the writer \
         switched {switch_after:?} later, the old one refused everywhere after {retired:?}; \
         {acknowledged} writes acknowledged, {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "failed writes: {failures:?}");
    assert!(acknowledged > 1000, "{acknowledged} writes");
    for (pod, ip) in pod_ips(&setup).await? {
        let refused = connect(&ip, &old).await.err().unwrap_or_default();
        assert!(
            refused.contains("WRONGPASS") || refused.contains("AuthenticationFailed"),
            "{pod} with the old password: {refused}"
        );
        connect(&ip, &new)
            .await
            .map_err(|e| format!("{pod} with the new password: {e}"))?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_missing_secret_fails_the_cluster_with_its_reason_and_the_pods_keep_serving() -> TestResult
{
    let Some((setup, _operator)) = running("auth-missing", json!({})).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    setup
        .patch_spec(json!({"auth": {"secretName": "absent"}}))
        .await?;
    let degraded = setup.wait_failed().await?;
    assert!(
        degraded
            .message
            .contains("no password: Secret absent is missing, or has no key password"),
        "{degraded:?}"
    );
    // The roll waits on the replaced pod that cannot start; the primary serves all along.
    let answer = redis_cli(&ns, &primary, &["set", "still", "served"]).await?;
    assert_eq!(answer, "OK");

    setup.patch_spec(json!({"auth": null})).await?;
    setup
        .wait_phase(rediscluster_crd::Phase::Running, 3)
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_operator_whose_login_is_refused_says_so_and_fails_nothing_over() -> TestResult {
    let Some((setup, operator)) = running("auth-refused", json!({})).await? else {
        return Ok(());
    };
    if operator.pid().is_none() {
        eprintln!("SKIPPED: the deployed operator's key is not the test's to change");
        return Ok(());
    }
    let ns = setup.namespace.name.clone();
    let uids_before = pod_uids(&setup).await?;
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    operator.kill();
    // Another key: every password it derives is wrong.
    let key = format!("other-key-{ns}");
    let mut wrong = Operator::start_with(
        &ns,
        "wrong-key",
        &["--credentials-secret", &key, "--credentials-namespace", &ns],
    )?;
    let refused = |c: Option<&RedisCluster>| {
        c.and_then(|c| c.status.as_ref()?.condition(PRIMARY_AVAILABLE))
            .is_some_and(|a| a.status == "False" && a.message.contains("refuses the operator"))
    };
    wait_for(
        &setup.clusters,
        NAME,
        "the refused login in the status",
        refused,
    )
    .await?;
    let port = wrong.http_port()?;
    let sent_before: f64 = redis_command_counts(port)?.values().sum();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let sent: f64 = redis_command_counts(port)?.values().sum::<f64>() - sent_before;
    eprintln!("refused operator: {sent} Redis requests in 30 s to 3 pods");
    assert!(sent <= 3.0 * 30.0, "{sent} requests in 30 s: a retry storm");
    let uids_after = pod_uids(&setup).await?;
    assert_eq!(uids_after, uids_before, "no pod stopped or replaced");
    assert_eq!(
        setup
            .clusters
            .get(NAME)
            .await?
            .status
            .and_then(|s| s.primary),
        Some(primary),
        "no failover"
    );
    wrong.kill();
    let _right = Operator::start(&ns)?;
    let available = |c: Option<&RedisCluster>| {
        c.and_then(|c| c.status.as_ref()?.condition(PRIMARY_AVAILABLE))
            .is_some_and(|a| a.status == "True")
    };
    wait_for(
        &setup.clusters,
        NAME,
        "the primary available again",
        available,
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn turning_auth_on_replaces_every_pod_and_loses_no_acknowledged_write() -> TestResult {
    let opted_out = json!({"auth": {"insecureAllowUnauthenticated": true}});
    let Some((setup, _operator)) = running("auth-on", opted_out).await? else {
        return Ok(());
    };
    let ns = setup.namespace.name.clone();
    assert!(setup.password().await?.is_none());
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    assert_eq!(
        exec(&ns, &primary, &["redis-cli", "set", "open", "1"]).await?,
        "OK"
    );
    let address = setup.primary_address().await?;

    setup
        .patch_spec(json!({"auth": {"insecureAllowUnauthenticated": null}}))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let secret = loop {
        if let Some(secret) = setup.password().await? {
            break secret;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no password Secret 30 s after auth was asked for".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // An application given the password (as `default`) before the roll reaches its primary.
    let Some(writer) = PooledWriter::start(&address, Some(&secret)).await? else {
        eprintln!("SKIPPED: the host cannot reach the primary Service (K8S_LOCAL_KUBE_PROXY=1)");
        return Ok(());
    };
    let started = clock()?;
    let all_with_auth = |c: Option<&RedisCluster>| {
        reports(rediscluster_crd::Phase::Running, 3)(c)
            && reason(c, PASSWORDS_AGREE).as_deref() == Some("OnePassword")
    };
    let what = "Running, every pod with auth";
    wait_for_within(
        Duration::from_secs(300),
        &setup.clusters,
        NAME,
        what,
        all_with_auth,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes = writer.stop().await?;
    let present = keys_on_primary(&setup, "p*").await?;
    let figures = figures(
        "auth turned on",
        &writes,
        started,
        &present,
        (1, Duration::ZERO),
    );
    figures.print();
    assert!(
        figures.acknowledged > 100,
        "{} writes",
        figures.acknowledged
    );
    assert!(
        figures.lost.is_empty(),
        "acknowledged and lost: {:?}",
        figures.lost
    );
    for pod in cluster_pods(&setup.client, &ns, NAME).await? {
        let name = pod.name_any();
        let anonymous = exec(&ns, &name, &["redis-cli", "set", "open", "2"]).await?;
        assert!(anonymous.contains("NOAUTH"), "{name}: {anonymous}");
    }
    Ok(())
}
