use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::fixtures::{NAME, NAMESPACE, UID, cluster};
use crate::names::{
    INSTANCE_LABEL, LIVE_CONFIG_ANNOTATION, MANAGED_BY_LABEL, NAME_LABEL, POD_CONFIG_ANNOTATION,
    REDIS_CONTAINER, SERVICE_CONFIG_ANNOTATION, START_CONFIG_ANNOTATION, selector_string,
};
use crate::observed::{desired_replicas, immutable_changes, is_controlled_by, redis_image};
use crate::pod_config::{foreign_template, pod_config, pod_config_of};
use crate::redis::scripts;

/// The StatefulSet of a first reconcile (`initial_statefulset`).
fn statefulset(cluster: &RedisCluster) -> Result<StatefulSet> {
    initial_statefulset(cluster)
}

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
        ["sh", "-c", &scripts::readiness(scripts::Login::None)]
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
        "redis-server --dir /data --appendonly yes --appendfsync everysec --save  \
         --repl-diskless-sync-delay 0 --replicaof 127.0.0.1 1"
    );
}

/// Runs `script` with a stand-in `redis-cli` whose n-th call prints `replies[n]` (the last one
/// from then on) and exits with its code; returns whether the script passed and how many
/// times it called `redis-cli`.
fn run_script(script: &str, replies: &[(&str, i32)]) -> (bool, usize) {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "probe-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (index, (reply, code)) in replies.iter().enumerate() {
        std::fs::write(dir.join(format!("reply-{index}")), format!("{reply}\n")).unwrap();
        std::fs::write(dir.join(format!("code-{index}")), code.to_string()).unwrap();
    }
    let last = replies.len() - 1;
    let cli = dir.join("redis-cli");
    std::fs::write(
        &cli,
        format!(
            "#!/bin/sh\ncd {dir}\nn=$(cat calls 2>/dev/null || echo 0); echo $((n+1)) > calls\n\
             [ $n -gt {last} ] && n={last}\nprintf \"$(cat reply-$n)\"\nexit $(cat code-$n)\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .env("PATH", path)
        .status()
        .unwrap();
    let calls =
        std::fs::read_to_string(dir.join("calls")).map_or(0, |calls| calls.trim().parse().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    (status.success(), calls)
}

fn probe_passes(reply: &str, code: i32) -> bool {
    run_script(&scripts::readiness(scripts::Login::None), &[(reply, code)]).0
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

#[test]
fn startup_waits_until_redis_has_loaded_its_data() {
    let cases = [
        ("PONG", 0, true),
        ("LOADING Redis is loading the dataset in memory", 0, false),
        (
            "Could not connect to Redis at 127.0.0.1:6379: Connection refused",
            1,
            false,
        ),
    ];
    for (reply, code, started) in cases {
        assert_eq!(
            run_script(&scripts::startup(scripts::Login::None), &[(reply, code)]).0,
            started,
            "{reply}"
        );
    }
}

#[test]
fn a_primary_with_replicas_waits_before_stopping_until_it_handed_over() {
    let primary = "role:master\\r\\nconnected_slaves:2\\r\\n";
    let alone = "role:master\\r\\nconnected_slaves:0\\r\\n";
    let replica = "role:slave\\r\\nmaster_link_status:up\\r\\n";
    let gone = "Could not connect to Redis";
    // (replies in turn, calls expected): it stops once it is a replica, has no replica to
    // hand over to, or does not answer.
    let cases = [
        (vec![(replica, 0)], 1),
        (vec![(alone, 0)], 1),
        (vec![(gone, 1)], 1),
        (vec![(primary, 0), (primary, 0), (replica, 0)], 3),
        (vec![(primary, 0), (gone, 1)], 2),
    ];
    for (replies, calls) in cases {
        assert_eq!(
            run_script(&scripts::pre_stop(scripts::Login::None), &replies),
            (true, calls),
            "{replies:?}"
        );
    }
}

#[test]
fn production_pods_are_spread_bounded_and_stop_gracefully() {
    let sts = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(60));
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none(),
        "soft only"
    );
    assert_eq!(
        preferred[0].pod_affinity_term.topology_key,
        "kubernetes.io/hostname"
    );
    let spread = &pod.topology_spread_constraints.unwrap()[0];
    assert_eq!(
        (
            spread.topology_key.as_str(),
            spread.when_unsatisfiable.as_str(),
            spread.max_skew
        ),
        ("kubernetes.io/hostname", "ScheduleAnyway", 1)
    );
    for selector in [
        &preferred[0].pod_affinity_term.label_selector,
        &spread.label_selector,
    ] {
        assert_eq!(
            selector.as_ref().unwrap().match_labels,
            Some(selector_labels(NAME))
        );
    }
    let redis = &pod.containers[0];
    let pre_stop = redis.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        pre_stop.exec.as_ref().unwrap().command.as_deref().unwrap(),
        ["sh", "-c", &scripts::pre_stop(scripts::Login::None)]
    );
    let startup = redis.startup_probe.as_ref().unwrap();
    assert!(startup.period_seconds.unwrap() * startup.failure_threshold.unwrap() >= 1800);
}

