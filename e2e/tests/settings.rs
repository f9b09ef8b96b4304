//! What users of other Redis operators reach for, on a real node: Redis metrics from the
//! operator, scheduling (`spec.pod`), exposure (`spec.service`), configuration (`spec.config`)
//! and the progress deadline apart from the failure grace period.

use std::time::{Duration, Instant};

use e2e::faults::{redis_pid, signal};
use e2e::metrics::{by_labels, http_get};
use e2e::{
    NAME, Operator, Setup, TestResult, cluster_pods, failure_grace, kubectl, redis_cli, redis_url,
    wait_for_within,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use rediscluster_crd::Phase;
use serde_json::json;

/// How long the scenarios below wait for a figure or a state.
const WAIT: Duration = Duration::from_secs(120);

/// Scrapes the operator until `done` holds of the text (or WAIT runs out).
async fn scrape_until(port: u16, what: &str, done: impl Fn(&str) -> bool) -> TestResult<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = http_get(port, "/metrics")?;
        if done(&text) {
            return Ok(text);
        }
        if Instant::now() > deadline {
            return Err(format!("metrics never showed {what}:\n{text}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn failover_at(text: &str) -> Option<f64> {
    by_labels(
        text,
        "redis_cluster_last_failover_timestamp_seconds",
        &["cluster"],
    )
    .get(NAME)
    .copied()
}

fn pod_value(text: &str, name: &str, pod: &str) -> Option<f64> {
    by_labels(text, name, &["pod"]).get(pod).copied()
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn the_metrics_show_a_failover_then_the_lag_of_a_stopped_replica() -> TestResult {
    let Some((setup, mut operator)) =
        Setup::running_on_real_pods("metrics-redis", 3, json!({})).await?
    else {
        return Ok(());
    };
    let port = operator.http_port()?;
    let ns = setup.namespace.name.clone();
    let primary = setup.assert_one_primary_and_linked_replicas().await?;
    let text = scrape_until(port, "every pod up", |t| {
        by_labels(t, "redis_up", &["pod"])
            .values()
            .filter(|v| **v == 1.0)
            .count()
            == 3
    })
    .await?;
    assert_eq!(pod_value(&text, "redis_primary", &primary), Some(1.0));
    assert!(failover_at(&text).is_none());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    setup
        .pods
        .delete(&primary, &DeleteParams::default())
        .await?;
    let text = scrape_until(port, "the failover", |t| failover_at(t).is_some()).await?;
    let at = failover_at(&text).unwrap_or_default();
    assert!(at >= before, "failover at {at}, deleted at {before}");
    let running = setup.wait_running(3).await?;
    let new_primary = running.status.and_then(|s| s.primary).ok_or("no primary")?;
    assert_ne!(new_primary, primary);
    scrape_until(port, "the new primary", |t| {
        pod_value(t, "redis_primary", &new_primary) == Some(1.0)
    })
    .await?;

    // A replica stopped (SIGSTOP from the host) while writes go on: its primary reports it
    // further behind every second.
    let replica = setup
        .live_pods()
        .await?
        .into_iter()
        .find(|p| p.name_any() != new_primary)
        .ok_or("no replica")?;
    let pid = redis_pid(&replica).ok_or("no Redis pid for the replica")?;
    signal(pid, "-STOP").await?;
    let writes = async {
        for i in 0..15 {
            redis_cli(&ns, &new_primary, &["set", &format!("k{i}"), "v"]).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        TestResult::Ok(())
    };
    let lagging = scrape_until(port, "the stopped replica down and lagging", |t| {
        pod_value(t, "redis_replica_lag_seconds", &replica.name_any()).is_some_and(|l| l >= 5.0)
            && pod_value(t, "redis_up", &replica.name_any()) == Some(0.0)
    });
    let (written, lagging) = tokio::join!(writes, lagging);
    signal(pid, "-CONT").await?;
    written?;
    let text = lagging?;
    assert!(
        pod_value(&text, "redis_replica_lag_bytes", &replica.name_any()).is_some_and(|b| b > 0.0),
        "it missed the writes"
    );
    let phase = by_labels(&text, "redis_cluster_status_phase", &["cluster", "phase"]);
    assert!(phase.keys().any(|k| k.starts_with(NAME)), "{phase:?}");
    scrape_until(port, "the replica caught up", |t| {
        pod_value(t, "redis_replica_lag_bytes", &replica.name_any()) == Some(0.0)
            && pod_value(t, "redis_replica_lag_seconds", &replica.name_any())
                .is_some_and(|l| l < 2.0)
    })
    .await?;
    println!(
        "figures: failover seen in metrics {:.1}s after the delete; replica lag reached 5s",
        at - before
    );
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_node_selector_that_matches_no_node_leaves_pods_pending_and_says_why() -> TestResult {
    let Some(setup) = Setup::on_real_pods("pod-selector").await? else {
        return Ok(());
    };
    let _operator = Operator::start_with(
        &setup.namespace.name,
        "operator",
        &["--progress-deadline", "30s"],
    )?;
    setup
        .create_cluster_with(
            "redis:7.0",
            2,
            json!({"resources": {"requests": {"cpu": "10m"}}}),
        )
        .await?;
    setup.wait_running(2).await?;
    setup
        .patch_spec(json!({"pod": {"nodeSelector": {"redis-operator-test": "nowhere"}}}))
        .await?;
    let degraded = setup.wait_failed().await?;
    assert_eq!(degraded.reason, "PodsUnschedulable", "{degraded:?}");
    assert!(
        degraded.message.contains("node affinity/selector"),
        "{}",
        degraded.message
    );
    let pending: Vec<Pod> = setup.live_pods().await?;
    assert!(
        pending
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")),
        "a new pod waits for a node"
    );
    // One pod still serves: the roll waits for the new pod.
    assert!(
        setup
            .clusters
            .get(NAME)
            .await?
            .status
            .and_then(|s| s.primary)
            .is_some()
    );

    setup.patch_spec(json!({"pod": null})).await?;
    setup.wait_running(2).await?;
    for pod in setup.live_pods().await? {
        let spec = pod.spec.ok_or("no pod spec")?;
        assert!(
            spec.node_selector.is_none(),
            "{}",
            pod.metadata.name.unwrap_or_default()
        );
    }
    println!("figures: nodeSelector to nowhere: {}", degraded.message);
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn tolerations_priority_class_and_labels_reach_the_pods() -> TestResult {
    let Some(setup) = Setup::on_real_pods("pod-scheduling").await? else {
        return Ok(());
    };
    let priority = format!("{}-high", setup.namespace.name);
    let classes: Api<PriorityClass> = Api::all(setup.client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": priority}, "value": 1000,
            }))?,
        )
        .await?;
    let _operator = Operator::start(&setup.namespace.name)?;
    let pod = json!({
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "redis",
                         "effect": "NoSchedule"}],
        "priorityClassName": priority,
        "labels": {"team": "cache"},
        "annotations": {"backup": "daily"},
    });
    let made = setup
        .create_cluster_with(
            "redis:7.0",
            2,
            json!({"resources": {"requests": {"cpu": "10m"}}, "pod": pod}),
        )
        .await;
    let result = async {
        made?;
        setup.wait_running(2).await?;
        for pod in setup.live_pods().await? {
            let spec = pod.spec.clone().ok_or("no pod spec")?;
            assert_eq!(spec.priority_class_name.as_deref(), Some(priority.as_str()));
            assert_eq!(spec.priority, Some(1000));
            let tolerations = spec.tolerations.unwrap_or_default();
            assert!(
                tolerations
                    .iter()
                    .any(|t| t.key.as_deref() == Some("dedicated")),
                "{tolerations:?}"
            );
            assert_eq!(pod.labels().get("team").map(String::as_str), Some("cache"));
            assert_eq!(
                pod.annotations().get("backup").map(String::as_str),
                Some("daily")
            );
        }
        // Dropped from the spec, what the cluster was created with goes from the template and,
        // by a roll, from the pods.
        let before: Vec<String> = setup
            .live_pods()
            .await?
            .iter()
            .filter_map(|p| p.uid())
            .collect();
        setup.patch_spec(json!({"pod": null})).await?;
        let deadline = Instant::now() + WAIT;
        loop {
            let pods = setup.live_pods().await?;
            let replaced = pods.len() == 2
                && pods
                    .iter()
                    .all(|p| p.uid().is_some_and(|uid| !before.contains(&uid)));
            if replaced {
                for pod in &pods {
                    let spec = pod.spec.as_ref().ok_or("no pod spec")?;
                    assert_eq!(spec.priority_class_name, None);
                    assert!(
                        !spec
                            .tolerations
                            .iter()
                            .flatten()
                            .any(|t| t.key.as_deref() == Some("dedicated"))
                    );
                    assert!(!pod.labels().contains_key("team"));
                }
                break;
            }
            if Instant::now() > deadline {
                return Err("the pods were not replaced after spec.pod was removed".into());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        setup.wait_running(2).await?;
        let sts = setup.statefulsets.get(NAME).await?;
        let template = sts.spec.ok_or("no StatefulSet spec")?.template;
        assert_eq!(template.spec.ok_or("no template spec")?.tolerations, None);
        TestResult::Ok(())
    }
    .await;
    classes.delete(&priority, &DeleteParams::default()).await?;
    result
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_node_port_primary_answers_on_the_nodes_port() -> TestResult {
    let Some((setup, _operator)) = Setup::running_on_real_pods(
        "service-nodeport",
        2,
        json!({"service": {"type": "NodePort", "annotations": {"example.com/lb": "internal"}}}),
    )
    .await?
    else {
        return Ok(());
    };
    let service = setup.services.get(&format!("{NAME}-primary")).await?;
    assert_eq!(
        service
            .annotations()
            .get("example.com/lb")
            .map(String::as_str),
        Some("internal")
    );
    let spec = service.spec.ok_or("no Service spec")?;
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    let node_port = spec
        .ports
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .ok_or("no node port")?;
    let nodes: Api<Node> = Api::all(setup.client.clone());
    let node = nodes.list(&Default::default()).await?.items.remove(0);
    let address = node
        .status
        .and_then(|s| s.addresses)
        .and_then(|a| a.into_iter().find(|a| a.type_ == "InternalIP"))
        .ok_or("the node has no InternalIP")?
        .address;
    let password = setup.password().await?;
    let url = redis_url(&address, password.as_deref()).replace(":6379/", &format!(":{node_port}/"));
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("SET")
        .arg("via-node-port")
        .arg("yes")
        .query_async(&mut connection)
        .await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut connection).await?;
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec())),
        "the node port reaches the primary"
    );

    // Back to ClusterIP: the operator takes the type and the annotation it set at the create
    // away.
    setup.patch_spec(json!({"service": null})).await?;
    wait_for_within(
        WAIT,
        &setup.services,
        &format!("{NAME}-primary"),
        "ClusterIP without the annotation",
        |s: Option<&k8s_openapi::api::core::v1::Service>| {
            s.is_some_and(|s| {
                s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ClusterIP")
                    && !s.annotations().contains_key("example.com/lb")
            })
        },
    )
    .await?;
    println!("figures: SET through {address}:{node_port} reached the primary");
    Ok(())
}

/// `CONFIG GET notify-keyspace-events` on every pod of the cluster.
async fn keyspace_events(setup: &Setup) -> TestResult<Vec<(String, String)>> {
    let mut values = Vec::new();
    for pod in cluster_pods(&setup.client, &setup.namespace.name, NAME).await? {
        let reply = redis_cli(
            &setup.namespace.name,
            &pod.name_any(),
            &["config", "get", "notify-keyspace-events"],
        )
        .await?;
        values.push((
            pod.name_any(),
            reply.lines().nth(1).unwrap_or_default().to_owned(),
        ));
    }
    Ok(values)
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_config_directive_applies_without_a_restart_and_reaches_new_pods() -> TestResult {
    let Some((setup, _operator)) = Setup::running_on_real_pods(
        "config-live",
        2,
        json!({"resources": {"requests": {"cpu": "10m"}}}),
    )
    .await?
    else {
        return Ok(());
    };
    let before = setup.pod_uids().await?;
    setup
        .patch_spec(json!({"config": {"notify-keyspace-events": "KEA"}}))
        .await?;
    let deadline = Instant::now() + WAIT;
    let mut values = keyspace_events(&setup).await?;
    while values.iter().any(|(_, v)| v != "AKE") {
        if Instant::now() > deadline {
            return Err(format!("not every pod took the directive: {values:?}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        values = keyspace_events(&setup).await?;
    }
    assert_eq!(setup.pod_uids().await?, before, "no pod was replaced");

    // A pod made later starts with it.
    setup.patch_spec(json!({"replicas": 3})).await?;
    setup.wait_running(3).await?;
    let values = keyspace_events(&setup).await?;
    assert_eq!(values.len(), 3);
    assert!(values.iter().all(|(_, v)| v == "AKE"), "{values:?}");
    let after = setup.pod_uids().await?;
    assert_eq!(&after[..2], &before[..], "the first two pods still run");
    println!("figures: notify-keyspace-events on {values:?} with the same pods");
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_unschedulable_pod_fails_the_cluster_at_the_progress_deadline_not_the_grace()
-> TestResult {
    let Some(setup) = Setup::on_real_pods("progress-deadline").await? else {
        return Ok(());
    };
    let deadline = Duration::from_secs(40);
    let _operator = Operator::start_with(
        &setup.namespace.name,
        "operator",
        &["--progress-deadline", &format!("{}s", deadline.as_secs())],
    )?;
    // More CPU than the node has: the pod is never scheduled.
    let created = Instant::now();
    setup
        .create_cluster_with(
            "redis:7.0",
            1,
            json!({"resources": {"requests": {"cpu": "64"}}}),
        )
        .await?;
    // Past the failure grace period it is still on its way.
    tokio::time::sleep(failure_grace() + Duration::from_secs(10)).await;
    let cluster = setup.clusters.get(NAME).await?;
    let phase = cluster.status.as_ref().map(|s| s.phase);
    assert_eq!(
        phase,
        Some(Phase::Pending),
        "after the grace period: {:?}",
        cluster.status
    );
    let degraded = setup
        .wait_failed_within(deadline + Duration::from_secs(30))
        .await?;
    let after = created.elapsed();
    assert!(
        after >= deadline,
        "Failed after {after:?}, before the deadline"
    );
    assert_eq!(degraded.reason, "PodsUnschedulable", "{degraded:?}");
    assert!(
        degraded.message.contains("Insufficient cpu"),
        "{}",
        degraded.message
    );
    println!(
        "figures: Pending past the {:?} grace, Failed after {after:?}",
        failure_grace()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_directive_the_operator_owns_is_refused_at_admission() -> TestResult {
    let setup = Setup::new("config-refused").await?;
    let cluster = json!({
        "apiVersion": "cache.example.com/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": NAME, "namespace": setup.namespace.name},
        "spec": {"image": "redis:7.0", "replicas": 1, "config": {"SlaveOf": "10.0.0.1 6379"}},
    });
    let refused = setup
        .clusters
        .create(
            &PostParams::default(),
            &serde_json::from_value(cluster.clone())?,
        )
        .await
        .expect_err("SlaveOf was admitted");
    let message = refused.to_string();
    assert!(
        message.contains("spec.config cannot set SlaveOf: the operator sets it"),
        "{message}"
    );
    let mut limited = cluster;
    limited["spec"]["config"] = json!({"maxmemory": "10mb"});
    limited["spec"]["resources"] = json!({"limits": {"memory": "64Mi"}});
    let refused = setup
        .clusters
        .create(&PostParams::default(), &serde_json::from_value(limited)?)
        .await
        .expect_err("maxmemory was admitted with a memory limit");
    assert!(refused.to_string().contains("maxmemory"), "{refused}");
    // kubectl shows the same message.
    let applied = kubectl([
        "get",
        "redis",
        "-n",
        &setup.namespace.name,
        "--ignore-not-found",
        "-o",
        "name",
    ])
    .await?;
    assert!(applied.trim().is_empty(), "nothing was created: {applied}");
    println!("figures: {message}");
    Ok(())
}
