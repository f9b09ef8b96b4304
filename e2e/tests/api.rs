//! The API contract against a live API server: the CRD as the server serves it, what it
//! rejects, and a RedisCluster made through the dynamic API.

use e2e::{
    NAME, Operator, TestNamespace, TestResult, assert_redis_serves, client, reports, wait_for,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, ResourceExt};
use rediscluster_crd::{Phase, RedisCluster};
use serde_json::{Value, json};

fn dynamic_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cache.example.com",
        "v1alpha1",
        "RedisCluster",
    ))
}

fn untyped(spec: Value) -> TestResult<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cache.example.com/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": NAME},
        "spec": spec,
    }))?)
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn the_crd_is_established_and_the_server_rejects_bad_specs() -> TestResult {
    let client = client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("redisclusters.cache.example.com").await?;
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "the CRD is not Established");

    let namespace = TestNamespace::create(&client, "reject").await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace.name, &dynamic_resource());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let cases = [
        (
            json!({"image": "redis:7.0", "replicas": 0}),
            "spec.replicas",
        ),
        (
            json!({"image": "redis:7.0", "replicas": 21}),
            "spec.replicas",
        ),
        (json!({"replicas": 3}), "spec.image"),
        (json!({"image": "", "replicas": 3}), "spec.image"),
        (
            json!({"image": "redis:7.0", "replicas": "3"}),
            "spec.replicas",
        ),
        (
            json!({"image": "redis:7.0", "replicas": 3, "storage": {"size": "512Ki"}}),
            "spec.storage.size must be at least 1Mi",
        ),
        (
            json!({"image": "redis:7.0", "replicas": 3, "storage": {"size": "1GB"}}),
            "spec.storage.size",
        ),
        (
            json!({"image": "redis:7.0", "replicas": 3, "maxmemoryPolicy": "lru"}),
            "spec.maxmemoryPolicy",
        ),
        (
            json!({"image": "redis:7.0", "replicas": 3,
                   "storage": {"size": "1Gi",
                               "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Keep"}}}),
            "whenScaled",
        ),
    ];
    for (spec, field) in cases {
        match api.create(&dry_run, &untyped(spec.clone())?).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{spec}: {status:?}");
                assert!(status.message.contains(field), "{spec}: {}", status.message);
            }
            other => panic!("{spec} was not rejected: {other:?}"),
        }
    }
    api.create(
        &dry_run,
        &untyped(json!({"image": "redis:7.0", "replicas": 3}))?,
    )
    .await?;

    // Changes the storage rules refuse, each with its message.
    let stored = json!({"image": "redis:7.0", "replicas": 3,
                        "storage": {"size": "2Gi", "storageClassName": "standard"}});
    api.create(&PostParams::default(), &untyped(stored.clone())?)
        .await?;
    let patch = |spec: Value| json!({ "spec": spec });
    let changes = [
        (
            patch(json!({"storage": {"size": "1Gi"}})),
            "spec.storage.size cannot shrink",
        ),
        (
            patch(json!({"storage": {"storageClassName": "fast"}})),
            "spec.storage.storageClassName cannot change",
        ),
        (
            patch(json!({"storage": null})),
            "spec.storage cannot be removed",
        ),
    ];
    let dry_patch = kube::api::PatchParams {
        dry_run: true,
        ..kube::api::PatchParams::default()
    };
    for (change, message) in changes {
        match api
            .patch(NAME, &dry_patch, &kube::api::Patch::Merge(&change))
            .await
        {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{change}: {status:?}");
                assert!(
                    status.message.contains(message),
                    "{change}: {}",
                    status.message
                );
            }
            other => panic!("{change} was not rejected: {other:?}"),
        }
    }
    // Growing is allowed.
    api.patch(
        NAME,
        &dry_patch,
        &kube::api::Patch::Merge(&patch(json!({"storage": {"size": "3Gi"}}))),
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "live: needs a cluster (make e2e-local)"]
async fn a_cluster_made_through_the_dynamic_api_behaves_the_same() -> TestResult {
    let client = client().await?;
    if !e2e::real_node_or_skip(&client, "dynamic").await? {
        return Ok(());
    }
    let namespace = TestNamespace::create(&client, "dynamic").await?;
    let _operator = Operator::start(&namespace.name)?;
    // As the article's DynamicClient example: untyped JSON, addressed by group/version/kind.
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace.name, &dynamic_resource());
    api.create(
        &PostParams::default(),
        &untyped(json!({"image": "redis:7.0", "replicas": 3}))?,
    )
    .await?;

    let clusters: Api<RedisCluster> = Api::namespaced(client.clone(), &namespace.name);
    wait_for(
        &clusters,
        NAME,
        "Running with 3",
        reports(Phase::Running, 3),
    )
    .await?;
    assert_redis_serves(&client, &namespace.name, NAME, 3).await?;
    let read_back = api.get(NAME).await?;
    assert_eq!(read_back.data["status"]["phase"], "Running");
    assert_eq!(read_back.data["status"]["readyReplicas"], 3);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client, &namespace.name);
    let sts = statefulsets.get(NAME).await?;
    assert!(
        sts.owner_references()
            .iter()
            .any(|o| o.kind == "RedisCluster")
    );
    Ok(())
}
