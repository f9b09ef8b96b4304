use super::*;
use crate::fixtures::{NAME, NAMESPACE, UID, cluster};

#[test]
fn children_carry_name_namespace_labels_and_controller_reference() {
    let cluster = cluster(3, "redis:7.0");
    let [service, primary, replicas] = services(&cluster).unwrap();
    let statefulset = statefulset(&cluster).unwrap();
    assert_eq!(primary.metadata.name.as_deref(), Some("cache-primary"));
    assert_eq!(replicas.metadata.name.as_deref(), Some("cache-replicas"));
    for meta in [&service.metadata, &statefulset.metadata] {
        assert_eq!(meta.name.as_deref(), Some(NAME));
    }
    for meta in [
        &service.metadata,
        &primary.metadata,
        &replicas.metadata,
        &statefulset.metadata,
    ] {
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels[NAME_LABEL], "redis");
        assert_eq!(labels[INSTANCE_LABEL], NAME);
        assert_eq!(labels[MANAGED_BY_LABEL], "redis-operator");
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "RedisCluster");
        assert_eq!(owners[0].api_version, "cache.example.com/v1alpha1");
        assert_eq!(owners[0].uid, UID);
        assert_eq!(owners[0].controller, Some(true));
    }
    assert!(is_controlled_by(&service, UID));
    assert!(!is_controlled_by(&service, "someone-else"));
}

#[test]
fn objects_not_read_from_the_server_are_refused() {
    let mut no_uid = cluster(3, "redis:7.0");
    no_uid.metadata.uid = None;
    assert!(matches!(
        statefulset(&no_uid),
        Err(Error::MissingObjectKey("uid"))
    ));
    let mut no_namespace = cluster(3, "redis:7.0");
    no_namespace.metadata.namespace = None;
    assert!(matches!(
        services(&no_namespace),
        Err(Error::MissingObjectKey("namespace"))
    ));
}

#[test]
fn service_is_headless_and_publishes_unready_pods() {
    let [headless, ..] = services(&cluster(3, "redis:7.0")).unwrap();
    let spec = headless.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    assert_eq!(spec.selector, Some(selector_labels(NAME)));
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("redis"));
    assert_eq!(ports[0].port, 6379);
}

#[test]
fn statefulset_follows_the_spec() {
    for (replicas, image) in [
        (1, "redis:7.0"),
        (3, "redis:7.2"),
        (20, "registry.local/redis@sha256:abc"),
    ] {
        let sts = statefulset(&cluster(replicas, image)).unwrap();
        assert_eq!(desired_replicas(&sts), replicas);
        assert_eq!(redis_image(&sts), Some(image));
        let spec = sts.spec.unwrap();
        assert_eq!(spec.service_name.as_deref(), Some(NAME));
        let strategy = spec.update_strategy.unwrap();
        assert_eq!(
            strategy.type_.as_deref(),
            Some("OnDelete"),
            "the operator rolls"
        );
        assert_eq!(strategy.rolling_update, None, "refused beside OnDelete");
    }
}

#[test]
fn selector_is_an_immutable_subset_of_the_pod_labels() {
    let sts = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let spec = sts.spec.unwrap();
    let selector = spec.selector.match_labels.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    // managed-by may change hands one day; the selector can never change.
    assert!(!selector.contains_key(MANAGED_BY_LABEL));
    assert_eq!(
        selector_string(NAME),
        format!("app.kubernetes.io/instance={NAME},app.kubernetes.io/name=redis")
    );
}

#[test]
fn pod_is_restricted_and_probed() {
    let sts = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let pod_security = pod.security_context.unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(999));
    assert_eq!(
        pod_security.seccomp_profile.unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(pod.containers.len(), 1);
    let redis = &pod.containers[0];
    assert_eq!(redis.name, "redis");
    let security = redis.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    let readiness = redis
        .readiness_probe
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert_eq!(
        readiness.command.as_deref().unwrap(),
        ["sh", "-c", READINESS_SCRIPT]
    );
    assert!(redis.liveness_probe.as_ref().unwrap().tcp_socket.is_some());
    assert_eq!(redis.ports.as_ref().unwrap()[0].container_port, 6379);
    let requests = redis.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    let mount = &redis.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(mount.mount_path, "/data");
    let volume = &pod.volumes.unwrap()[0];
    assert_eq!(volume.name, mount.name);
    assert!(volume.empty_dir.is_some());
}

#[test]
fn serialized_children_name_their_kind_for_server_side_apply() {
    let sts = serde_json::to_value(statefulset(&cluster(3, "redis:7.0")).unwrap()).unwrap();
    assert_eq!(sts["apiVersion"], "apps/v1");
    assert_eq!(sts["kind"], "StatefulSet");
    assert!(sts.get("status").is_none());
    let [headless, ..] = services(&cluster(3, "redis:7.0")).unwrap();
    let svc = serde_json::to_value(headless).unwrap();
    assert_eq!(svc["apiVersion"], "v1");
    assert_eq!(svc["kind"], "Service");
}