/// The cluster with storage, resources and a policy set as given.
fn production(
    storage: Option<&str>,
    memory_limit: Option<&str>,
    policy: Option<rediscluster_crd::MaxmemoryPolicy>,
) -> rediscluster_crd::RedisCluster {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.spec.storage = storage.map(|size| rediscluster_crd::Storage {
        size: size.to_owned(),
        storage_class_name: Some("standard".to_owned()),
        persistent_volume_claim_retention_policy: None,
    });
    cluster.spec.resources = memory_limit.map(|limit| rediscluster_crd::Resources {
        requests: None,
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(limit.to_owned()),
        )])),
    });
    cluster.spec.maxmemory_policy = policy;
    cluster
}

#[test]
fn storage_makes_a_claim_per_pod_with_the_retention_policy() {
    let sts = statefulset(&production(Some("1Gi"), None, None)).unwrap();
    let spec = sts.spec.unwrap();
    let templates = spec.volume_claim_templates.unwrap();
    assert_eq!(templates.len(), 1);
    let claim = &templates[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        claim.metadata.labels, None,
        "the StatefulSet adds its selector's"
    );
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("standard"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"],
        Quantity("1Gi".to_owned())
    );
    let retention = spec.persistent_volume_claim_retention_policy.unwrap();
    assert_eq!(
        (
            retention.when_deleted.as_deref(),
            retention.when_scaled.as_deref()
        ),
        (Some("Delete"), Some("Retain"))
    );
    // The claim is the data volume: no emptyDir beside it.
    let pod = spec.template.spec.unwrap();
    assert!(pod.volumes.is_none());
    assert_eq!(
        pod.containers[0].volume_mounts.as_ref().unwrap()[0].name,
        "data"
    );

    let without = statefulset(&cluster(3, "redis:7.0")).unwrap().spec.unwrap();
    assert!(without.volume_claim_templates.is_none());
    assert!(without.persistent_volume_claim_retention_policy.is_none());
}

