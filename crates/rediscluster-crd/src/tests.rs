use std::path::Path;

use serde_json::{Value, json};
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;

fn crd_json() -> Value {
    serde_json::to_value(crd()).unwrap()
}

fn version() -> Value {
    let crd = crd_json();
    let versions = crd["spec"]["versions"].as_array().unwrap().clone();
    assert_eq!(versions.len(), 1, "exactly one version");
    versions[0].clone()
}

fn schema() -> Value {
    version()["schema"]["openAPIV3Schema"].clone()
}

fn workspace_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn checked_in_crd_matches_the_types() {
    let generated = crd_yaml().unwrap();
    let checked_in = workspace_file(CRD_PATH);
    assert!(
        generated == checked_in,
        "{CRD_PATH} is out of date with the Rust types; regenerate it with `make crd` \
         (redis-operator generate-crd --output {CRD_PATH}) and commit the result"
    );
}

#[test]
fn names_scope_and_version() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "redisclusters.cache.example.com");
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "cache.example.com");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(
        spec["names"],
        json!({
            "kind": "RedisCluster",
            "listKind": "RedisClusterList",
            "plural": "redisclusters",
            "singular": "rediscluster",
            "shortNames": ["redis"],
            "categories": ["all"],
        })
    );
    let version = version();
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["served"], true);
    assert_eq!(version["storage"], true);
}

#[test]
fn spec_fields_are_required_and_bounded() {
    let spec = &schema()["properties"]["spec"];
    assert_eq!(spec["required"], json!(["image", "replicas"]));
    let image = &spec["properties"]["image"];
    assert_eq!(image["type"], "string");
    assert_eq!(image["minLength"], 1);
    let replicas = &spec["properties"]["replicas"];
    assert_eq!(replicas["type"], "integer");
    assert_eq!(replicas["minimum"].as_f64(), Some(f64::from(MIN_REPLICAS)));
    assert_eq!(replicas["maximum"].as_f64(), Some(f64::from(MAX_REPLICAS)));
    assert_eq!(schema()["required"], json!(["spec"]));
}

#[test]
fn every_field_has_a_description() {
    fn check(path: &str, schema: &Value) {
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                let path = format!("{path}.{name}");
                assert!(
                    property["description"].is_string(),
                    "{path} has no description"
                );
                check(&path, property);
                check(&format!("{path}[]"), &property["items"]);
            }
        }
    }
    let schema = schema();
    check("spec", &schema["properties"]["spec"]);
    check("status", &schema["properties"]["status"]);
}

#[test]
fn status_fields_and_phase_enum() {
    let status = &schema()["properties"]["status"]["properties"];
    assert_eq!(status["readyReplicas"]["type"], "integer");
    assert_eq!(status["replicas"]["type"], "integer");
    assert_eq!(status["observedGeneration"]["type"], "integer");
    assert_eq!(status["selector"]["type"], "string");
    assert_eq!(status["phase"]["type"], "string");
    assert_eq!(
        status["phase"]["enum"],
        json!(["Pending", "Running", "Scaling", "Failed"])
    );
    let api_names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(json!(api_names), status["phase"]["enum"]);
}

#[test]
fn conditions_have_the_standard_shape_keyed_by_type() {
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["type"], "array");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    let item = &conditions["items"];
    for field in ["type", "status", "reason", "message", "lastTransitionTime"] {
        assert!(
            item["required"].as_array().unwrap().contains(&json!(field)),
            "{field} must be required"
        );
    }
    assert_eq!(item["properties"]["observedGeneration"]["type"], "integer");
    assert_eq!(
        item["properties"]["lastTransitionTime"]["format"],
        "date-time"
    );
}

#[test]
fn status_and_scale_subresources() {
    let subresources = &version()["subresources"];
    assert_eq!(subresources["status"], json!({}));
    assert_eq!(
        subresources["scale"],
        json!({
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        })
    );
}

