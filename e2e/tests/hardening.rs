//! States that used to leave a cluster stuck, against a live API server: names no child can
//! take, pods that can never be created, other field managers' additions, a StatefulSet whose
//! immutable fields must change.

use std::time::{Duration, Instant};

use e2e::{
    NAME, Operator, Setup, TestResult, WAIT, kubectl, progress_deadline, request_counts,
    wait_for_within,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn kubectl_apply_refuses_names_no_child_can_take() -> TestResult {
    let setup = Setup::new("names").await?;
    let ns = setup.namespace.name.clone();
    let longest = format!("r{}", "e".repeat(51));
    let cases = [
        (format!("{longest}s"), "at most 52 characters"),
        ("my.redis".to_owned(), "DNS-1035"),
    ];
    for (name, says) in cases {
        let manifest = format!(
            "apiVersion: cache.example.com/v1alpha1\nkind: RedisCluster\nmetadata:\n  name: {name}\n\
             spec:\n  image: redis:7.0\n  replicas: 1\n"
        );
        let path = std::env::temp_dir().join(format!("{ns}-{}.yaml", name.len()));
        std::fs::write(&path, manifest)?;
        let path = path.display().to_string();
        let applied = kubectl(["apply", "-n", &ns, "-f", &path]).await;
        let error = applied
            .expect_err(&format!("{name} was accepted"))
            .to_string();
        assert!(error.contains(says), "{name}: {error}");
    }
    // The longest name that works is accepted.
    setup
        .clusters
        .create(
            &PostParams::default(),
            &e2e::redis_cluster(&longest, "redis:7.0", 1)?,
        )
        .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn pods_that_cannot_be_created_fail_the_cluster_until_the_cause_goes() -> TestResult {
    let Some(setup) = Setup::on_real_pods("quota").await? else {
        return Ok(());
    };
    let quotas: Api<ResourceQuota> = Api::namespaced(setup.client.clone(), &setup.namespace.name);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "one-pod"},
        "spec": {"hard": {"pods": "1"}}
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    let _operator = Operator::start(&setup.namespace.name)?;
    let created = Instant::now();
    setup.create_cluster("redis:7.0", 3).await?;

    let degraded = setup.wait_failed().await?;
    let after = created.elapsed();
    assert_eq!(degraded.reason, "PodsNotCreated", "{degraded:?}");
    assert!(degraded.message.contains("1/3"), "{}", degraded.message);
    assert!(
        after < progress_deadline() + Duration::from_secs(30),
        "Failed only after {after:?}"
    );

    quotas.delete("one-pod", &DeleteParams::default()).await?;
    let fixed = Instant::now();
    setup.wait_running(3).await?;
    println!(
        "quota of 1 pod: Failed/PodsNotCreated after {after:?}; Running {:?} after removing it",
        fixed.elapsed()
    );
    Ok(())
}

/// The operator's writes so far (creates and patches), from its own request counter.
fn writes(port: u16) -> TestResult<f64> {
    let counts = request_counts(port)?;
    Ok(counts["create"] + counts["patch"])
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn other_field_managers_additions_are_kept_and_the_operator_settles() -> TestResult {
    let Some(setup) = Setup::on_real_pods("foreign-fields").await? else {
        return Ok(());
    };
    // Its own process, whose port it says, so its requests can be counted (local mode only).
    let mut operator = if e2e::in_cluster() {
        None
    } else {
        Some(Operator::start_with(
            &setup.namespace.name,
            "operator",
            &["--resync-interval", "20s"],
        )?)
    };
    let port = operator.as_mut().map(Operator::http_port).transpose()?;
    setup.create_cluster("redis:7.0", 2).await?;
    setup.wait_running(2).await?;

    // A sidecar injector's additions, through server-side apply under its own name.
    let injected = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": NAME, "labels": {"team": "cache"},
                     "annotations": {"injector.example.com/injected": "true"}},
        "spec": {"template": {
            "metadata": {"annotations": {"injector.example.com/version": "1"}},
            "spec": {
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cache",
                                 "effect": "NoSchedule"}],
                "volumes": [{"name": "injected", "emptyDir": {}}],
                "containers": [{
                    "name": "sidecar", "image": "redis:7.0",
                    "command": ["redis-server", "--port", "6380", "--save", ""],
                    "securityContext": {"allowPrivilegeEscalation": false,
                                        "capabilities": {"drop": ["ALL"]}},
                    "volumeMounts": [{"name": "injected", "mountPath": "/injected"}]
                }]
            }
        }}
    });
    // The generation the injection made, as its answer says (the operator may follow it
    // with its own before another read).
    let injected_generation = setup
        .statefulsets
        .patch(
            NAME,
            &PatchParams::apply("sidecar-injector"),
            &Patch::Apply(&injected),
        )
        .await?
        .metadata
        .generation;
    // The pods roll to take the sidecar (the operator stamps the template with the config
    // its pods are made for, which counts what others add: one more generation); the
    // operator must reach Running with it in place.
    let rolled = wait_for_within(
        WAIT,
        &setup.statefulsets,
        NAME,
        "rolled with the sidecar",
        |sts: Option<&StatefulSet>| {
            sts.is_some_and(|sts| {
                let generation = sts.metadata.generation;
                sts.status.as_ref().is_some_and(|s| {
                    // Not currentRevision: with OnDelete (the operator rolls the pods) the
                    // StatefulSet controller never advances it; updatedReplicas counts the
                    // pods made from the update revision.
                    generation > injected_generation
                        && s.observed_generation == generation
                        && s.updated_replicas == Some(2)
                        && s.ready_replicas == Some(2)
                })
            })
        },
    )
    .await?
    .ok_or("the StatefulSet vanished")?;
    let settled_generation = rolled.metadata.generation;
    setup.wait_running(2).await?;

    // Settled: for a minute (three resyncs), no write to the StatefulSet or anything else.
    let patches = port.map(writes).transpose()?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let sts = setup.statefulsets.get(NAME).await?;
    assert_eq!(
        sts.metadata.generation, settled_generation,
        "spec rewritten"
    );
    let containers: Vec<String> = sts
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    assert_eq!(containers, ["redis", "sidecar"]);
    assert_eq!(
        sts.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("cache")
    );
    if let (Some(before), Some(port)) = (patches, port) {
        let after = writes(port)?;
        assert_eq!(after, before, "the operator wrote while settled");
    }
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_statefulset_whose_immutable_fields_differ_is_recreated_keeping_its_pods() -> TestResult {
    if e2e::in_cluster() {
        // The deployed operator would make the StatefulSet before the test could.
        eprintln!(
            "SKIPPED immutable: needs the operator to start after the older StatefulSet exists \
             (local mode, make e2e-local)"
        );
        return Ok(());
    }
    let Some(setup) = Setup::on_real_pods("immutable").await? else {
        return Ok(());
    };
    // The cluster exists before any operator runs; its StatefulSet is what a release that left
    // podManagementPolicy at its default (OrderedReady) would have made.
    setup.create_cluster("redis:7.0", 2).await?;
    let cluster = setup.clusters.get(NAME).await?;
    let mut older = redis_operator::desired::initial_statefulset(&cluster)?;
    if let Some(spec) = older.spec.as_mut() {
        spec.pod_management_policy = None;
    }
    let older = setup
        .statefulsets
        .create(&PostParams::default(), &older)
        .await?;
    // Its first pod runs before the operator comes. (OrderedReady creates the next one only
    // once it is ready, and a pod becomes ready only in the role the operator gives it.)
    let pod0 = format!("{NAME}-0");
    wait_for_within(
        WAIT,
        &setup.pods,
        &pod0,
        "the older StatefulSet's first pod running",
        |pod: Option<&k8s_openapi::api::core::v1::Pod>| {
            pod.and_then(|p| p.status.as_ref())
                .is_some_and(|s| s.phase.as_deref() == Some("Running") && s.pod_ip.is_some())
        },
    )
    .await?;
    let pods_before: Vec<String> = e2e::cluster_pods(&setup.client, &setup.namespace.name, NAME)
        .await?
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(pods_before.len(), 1);

    let _operator = Operator::start(&setup.namespace.name)?;
    let recreated = wait_for_within(
        WAIT,
        &setup.statefulsets,
        NAME,
        "recreated as Parallel",
        |sts: Option<&StatefulSet>| {
            sts.is_some_and(|s| {
                s.uid() != older.uid()
                    && s.spec
                        .as_ref()
                        .and_then(|s| s.pod_management_policy.as_deref())
                        == Some("Parallel")
            })
        },
    )
    .await?
    .ok_or("StatefulSet gone")?;
    setup.wait_running(2).await?;
    let pods_after: Vec<String> = e2e::cluster_pods(&setup.client, &setup.namespace.name, NAME)
        .await?
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(pods_after.len(), 2);
    assert!(
        pods_after.contains(&pods_before[0]),
        "the first pod was replaced, not adopted"
    );
    let events = kubectl([
        "get",
        "events",
        "-n",
        &setup.namespace.name,
        "-o",
        "name",
        "--field-selector",
        "reason=RecreatingStatefulSet",
    ])
    .await?;
    assert!(!events.trim().is_empty(), "no RecreatingStatefulSet event");
    assert!(
        recreated
            .owner_references()
            .iter()
            .any(|o| o.kind == "RedisCluster")
    );
    Ok(())
}