#[test]
fn a_memory_limit_gives_redis_maxmemory_and_a_policy() {
    use rediscluster_crd::MaxmemoryPolicy;
    let args = |cluster: &rediscluster_crd::RedisCluster| {
        let sts = statefulset(cluster).unwrap();
        sts.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ")
    };
    // 80% of what 24Mi leaves of the limit: 64Mi gives 32Mi.
    let cases = [
        (
            production(None, Some("64Mi"), None),
            Some("33554432 --maxmemory-policy allkeys-lru"),
        ),
        (
            production(Some("1Gi"), Some("64Mi"), None),
            Some("33554432 --maxmemory-policy noeviction"),
        ),
        (
            production(
                Some("1Gi"),
                Some("64Mi"),
                Some(MaxmemoryPolicy::VolatileTtl),
            ),
            Some("33554432 --maxmemory-policy volatile-ttl"),
        ),
        (
            production(Some("1Gi"), None, Some(MaxmemoryPolicy::AllkeysLfu)),
            None,
        ),
        (
            production(None, Some("1Gi"), None),
            Some("838860800 --maxmemory-policy allkeys-lru"),
        ),
    ];
    for (cluster, expected) in cases {
        let args = args(&cluster);
        match expected {
            Some(expected) => assert!(
                args.contains(&format!("--maxmemory {expected} --replicaof")),
                "{args}"
            ),
            None => assert!(!args.contains("--maxmemory"), "{args}"),
        }
    }
    // The spec's resources replace the default request entirely: a limit below it would
    // otherwise be refused.
    let sts = statefulset(&production(None, Some("64Mi"), None)).unwrap();
    let resources = sts.spec.unwrap().template.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    assert_eq!(resources.requests, None);
    assert_eq!(
        resources.limits.unwrap()["memory"],
        Quantity("64Mi".to_owned())
    );
}

