//! The reconciler against a live API server: `make e2e-local` against the local control plane
//! with a real node (or the fake kubelet, which marks pods Ready and keeps `does-not-exist`
//! images in ImagePullBackOff), or `make e2e` on kind. Each test has its own namespace and, in
//! local mode, its own operator process. Every wait for Running also checks Redis on each pod.

use std::process::Command;
use std::time::Duration;

use e2e::{NAME, Operator, Setup, TestResult, WatchLog, has_real_node, wait_for, wait_for_within};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use rediscluster_crd::Phase;
use serde_json::json;

/// Deletes the child and waits until the operator has made a new one (a new uid, not deleting).
async fn delete_and_wait_recreated<K>(api: &Api<K>) -> TestResult
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let old = api.get(NAME).await?.uid();
    api.delete(NAME, &DeleteParams::foreground()).await?;
    wait_for(api, NAME, "recreated", |child: Option<&K>| {
        child.is_some_and(|c| c.uid() != old && c.meta().deletion_timestamp.is_none())
    })
    .await?;
    Ok(())
}

fn sts_replicas(replicas: i32) -> impl Fn(Option<&StatefulSet>) -> bool {
    move |sts| sts.and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas) == Some(replicas)
}

async fn set_replicas(setup: &Setup, replicas: i32) -> TestResult {
    setup.patch_spec(json!({"replicas": replicas})).await
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn sample_reaches_running_with_owned_children() -> TestResult {
    let Some(setup) = Setup::on_real_pods("running").await? else {
        return Ok(());
    };
    let _operator = Operator::start(&setup.namespace.name)?;
    setup.create_cluster("redis:7.0", 3).await?;

    setup.wait_running(3).await?;
    let cluster = setup.clusters.get(NAME).await?;
    let uid = cluster.uid().ok_or("no uid")?;
    let sts = setup.statefulsets.get(NAME).await?;
    let svc = setup.services.get(NAME).await?;
    for owners in [sts.owner_references(), svc.owner_references()] {
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        );
    }
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    let status = cluster.status.ok_or("no status")?;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.observed_generation, cluster.metadata.generation);

    let wait = Command::new("kubectl")
        .args([
            "wait",
            "--for=condition=Ready",
            "--timeout=30s",
            "-n",
            &setup.namespace.name,
        ])
        .arg(format!("rediscluster/{NAME}"))
        .output()?;
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let table = Command::new("kubectl")
        .args(["get", "redis", "-n", &setup.namespace.name])
        .output()?;
    let table = String::from_utf8(table.stdout)?;
    for column in [
        "IMAGE",
        "DESIRED",
        "READY",
        "PHASE",
        "AGE",
        "redis:7.0",
        "Running",
    ] {
        assert!(table.contains(column), "{column} missing from:\n{table}");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn scales_through_the_spec_and_the_scale_subresource() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("scale", 3).await? else {
        return Ok(());
    };

    for replicas in [5, 2] {
        set_replicas(&setup, replicas).await?;
        wait_for(
            &setup.statefulsets,
            NAME,
            "StatefulSet scaled",
            sts_replicas(replicas),
        )
        .await?;
        setup.wait_running(replicas).await?;
    }
    for replicas in [4, 1] {
        let scale = Command::new("kubectl")
            .args([
                "scale",
                "-n",
                &setup.namespace.name,
                &format!("rediscluster/{NAME}"),
            ])
            .arg(format!("--replicas={replicas}"))
            .output()?;
        assert!(
            scale.status.success(),
            "{}",
            String::from_utf8_lossy(&scale.stderr)
        );
        wait_for(
            &setup.statefulsets,
            NAME,
            "StatefulSet scaled",
            sts_replicas(replicas),
        )
        .await?;
        setup.wait_running(replicas).await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn drift_is_reverted_and_deleted_children_come_back() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("drift", 3).await? else {
        return Ok(());
    };

    // Someone scales the StatefulSet by hand (a merge patch, as `kubectl scale` does).
    let by_hand = json!({"spec": {"replicas": 1}});
    setup
        .statefulsets
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&by_hand))
        .await?;
    wait_for(
        &setup.statefulsets,
        NAME,
        "hand scale reverted",
        sts_replicas(3),
    )
    .await?;

    delete_and_wait_recreated(&setup.statefulsets).await?;
    delete_and_wait_recreated(&setup.services).await?;
    setup.wait_running(3).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_unpullable_image_fails_and_fixing_it_recovers() -> TestResult {
    let Some(setup) = Setup::on_real_pods("badimage").await? else {
        return Ok(());
    };
    let _operator = Operator::start(&setup.namespace.name)?;
    setup.create_cluster("redis:does-not-exist", 2).await?;

    // A real kubelet reports ErrImagePull and ImagePullBackOff in turn; either is the reason.
    let degraded = setup.wait_failed().await?;
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&degraded.reason.as_str()),
        "{degraded:?}"
    );
    assert!(
        degraded.message.contains("redis:does-not-exist") || !has_real_node(&setup.client).await?,
        "the message should say what cannot be pulled: {}",
        degraded.message
    );

    setup.patch_spec(json!({"image": "redis:7.2"})).await?;
    setup.wait_running(2).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn deleting_the_cluster_removes_its_children() -> TestResult {
    let Some((setup, _operator)) = Setup::sample_on_real_pods("delete", 2).await? else {
        return Ok(());
    };
    let sts_uid = setup.statefulsets.get(NAME).await?.uid();

    // Watch the StatefulSet from before the delete until it is gone: the operator must never
    // recreate a child of a cluster on its way out.
    let versions = WatchLog::start(&setup.statefulsets, NAME);
    setup
        .clusters
        .delete(NAME, &DeleteParams::foreground())
        .await?;
    wait_for(&setup.clusters, NAME, "cluster gone", |o| o.is_none()).await?;
    wait_for(&setup.statefulsets, NAME, "StatefulSet gone", |o| {
        o.is_none()
    })
    .await?;
    wait_for(&setup.services, NAME, "Service gone", |o| o.is_none()).await?;
    // A moment for a recreate to show, had one been sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen: std::collections::BTreeSet<_> =
        versions.stop().iter().map(ResourceExt::uid).collect();
    assert!(
        setup.statefulsets.get_opt(NAME).await?.is_none(),
        "recreated"
    );
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![sts_uid]);
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn an_operator_restart_in_the_middle_of_scaling_converges() -> TestResult {
    let Some((setup, operator)) = Setup::sample_on_real_pods("restart", 3).await? else {
        return Ok(());
    };

    // Scale, and kill the operator while it is at it; a fresh one must finish the job.
    set_replicas(&setup, 6).await?;
    let _operator = operator.restart(&setup.namespace.name)?;
    wait_for(
        &setup.statefulsets,
        NAME,
        "StatefulSet scaled",
        sts_replicas(6),
    )
    .await?;
    setup.wait_running(6).await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_foreign_statefulset_is_left_untouched() -> TestResult {
    let Some(setup) = Setup::on_real_pods("foreign").await? else {
        return Ok(());
    };
    let foreign: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": NAME, "labels": {"owner": "someone-else"}},
        "spec": {
            "replicas": 1,
            "serviceName": NAME,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
            }
        }
    }))?;
    let before = setup
        .statefulsets
        .create(&PostParams::default(), &foreign)
        .await?;
    let _operator = Operator::start(&setup.namespace.name)?;
    setup.create_cluster("redis:7.0", 3).await?;

    let degraded = setup.wait_failed().await?;
    assert_eq!(degraded.reason, "ChildNotOwned");
    assert!(
        degraded.message.contains(&format!("StatefulSet {NAME}")),
        "{}",
        degraded.message
    );

    // Its controller may update its status; its spec and metadata must be as its owner left them.
    let after = setup.statefulsets.get(NAME).await?;
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "spec modified"
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    assert!(after.owner_references().is_empty());
    let managers: Vec<_> = after
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m == "redis-operator"),
        "{managers:?}"
    );

    // Its owner removes it. Nothing about that reaches the operator's watches (it was never
    // labelled as ours); the blocked cluster's own recheck must notice within a minute.
    let removed = std::time::Instant::now();
    setup
        .statefulsets
        .delete(NAME, &DeleteParams::foreground())
        .await?;
    wait_for_within(
        Duration::from_secs(60) + Duration::from_secs(30),
        &setup.clusters,
        NAME,
        "Running once the blocker is gone",
        e2e::reports(Phase::Running, 3),
    )
    .await?;
    let healed = removed.elapsed();
    assert!(healed < Duration::from_secs(60), "healed after {healed:?}");
    setup.wait_running(3).await?;
    println!("foreign StatefulSet removed -> Running after {healed:?}");
    Ok(())
}