#[test]
fn printer_columns() {
    let columns: Vec<(String, String, String)> = version()["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["type"].as_str().unwrap().to_owned(),
                c["jsonPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("Image", "string", ".spec.image"),
        ("Desired", "integer", ".spec.replicas"),
        ("Ready", "integer", ".status.readyReplicas"),
        ("Primary", "string", ".status.primary"),
        ("Phase", "string", ".status.phase"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    assert_eq!(columns, expected);
}

#[test]
fn sample_round_trips() {
    let sample: RedisCluster = serde_norway::from_str(&workspace_file(
        "config/samples/cache_v1alpha1_rediscluster.yaml",
    ))
    .unwrap();
    assert_eq!(sample.metadata.name.as_deref(), Some("test-redis"));
    assert_eq!(
        sample.spec,
        RedisClusterSpec {
            image: "redis:7.0".to_owned(),
            replicas: 3,
            storage: None,
            resources: None,
            maxmemory_policy: None,
            fencing: None,
            auth: None,
            tls: None,
            pod: None,
            service: None,
            config: None,
        }
    );
    assert_eq!(sample.status, None);
    let again: RedisCluster =
        serde_json::from_value(serde_json::to_value(&sample).unwrap()).unwrap();
    assert_eq!(again, sample);
}

#[test]
fn status_round_trips_and_omits_what_is_unset() {
    let status = RedisClusterStatus {
        phase: Phase::Scaling,
        ready_replicas: 2,
        replicas: 3,
        updated_replicas: 1,
        primary: None,
        last_progress_time: None,
        selector: Some("app.kubernetes.io/instance=a".to_owned()),
        observed_generation: Some(4),
        conditions: Vec::new(),
    };
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(
        value,
        json!({"phase": "Scaling", "readyReplicas": 2, "replicas": 3, "updatedReplicas": 1,
               "selector": "app.kubernetes.io/instance=a", "observedGeneration": 4})
    );
    assert_eq!(
        serde_json::from_value::<RedisClusterStatus>(value).unwrap(),
        status
    );
    assert_eq!(
        serde_json::from_value::<RedisClusterStatus>(json!({})).unwrap(),
        RedisClusterStatus::default()
    );
}

#[test]
fn malformed_specs_fail_with_readable_errors() {
    let cases = [
        (json!({"replicas": 3}), "missing field `image`"),
        (json!({"image": "redis:7.0"}), "missing field `replicas`"),
        (
            json!({"image": "redis:7.0", "replicas": "3"}),
            "invalid type: string \"3\", expected i32",
        ),
        (
            json!({"image": 7, "replicas": 3}),
            "invalid type: integer `7`, expected a string",
        ),
    ];
    for (spec, expected) in cases {
        let error = serde_json::from_value::<RedisClusterSpec>(spec.clone()).unwrap_err();
        assert!(error.to_string().contains(expected), "{spec}: {error}");
    }
    let error = serde_json::from_value::<RedisClusterStatus>(json!({"phase": "Exploded"}))
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown variant `Exploded`"), "{error}");
}

#[test]
fn names_that_cannot_yield_every_child_are_refused() {
    let longest = format!("r{}", "e".repeat(MAX_NAME_LENGTH - 1));
    let cases = [
        ("test-redis", true),
        ("a", true),
        ("r2", true),
        (longest.as_str(), true),
        (&format!("{longest}s"), false),
        ("my.redis", false),
        ("My-redis", false),
        ("2redis", false),
        ("redis-", false),
        ("re_dis", false),
    ];
    for (name, ok) in cases {
        assert_eq!(
            name_problem(name).is_none(),
            ok,
            "{name}: {:?}",
            name_problem(name)
        );
    }
    // The limit is what the StatefulSet controller needs: name, '-', a hash of up to 10.
    assert_eq!(MAX_NAME_LENGTH + 1 + 10, 63);
    assert!(
        name_problem(&format!("{longest}s"))
            .unwrap()
            .contains("at most 52")
    );
}

#[test]
fn the_name_rules_are_cel_on_the_root() {
    let rules = schema()["x-kubernetes-validations"].clone();
    let rules = rules.as_array().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0]["rule"], "self.metadata.name.size() <= 52");
    assert!(rules[1]["rule"].as_str().unwrap().contains(NAME_PATTERN));
    for rule in rules {
        assert!(!rule["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn the_primary_is_reported_when_there_is_one() {
    let status = RedisClusterStatus {
        primary: Some("cache-0".to_owned()),
        ..RedisClusterStatus::default()
    };
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(value["primary"], "cache-0");
    assert_eq!(
        serde_json::from_value::<RedisClusterStatus>(value).unwrap(),
        status
    );
}

#[test]
fn production_fields_are_optional_and_round_trip() {
    let spec: RedisClusterSpec = serde_json::from_value(json!({
        "image": "redis:7.2", "replicas": 3,
        "storage": {"size": "1Gi", "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}},
        "resources": {"limits": {"memory": "64Mi", "cpu": 1}},
        "maxmemoryPolicy": "volatile-lru"
    }))
    .unwrap();
    let storage = spec.storage.as_ref().unwrap();
    assert_eq!(
        storage.retention(),
        (RetentionAction::Delete, RetentionAction::Delete)
    );
    assert_eq!(spec.maxmemory_policy, Some(MaxmemoryPolicy::VolatileLru));
    let again: RedisClusterSpec =
        serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
    // The seed's two fields alone still make a spec, and serialize to just them.
    let seed: RedisClusterSpec =
        serde_json::from_value(json!({"image": "redis:7.0", "replicas": 1})).unwrap();
    assert_eq!(
        serde_json::to_value(&seed).unwrap(),
        json!({"image": "redis:7.0", "replicas": 1})
    );
    let spec_schema = &schema()["properties"]["spec"];
    assert_eq!(spec_schema["required"], json!(["image", "replicas"]));
    assert_eq!(
        spec_schema["properties"]["maxmemoryPolicy"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        8,
        "no null among the values"
    );
}

#[test]
fn maxmemory_is_a_share_of_the_memory_limit_with_a_policy_by_storage() {
    let spec = |storage: bool, limit: Option<&str>, policy: Option<MaxmemoryPolicy>| {
        spec_with(limit, storage.then_some("1Gi"), policy)
    };
    let cases = [
        (spec(false, None, None), None),
        (spec(true, None, Some(MaxmemoryPolicy::AllkeysLru)), None),
        (
            spec(false, Some("100M"), None),
            Some((59_867_340, MaxmemoryPolicy::AllkeysLru)),
        ),
        (
            spec(true, Some("100M"), None),
            Some((59_867_340, MaxmemoryPolicy::Noeviction)),
        ),
        (
            spec(true, Some("1e8"), Some(MaxmemoryPolicy::VolatileTtl)),
            Some((59_867_340, MaxmemoryPolicy::VolatileTtl)),
        ),
    ];
    for (spec, maxmemory) in cases {
        assert_eq!(spec.maxmemory(), maxmemory, "{spec:?}");
    }
}

#[test]
fn what_the_schema_cannot_size_the_operator_refuses() {
    let with = |memory: Option<&str>, size: Option<&str>| spec_with(memory, size, None);
    let cases = [
        (with(None, None), None),
        (with(Some("32Mi"), Some("1Mi")), None),
        (with(Some("1e9"), None), None),
        (
            with(Some("16Mi"), None),
            Some("spec.resources.limits.memory must be at least 32Mi, not 16Mi"),
        ),
        (
            with(Some("3e7"), None),
            Some("spec.resources.limits.memory must be at least 32Mi, not 3e7"),
        ),
        (
            with(Some("lots"), None),
            Some("spec.resources.limits.memory \"lots\" is not a quantity"),
        ),
        (
            with(None, Some("1e3")),
            Some("spec.storage.size must be at least 1Mi, not 1e3"),
        ),
    ];
    for (spec, problem) in cases {
        assert_eq!(spec_problem(&spec).as_deref(), problem, "{spec:?}");
    }
}

#[test]
fn storage_rules_are_cel_on_the_fields_they_guard() {
    let spec = &schema()["properties"]["spec"];
    let messages = |schema: &Value| -> Vec<String> {
        schema["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| rule["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(messages(spec)[0].starts_with("spec.storage cannot be removed"));
    let storage = messages(&spec["properties"]["storage"]);
    assert!(storage[0].contains("at least 1Mi"));
    assert!(storage[1].contains("cannot shrink"));
    assert!(storage[2].contains("storageClassName cannot change"));
    let size = &spec["properties"]["storage"]["properties"]["size"];
    assert_eq!(size["maxLength"], 32, "bounded, so that CEL's cost is");
}

/// The seed's spec with a memory limit, storage of `size` and a policy, where given.
fn spec_with(
    memory_limit: Option<&str>,
    size: Option<&str>,
    policy: Option<MaxmemoryPolicy>,
) -> RedisClusterSpec {
    RedisClusterSpec {
        image: "redis:7.0".to_owned(),
        replicas: 1,
        storage: size.map(|size| Storage {
            size: size.to_owned(),
            storage_class_name: None,
            persistent_volume_claim_retention_policy: None,
        }),
        resources: memory_limit.map(|memory| Resources {
            requests: None,
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(memory.to_owned()),
            )])),
        }),
        maxmemory_policy: policy,
        fencing: None,
        auth: None,
        tls: None,
        pod: None,
        service: None,
        config: None,
    }
}

#[test]
fn the_fence_defaults_to_one_replica_from_three_pods_and_never_exceeds_the_replicas() {
    let fencing = |replicas: i32, min_replicas: Option<i32>, lag: Option<i32>| {
        let mut spec = spec_with(None, None, None);
        spec.replicas = replicas;
        spec.fencing = (min_replicas.is_some() || lag.is_some()).then_some(Fencing {
            min_replicas,
            max_lag_seconds: lag,
        });
        spec.fencing()
    };
    assert_eq!(fencing(1, None, None), (0, DEFAULT_MAX_LAG_SECONDS));
    assert_eq!(fencing(2, None, None), (0, 3));
    assert_eq!(fencing(3, None, None), (1, 3));
    assert_eq!(fencing(20, None, Some(5)), (1, 5));
    assert_eq!(fencing(2, Some(1), None), (1, 3), "asked for with 2 pods");
    assert_eq!(fencing(3, Some(0), None), (0, 3), "turned off");
    assert_eq!(fencing(3, Some(5), None), (2, 3), "at most replicas - 1");
    assert_eq!(
        fencing(1, Some(1), None),
        (0, 3),
        "a single pod has no replica"
    );
}

#[test]
fn tls_without_auth_is_a_spec_problem() {
    let mut spec: RedisClusterSpec =
        serde_json::from_value(serde_json::json!({"image": "redis:7.0", "replicas": 3})).unwrap();
    spec.tls = Some(Tls {
        secret_name: "certs".to_owned(),
    });
    assert_eq!(spec_problem(&spec), None);
    spec.auth = Some(Auth {
        insecure_allow_unauthenticated: Some(true),
        ..Auth::default()
    });
    assert_eq!(
        spec_problem(&spec).as_deref(),
        Some("spec.tls needs auth: remove spec.auth.insecureAllowUnauthenticated")
    );
}