#[test]
fn immutable_fields_that_differ_are_named() {
    let cluster = cluster(3, "redis:7.0");
    let desired = statefulset(&cluster).unwrap();
    let mut served = desired.clone();
    // What the API server adds to a claim template must not count as a change.
    let template = |name: &str, size: &str| -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}}
        }))
        .unwrap()
    };
    assert!(immutable_changes(&desired, &served).is_empty());
    fn spec(sts: &mut StatefulSet) -> &mut StatefulSetSpec {
        sts.spec.as_mut().unwrap()
    }

    spec(&mut served).pod_management_policy = None;
    spec(&mut served).service_name = Some("other".to_owned());
    assert_eq!(
        immutable_changes(&desired, &served),
        ["serviceName", "podManagementPolicy"]
    );

    let mut with_claims = desired.clone();
    spec(&mut with_claims).volume_claim_templates = Some(vec![template("data", "1Gi")]);
    let mut served_claims = with_claims.clone();
    let claim = &mut spec(&mut served_claims)
        .volume_claim_templates
        .as_mut()
        .unwrap()[0];
    claim.spec.as_mut().unwrap().volume_mode = Some("Filesystem".to_owned());
    claim.status = Some(Default::default());
    assert!(immutable_changes(&with_claims, &served_claims).is_empty());
    assert_eq!(
        immutable_changes(&with_claims, &desired),
        ["volumeClaimTemplates"],
        "claims added"
    );
    assert_eq!(
        immutable_changes(&desired, &with_claims),
        ["volumeClaimTemplates"],
        "claims removed"
    );
    let mut bigger = with_claims.clone();
    spec(&mut bigger).volume_claim_templates = Some(vec![template("data", "2Gi")]);
    assert_eq!(
        immutable_changes(&bigger, &served_claims),
        ["volumeClaimTemplates"]
    );
}

#[test]
fn role_services_route_pods_of_one_role_through_a_cluster_ip() {
    let [_, primary, replicas] = services(&cluster(3, "redis:7.0")).unwrap();
    // The primary Service follows the label alone (the operator moves it); the replicas one
    // only ready (linked) pods.
    for (service, role, not_ready) in [
        (primary, "primary", Some(true)),
        (replicas, "replica", None),
    ] {
        let spec = service.spec.unwrap();
        // A ClusterIP that stays put while the primary moves.
        assert_eq!(spec.cluster_ip, None);
        assert_eq!(spec.publish_not_ready_addresses, not_ready, "{role}");
        let mut selector = selector_labels(NAME);
        selector.insert(ROLE_LABEL.to_owned(), role.to_owned());
        assert_eq!(spec.selector, Some(selector));
        assert_eq!(spec.ports.unwrap()[0].port, 6379);
    }
    // The pod template never carries the role: the StatefulSet would fight the operator.
    let sts = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let template_labels = sts.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert!(!template_labels.contains_key(ROLE_LABEL));
}

#[test]
fn redis_persists_and_waits_for_a_role() {
    let sts = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let args = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert_eq!(
        args,
        "redis-server --dir /data --appendonly yes --appendfsync everysec \
         --repl-diskless-sync-delay 0 --replicaof 127.0.0.1 1"
    );
}

/// Runs the readiness script with a stand-in `redis-cli` that prints `reply` and exits with
/// `code`; returns whether the probe passed.
fn probe_passes(reply: &str, code: i32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "readiness-{}-{}",
        std::process::id(),
        reply.len() * 10 + code as usize
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = dir.join("redis-cli");
    std::fs::write(
        &cli,
        format!("#!/bin/sh\nprintf '{}'\nexit {code}\n", reply),
    )
    .unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let status = std::process::Command::new("sh")
        .args(["-c", READINESS_SCRIPT])
        .env("PATH", path)
        .status()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    status.success()
}

#[test]
fn readiness_means_ready_in_a_role() {
    let cases = [
        (
            "# Replication\\r\\nrole:master\\r\\nconnected_slaves:0\\r\\n",
            0,
            true,
        ),
        (
            "role:slave\\r\\nmaster_host:10.0.0.1\\r\\nmaster_link_status:up\\r\\n",
            0,
            true,
        ),
        (
            "role:slave\\r\\nmaster_host:10.0.0.1\\r\\nmaster_link_status:down\\r\\n",
            0,
            false,
        ),
        (
            "role:slave\\r\\nmaster_host:127.0.0.1\\r\\nmaster_port:1\\r\\nmaster_link_status:down\\r\\n",
            0,
            false,
        ),
        ("LOADING Redis is loading the dataset in memory", 0, false),
        (
            "Could not connect to Redis at 127.0.0.1:6379: Connection refused",
            1,
            false,
        ),
    ];
    for (reply, code, ready) in cases {
        assert_eq!(probe_passes(reply, code), ready, "{reply}");
    }
}
