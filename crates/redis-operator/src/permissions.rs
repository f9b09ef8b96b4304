//! Every Kubernetes API permission the operator uses, in one place. The RBAC manifests in
//! `config/` are tested against these lists (the namespaced variant reuses `config/rbac/role.yaml`), so a new API call without a matching rule (or a
//! rule nothing uses) fails the ordinary test run.

/// One RBAC rule: what the code does with a resource, and why.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub why: &'static str,
}

/// Needed in every namespace the operator watches (a ClusterRole, or a Role per namespace).
pub const WATCHED_NAMESPACES: &[Permission] = &[
    Permission {
        group: "cache.example.com",
        resource: "redisclusters",
        verbs: &["list", "watch"],
        why: "the RedisCluster cache, and the start-up check that the CRD is served",
    },
    Permission {
        group: "cache.example.com",
        resource: "redisclusters/status",
        verbs: &["patch"],
        why: "server-side apply of status",
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "create and apply the StatefulSet; get only when a create finds the name taken; \
              delete (orphaning its pods) only to recreate it when an immutable field must change",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["get", "list", "watch", "create", "patch"],
        why: "create and apply the headless Service; get only when a create finds the name taken",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch"],
        why: "spot pods stuck in image pull or crash loops",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        why: "events on RedisClusters; patch folds repeats into a series",
    },
];

/// Needed only in the operator's own namespace.
pub const OPERATOR_NAMESPACE: &[Permission] = &[Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "list", "watch", "create", "patch"],
    why: "leader election: read, create and apply the Lease; a standby watches it to take over at once",
}];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use serde_json::Value;

    use super::*;

    type Grants = BTreeSet<(String, String, String)>;

    fn grants(permissions: &[Permission]) -> Grants {
        permissions
            .iter()
            .flat_map(|p| {
                p.verbs.iter().map(|verb| {
                    (
                        p.group.to_owned(),
                        p.resource.to_owned(),
                        (*verb).to_owned(),
                    )
                })
            })
            .collect()
    }

    /// The (group, resource, verb) triples a Role or ClusterRole manifest grants.
    fn manifest_grants(relative: &str, kind: &str) -> Grants {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative);
        let text = std::fs::read_to_string(&path).unwrap();
        let role: Value = serde_norway::from_str(&text).unwrap();
        assert_eq!(role["kind"], kind, "{relative}");
        let mut grants = Grants::new();
        for rule in role["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        let triple = (
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                        );
                        assert!(
                            grants.insert(triple.clone()),
                            "{relative}: {triple:?} granted twice"
                        );
                    }
                }
            }
        }
        grants
    }

    #[test]
    fn cluster_role_grants_exactly_what_the_code_uses() {
        assert_eq!(
            manifest_grants("config/rbac/role.yaml", "ClusterRole"),
            grants(WATCHED_NAMESPACES)
        );
    }

    #[test]
    fn leader_election_role_grants_exactly_what_the_code_uses() {
        assert_eq!(
            manifest_grants("config/rbac/leader_election_role.yaml", "Role"),
            grants(OPERATOR_NAMESPACE)
        );
    }

    #[test]
    fn nothing_grants_secrets_or_wildcards() {
        let all = grants(WATCHED_NAMESPACES)
            .union(&grants(OPERATOR_NAMESPACE))
            .cloned()
            .collect::<Grants>();
        for (group, resource, verb) in &all {
            assert!(resource != "secrets" && resource != "*" && verb != "*" && group != "*");
        }
    }
}
