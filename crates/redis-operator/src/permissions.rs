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
    /// The only objects it applies to (RBAC's `resourceNames`), or any when empty.
    pub names: &'static [&'static str],
    pub why: &'static str,
}

/// Needed in every namespace the operator watches (a ClusterRole, or a Role per namespace).
pub const WATCHED_NAMESPACES: &[Permission] = &[
    Permission {
        group: "cache.example.com",
        resource: "redisclusters",
        verbs: &["list", "watch"],
        names: &[],
        why: "the RedisCluster cache, and the start-up check that the CRD is served",
    },
    Permission {
        group: "cache.example.com",
        resource: "redisclusters/status",
        verbs: &["patch"],
        names: &[],
        why: "server-side apply of status",
    },
    Permission {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        names: &[],
        why: "create and apply the StatefulSet; get only when a create finds the name taken; \
              delete (orphaning its pods) only to recreate it when an immutable field must change",
    },
    Permission {
        group: "",
        resource: "services",
        verbs: &["get", "list", "watch", "create", "patch"],
        names: &[],
        why: "create and apply the headless Service; get only when a create finds the name taken",
    },
    Permission {
        group: "",
        resource: "pods",
        verbs: &["list", "watch", "patch", "delete"],
        names: &[],
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
        names: &[],
        why: "create and apply the PodDisruptionBudget that lets evictions take one Redis pod \
              at a time; get only when a create finds the name taken; delete it when the \
              cluster scales to a single pod",
    },
    Permission {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "watch", "patch"],
        names: &[],
        why: "see the claims the StatefulSet made from the storage template; patch only their \
              storage request, when spec.storage.size grows",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["create"],
        names: &[],
        why: "make the Secret <name>-auth with a random password for a cluster whose \
              spec.auth names no Secret, once, before its pods are made with auth; never \
              get, list or watch: the pods read their password Secret through the kubelet",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        names: &[],
        why: "events on RedisClusters; patch folds repeats into a series",
    },
];

/// Needed only in the operator's own namespace.
pub const OPERATOR_NAMESPACE: &[Permission] = &[
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "list", "watch", "create", "patch"],
        names: &[],
        why: "leader election: read, create and apply the Lease; a standby watches it to take over at once",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        names: &[CREDENTIALS_SECRET],
        why: "read the operator's key (auth::load_credentials), and no other Secret",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["create"],
        names: &[],
        why: "make the operator's key the first time it starts (RBAC cannot restrict a create \
              by name; it creates nothing else here)",
    },
];

/// The default name of the Secret holding the operator's key (`--credentials-secret`).
pub const CREDENTIALS_SECRET: &str = "redis-operator-credentials";

/// Needed only when the operator runs outside the cluster with `--redis-route port-forward`
/// (the default there): it then reaches each pod's Redis through the API server. The deployed
/// operator reaches pods directly, so its ServiceAccount is not granted this; the kubeconfig
/// user of an operator run from outside needs it. A WebSocket port-forward is a GET, which
/// API servers before 1.30 authorize as `get` and later ones as `create` too.
pub const OUT_OF_CLUSTER: &[Permission] = &[Permission {
    group: "",
    resource: "pods/portforward",
    verbs: &["get", "create"],
    names: &[],
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
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some(*name)),
        [resource, name, subresource] => (format!("{resource}/{subresource}"), Some(*name)),
        _ => return Err(format!("unexpected path: {path}")),
    };
    let verb = match (method, name.is_some()) {
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
        .any(|p| {
            p.group == group
                && p.resource == resource
                && p.verbs.contains(&verb)
                && (p.names.is_empty() || name.is_some_and(|name| p.names.contains(&name)))
        });
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

    /// (group, resource, verb, resource names joined by commas, empty for any).
    type Grants = BTreeSet<(String, String, String, String)>;

    fn grants(permissions: &[Permission]) -> Grants {
        permissions
            .iter()
            .flat_map(|p| {
                p.verbs.iter().map(|verb| {
                    (
                        p.group.to_owned(),
                        p.resource.to_owned(),
                        (*verb).to_owned(),
                        p.names.join(","),
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
            let names = rule["resourceNames"]
                .as_array()
                .map(|names| {
                    let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                    names.join(",")
                })
                .unwrap_or_default();
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        let triple = (
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                            verb.as_str().unwrap().to_owned(),
                            names.clone(),
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
            ("POST", format!("{ns}/secrets"), "", true),
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

    /// No wildcard anywhere; and no Secret is ever read, listed or watched but the operator's
    /// own key, by name: a cluster's password Secret is read by its pods, through the kubelet.
    #[test]
    fn no_wildcards_and_no_secret_read_but_the_operators_key() {
        let all = grants(WATCHED_NAMESPACES)
            .union(&grants(OPERATOR_NAMESPACE))
            .cloned()
            .collect::<Grants>();
        for (group, resource, verb, names) in &all {
            assert!(resource != "*" && verb != "*" && group != "*");
            if resource == "secrets" && verb != "create" {
                assert_eq!((verb.as_str(), names.as_str()), ("get", CREDENTIALS_SECRET));
            }
        }
        assert!(
            allows(
                "GET",
                "/api/v1/namespaces/a/secrets/redis-operator-credentials",
                ""
            )
            .is_ok()
        );
        assert!(allows("GET", "/api/v1/namespaces/a/secrets/cache-auth", "").is_err());
        assert!(allows("GET", "/api/v1/namespaces/a/secrets", "").is_err());
    }
}