#[test]
fn only_what_needs_a_new_pod_changes_its_config() {
    let config = |cluster: &rediscluster_crd::RedisCluster| pod_config(&cluster.spec, None, None);
    let plain = cluster(3, "redis:7.0");
    let base = config(&plain);
    let mut scaled = plain.clone();
    scaled.spec.replicas = 5;
    assert_eq!(config(&scaled), base, "replicas");
    let mut resized = production(Some("1Gi"), None, None);
    let with_storage = config(&resized);
    resized.spec.storage.as_mut().unwrap().size = "2Gi".to_owned();
    assert_eq!(
        config(&resized),
        with_storage,
        "a size grows the claims in place"
    );
    for changed in [
        cluster(3, "redis:7.2"),
        production(Some("1Gi"), None, None),
        production(None, Some("64Mi"), None),
        production(
            None,
            Some("64Mi"),
            Some(rediscluster_crd::MaxmemoryPolicy::Noeviction),
        ),
    ] {
        assert_ne!(config(&changed), base, "{:?}", changed.spec);
    }
    // Without a memory limit a policy changes nothing Redis does.
    assert_eq!(
        config(&production(
            None,
            None,
            Some(rediscluster_crd::MaxmemoryPolicy::Noeviction)
        )),
        base
    );

    // The template carries it; a pod of an earlier release, made before the annotation
    // existed, is judged by its image alone.
    let sts = statefulset(&plain).unwrap();
    let annotations = sts
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap();
    assert_eq!(annotations[POD_CONFIG_ANNOTATION], base);
    // A pod of the replication release runs with `--replicaof`; one of the release before
    // it ran Redis with no arguments, as unrelated primaries, and must be replaced.
    let earlier = |image: &str, args: &[&str]| Pod {
        spec: Some(PodSpec {
            containers: vec![Container {
                name: REDIS_CONTAINER.to_owned(),
                image: Some(image.to_owned()),
                args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let replicating = [
        "redis-server",
        "--appendonly",
        "yes",
        "--replicaof",
        "127.0.0.1",
        "1",
    ];
    assert_eq!(
        pod_config_of(&earlier("redis:7.0", &replicating)),
        Some(base.clone())
    );
    assert_ne!(
        pod_config_of(&earlier("redis:6.2", &replicating)),
        Some(base.clone())
    );
    assert_ne!(pod_config_of(&earlier("redis:7.0", &[])), Some(base));
    assert_eq!(pod_config_of(&Pod::default()), None);
}

#[test]
fn what_others_add_to_the_pod_template_is_part_of_the_config() {
    let cluster = cluster(3, "redis:7.0");
    let ours = statefulset(&cluster).unwrap();
    assert_eq!(
        foreign_template(&ours, NAME, None),
        None,
        "nothing but ours"
    );
    let mut injected = ours.clone();
    let template = &mut injected.spec.as_mut().unwrap().template;
    template.spec.as_mut().unwrap().containers.push(Container {
        name: "sidecar".to_owned(),
        image: Some("proxy:1".to_owned()),
        ..Container::default()
    });
    let sidecar = foreign_template(&injected, NAME, None);
    assert!(sidecar.is_some());
    let mut restarted = ours.clone();
    restarted
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_default()
        .insert(
            "kubectl.kubernetes.io/restartedAt".to_owned(),
            "now".to_owned(),
        );
    let restart = foreign_template(&restarted, NAME, None);
    assert!(restart.is_some() && restart != sidecar);
    // Changes to the operator's own fields are not others'.
    let mut changed = ours;
    let pod = changed
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap();
    pod.containers[0].args = Some(vec!["redis-server".to_owned()]);
    pod.affinity = None;
    changed
        .spec
        .as_mut()
        .unwrap()
        .template
        .metadata
        .as_mut()
        .unwrap()
        .annotations
        .get_or_insert_default()
        .insert(POD_CONFIG_ANNOTATION.to_owned(), "another".to_owned());
    assert_eq!(foreign_template(&changed, NAME, None), None);
    // And the config follows.
    let spec = &cluster.spec;
    assert_ne!(
        pod_config(spec, sidecar.as_deref(), None),
        pod_config(spec, None, None)
    );
    assert_ne!(
        pod_config(spec, sidecar.as_deref(), None),
        pod_config(spec, restart.as_deref(), None)
    );
}

#[test]
fn a_disruption_budget_only_with_two_pods_or_more() {
    assert!(
        disruption_budget(&cluster(1, "redis:7.0"))
            .unwrap()
            .is_none()
    );
    let budget = disruption_budget(&cluster(2, "redis:7.0"))
        .unwrap()
        .unwrap();
    assert!(is_controlled_by(&budget, UID));
    let spec = budget.spec.unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_available, None);
    assert_eq!(
        spec.selector.unwrap().match_labels,
        Some(selector_labels(NAME))
    );
}

/// With TLS, Redis listens with TLS on its port and nowhere else, replicates over it, and the
/// probes speak TLS too; the Secret is mounted; the pods are made for it.
#[test]
fn a_cluster_with_tls_serves_only_tls_and_its_probes_speak_it() {
    let mut with_tls = cluster(3, "redis:7.0");
    with_tls.spec.tls = Some(rediscluster_crd::Tls {
        secret_name: "certs".to_owned(),
    });
    let secret = crate::auth::PasswordSecret {
        name: "cache-auth".to_owned(),
        key: "password".to_owned(),
        previous_seconds: 600,
        generated: true,
    };
    let credentials = crate::fixtures::credentials();
    let auth = |tls| PodAuth {
        secret: &secret,
        credentials: &credentials,
        tls,
    };
    let build = |tls| {
        let sts = super::statefulset(&with_tls, "config", 3, Some(auth(tls))).unwrap();
        sts.spec.unwrap().template.spec.unwrap()
    };
    let (plain, secured) = (build(None), build(Some("certs")));
    let args = secured.containers[0].args.clone().unwrap().join(" ");
    assert!(
        args.contains(
            "--port 0 --tls-port 6379 --tls-cert-file /etc/redis/tls/tls.crt \
             --tls-key-file /etc/redis/tls/tls.key --tls-ca-cert-file /etc/redis/tls/ca.crt \
             --tls-auth-clients no --tls-replication yes"
        ),
        "{args}"
    );
    assert!(
        !plain.containers[0]
            .args
            .clone()
            .unwrap()
            .join(" ")
            .contains("tls")
    );
    let volume = secured
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "tls")
        .unwrap();
    assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("certs"));
    let readiness = secured.containers[0]
        .readiness_probe
        .clone()
        .unwrap()
        .exec
        .unwrap();
    let script = readiness.command.unwrap().join(" ");
    assert!(script.contains("redis-cli --tls --cacert /etc/redis/tls/ca.crt --user probe"));
    assert!(script.contains("config set tls-cert-file"), "{script}");
    assert_ne!(
        pod_config(&with_tls.spec, None, Some(&secret)),
        pod_config(&cluster(3, "redis:7.0").spec, None, Some(&secret)),
        "TLS on replaces the pods"
    );
}

/// `cluster` with `spec.pod`, `spec.service` and `spec.config` from JSON.
fn with_settings(
    pod: serde_json::Value,
    service: serde_json::Value,
    config: serde_json::Value,
) -> RedisCluster {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.spec.pod = serde_json::from_value(pod).unwrap();
    cluster.spec.service = serde_json::from_value(service).unwrap();
    cluster.spec.config = serde_json::from_value(config).unwrap();
    cluster
}

#[test]
fn spec_pod_reaches_the_pods_and_replaces_the_default_spreading() {
    let custom = with_settings(
        serde_json::json!({
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "redis", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
            "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone",
                "whenUnsatisfiable": "DoNotSchedule"}],
            "priorityClassName": "critical",
            "serviceAccountName": "redis",
            "labels": {"team": "cache", "app.kubernetes.io/name": "not-redis"},
            "annotations": {"backup": "daily"}
        }),
        serde_json::Value::Null,
        serde_json::Value::Null,
    );
    let template = statefulset(&custom).unwrap().spec.unwrap().template;
    let pod = template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["disk"], "ssd");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("redis"));
    let affinity = pod.affinity.unwrap();
    assert!(affinity.node_affinity.is_some() && affinity.pod_anti_affinity.is_none());
    let spread = pod.topology_spread_constraints.unwrap();
    assert_eq!((spread.len(), spread[0].topology_key.as_str()), (1, "zone"));
    assert_eq!(pod.priority_class_name.as_deref(), Some("critical"));
    assert_eq!(pod.service_account_name.as_deref(), Some("redis"));
    // Still no token for Redis, and the operator's security context stays.
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(pod.security_context.unwrap().run_as_non_root.unwrap());
    let meta = template.metadata.unwrap();
    let labels = meta.labels.unwrap();
    assert_eq!(labels["team"], "cache");
    assert_eq!(labels[NAME_LABEL], "redis", "the operator's labels win");
    let annotations = meta.annotations.unwrap();
    assert_eq!(annotations["backup"], "daily");
    assert!(annotations.contains_key(POD_CONFIG_ANNOTATION));

    // Without spec.pod: the soft spreading over nodes.
    let plain = statefulset(&cluster(3, "redis:7.0")).unwrap();
    let pod = plain.spec.unwrap().template.spec.unwrap();
    assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
}

