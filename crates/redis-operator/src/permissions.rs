//! Every Kubernetes API permission the operator uses, in one place. Two tests hold it true:
//! the RBAC manifests in `config/` must grant exactly these rules (the namespaced variant reuses
//! `config/rbac/role.yaml`), and every request the mocked-API controller tests send must be one
//! that a rule here allows (`allows`, checked by their fake API server). A reconcile that starts
//! using a new verb or resource therefore fails the ordinary test run until it is listed here
//! and in the manifests; calls made only outside reconciles (watches, the Lease) are covered by
//! the manifest test alone.

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
        verbs: &["list", "watch", "patch", "delete"],
        why: "find each pod's Redis and spot pods stuck in image pull or crash loops; patch \
              only the role label (cache.example.com/role) that routes the primary and \
              replicas Services; delete a pod made for an earlier spec, one at a time and the \
              primary only after it handed over, because the operator rolls its StatefulSets \
              itself (OnDelete)",
    },
    Permission {
        group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        why: "create and apply the PodDisruptionBudget that lets evictions take one Redis pod \
              at a time; get only when a create finds the name taken; delete it when the \
              cluster scales to a single pod",
    },
    Permission {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "watch", "patch"],
        why: "see the claims the StatefulSet made from the storage template; patch only their \
              storage request, when spec.storage.size grows",
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

/// Needed only when the operator runs outside the cluster with `--redis-route port-forward`
/// (the default there): it then reaches each pod's Redis through the API server. The deployed
/// operator reaches pods directly, so its ServiceAccount is not granted this; the kubeconfig
/// user of an operator run from outside needs it. A WebSocket port-forward is a GET, which
/// API servers before 1.30 authorize as `get` and later ones as `create` too.
pub const OUT_OF_CLUSTER: &[Permission] = &[Permission {
    group: "",
    resource: "pods/portforward",
    verbs: &["get", "create"],
    why: "reach each pod's Redis where the pod network is not routable (kind from the host)",
}];

/// Whether a request (method, path, query) is one the rules above allow: the RBAC verb and
/// resource are derived from the URL the way the API server's authorizer derives them.
#[cfg(test)]
pub fn allows(method: &str, path: &str, query: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/... or /apis/GROUP/VERSION/namespaces/NS/...
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Err(format!("not an API path: {path}")),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, subresource] => (format!("{resource}/{subresource}"), true),
        _ => return Err(format!("unexpected path: {path}")),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(format!("unexpected method {method} {path}")),
    };
    let allowed = WATCHED_NAMESPACES
        .iter()
        .chain(OPERATOR_NAMESPACE)
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{method} {path} needs {verb} on {resource} in group {group:?}, which permissions.rs does not list"
        ))
    }
}

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
    fn requests_map_to_the_verbs_the_authorizer_checks() {
        let ns = "/api/v1/namespaces/a";
        let apps = "/apis/apps/v1/namespaces/a";
        let cases = [
            ("POST", format!("{apps}/statefulsets"), "", true),
            ("PATCH", format!("{apps}/statefulsets/x"), "", true),
            ("DELETE", format!("{apps}/statefulsets/x"), "", true),
            ("DELETE", format!("{apps}/statefulsets"), "", false),
            ("PUT", format!("{apps}/statefulsets/x"), "", false),
            ("GET", format!("{ns}/pods"), "watch=true", true),
            ("GET", format!("{ns}/pods/x"), "", false),
            ("PATCH", format!("{ns}/pods/x"), "", true),
            ("DELETE", format!("{ns}/pods/x"), "", true),
            ("DELETE", format!("{ns}/pods"), "", false),
            ("GET", format!("{ns}/secrets"), "", false),
            (
                "PATCH",
                "/apis/cache.example.com/v1alpha1/namespaces/a/redisclusters/x/status".to_owned(),
                "",
                true,
            ),
            (
                "PATCH",
                "/apis/cache.example.com/v1alpha1/namespaces/a/redisclusters/x".to_owned(),
                "",
                false,
            ),
        ];
        for (method, path, query, allowed) in cases {
            assert_eq!(
                allows(method, &path, query).is_ok(),
                allowed,
                "{method} {path}"
            );
        }
    }

    /// Every rule says why the operator needs it; and the port-forward that only an operator
    /// outside the cluster uses is granted to no ServiceAccount.
    #[test]
    fn every_rule_says_why_and_port_forward_stays_out_of_the_manifests() {
        let rules = WATCHED_NAMESPACES
            .iter()
            .chain(OPERATOR_NAMESPACE)
            .chain(OUT_OF_CLUSTER);
        for rule in rules {
            assert!(rule.why.len() > 20, "{rule:?}");
        }
        let granted = manifest_grants("config/rbac/role.yaml", "ClusterRole");
        assert!(grants(OUT_OF_CLUSTER).is_disjoint(&granted));
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