#[test]
fn spec_pod_rolls_the_pods_and_is_not_counted_as_someone_elses() {
    let plain = cluster(3, "redis:7.0");
    let pinned = with_settings(
        serde_json::json!({"nodeSelector": {"disk": "ssd"}, "labels": {"team": "cache"}}),
        serde_json::Value::Null,
        serde_json::Value::Null,
    );
    assert_ne!(
        pod_config(&pinned.spec, None, None),
        pod_config(&plain.spec, None, None),
        "a change of spec.pod replaces the pods"
    );
    let ours = statefulset(&pinned).unwrap();
    assert_eq!(
        foreign_template(&ours, NAME, pinned.spec.pod.as_ref()),
        None,
        "what spec.pod sets is the spec's"
    );
    // Dropped from the spec, but the last apply set them: the StatefulSet says so until the
    // apply that takes them away.
    assert_eq!(
        ours.annotations()[crate::names::POD_FIELDS_ANNOTATION],
        "nodeSelector,label:team"
    );
    assert_eq!(foreign_template(&ours, NAME, None), None);
    let mut edited = ours.clone();
    edited.annotations_mut().clear();
    assert!(
        foreign_template(&edited, NAME, None).is_some(),
        "someone else's"
    );
}

#[test]
fn spec_config_reaches_redis_and_only_restart_directives_roll() {
    let config = |directives: serde_json::Value| {
        with_settings(serde_json::Value::Null, serde_json::Value::Null, directives)
    };
    let events = config(serde_json::json!({"notify-keyspace-events": "KEA"}));
    let args = statefulset(&events)
        .unwrap()
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    let at = args
        .iter()
        .position(|a| a == "--notify-keyspace-events")
        .unwrap();
    assert_eq!(args[at + 1], "KEA");
    assert!(
        at < args.iter().position(|a| a == "--replicaof").unwrap(),
        "the operator's own arguments come last"
    );
    let plain = pod_config(&cluster(3, "redis:7.0").spec, None, None);
    assert_eq!(
        pod_config(&events.spec, None, None),
        plain,
        "set on the running Redis: no new pods"
    );
    let databases = config(serde_json::json!({"Databases": "32"}));
    assert_ne!(
        pod_config(&databases.spec, None, None),
        plain,
        "only at start"
    );
}

#[test]
fn spec_service_sets_the_type_and_annotations_of_the_role_services() {
    let exposed = with_settings(
        serde_json::Value::Null,
        serde_json::json!({"type": "NodePort", "annotations": {"lb": "internal"}}),
        serde_json::Value::Null,
    );
    let [headless, primary, replicas] = services(&exposed).unwrap();
    for service in [&primary, &replicas] {
        assert_eq!(
            service.spec.as_ref().unwrap().type_.as_deref(),
            Some("NodePort")
        );
        assert_eq!(
            service.metadata.annotations.as_ref().unwrap()["lb"],
            "internal"
        );
    }
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    // Back to the default: the type is said, and the digest differs, so that the apply that
    // drops the annotation is made.
    let [_, plain, _] = services(&cluster(3, "redis:7.0")).unwrap();
    assert_eq!(
        plain.spec.as_ref().unwrap().type_.as_deref(),
        Some("ClusterIP")
    );
    let digest =
        |s: &Service| s.metadata.annotations.as_ref().unwrap()[SERVICE_CONFIG_ANNOTATION].clone();
    assert_ne!(digest(&plain), digest(&primary));
    assert!(!crate::drift::is_applied(&plain, &primary));
}

#[test]
fn the_live_config_is_given_to_each_run_of_redis_once_and_a_dropped_directive_rolls() {
    use crate::pod_config::{LiveConfig, PodLiveConfig};
    let live = |directives: serde_json::Value| {
        LiveConfig::of(
            &with_settings(serde_json::Value::Null, serde_json::Value::Null, directives).spec,
        )
    };
    let events = live(serde_json::json!({"Notify-Keyspace-Events": "KEA", "databases": "4"}));
    assert_eq!(
        events.directives.keys().collect::<Vec<_>>(),
        ["notify-keyspace-events"],
        "lower case; databases only at start"
    );
    let pod = |annotations: &[(&str, String)]| {
        let mut pod = Pod::default();
        for (key, value) in annotations {
            pod.annotations_mut()
                .insert((*key).to_owned(), value.clone());
        }
        PodLiveConfig::of(&pod)
    };
    // A pod made before spec.config existed has no directive in effect.
    let bare = pod(&[]);
    assert!(bare.in_effect(&LiveConfig::default(), "run1"));
    assert!(!bare.in_effect(&events, "run1"));
    // Started with it (the template's annotation): in effect for every run of its Redis.
    let started = pod(&[(START_CONFIG_ANNOTATION, events.start_annotation())]);
    assert!(started.in_effect(&events, "run1") && started.in_effect(&events, "run2"));
    // Given at run time: only to that run; a restarted Redis starts from its arguments.
    let given = pod(&[(
        LIVE_CONFIG_ANNOTATION,
        events.live_annotation("run1", bare.carried()),
    )]);
    assert!(given.in_effect(&events, "run1"));
    assert!(!given.in_effect(&events, "run2"));
    let changed = live(serde_json::json!({"notify-keyspace-events": "Ex"}));
    assert!(!given.in_effect(&changed, "run1"), "a new value");
    // Dropping a directive needs a new pod: Redis has no way back to its default.
    let none = LiveConfig::default();
    assert!(given.carries_dropped(&none) && started.carries_dropped(&none));
    assert!(!given.carries_dropped(&changed) && !bare.carries_dropped(&none));
}
