//! Does an object already say everything we would apply? Deciding this from the cache is what
//! lets a reconcile with nothing to do send no request at all.

use serde::Serialize;
use serde_json::Value;

/// True when every field set in `desired` has the same value in `observed`. Fields only the
/// observed object has (server defaults, status, other managers' fields) do not count as drift.
pub fn is_applied<K: Serialize>(desired: &K, observed: &K) -> bool {
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(desired), Ok(observed)) => is_subset(&desired, &observed),
        // Unreachable for Kubernetes types; assuming drift only costs one idempotent apply.
        _ => false,
    }
}

/// `desired ⊆ observed`: objects by key, scalars by value, and lists by their kind:
/// - lists of objects (containers, volumes, ports, env, tolerations) are keyed lists that other
///   field managers may add to (a sidecar injector, a policy engine): every desired element must
///   match an observed one, in order, and elements someone else added are theirs, not drift;
/// - lists of scalars (args, command, capabilities) are atomic: server-side apply replaces them
///   whole, so they must be equal in length and element by element.
///
/// An object element we stopped setting stays until something else changes; the operator only
/// ever adds such elements, so that costs nothing today.
fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(desired), Value::Object(observed)) => desired.iter().all(|(key, value)| {
            observed
                .get(key)
                .is_some_and(|observed| is_subset(value, observed))
        }),
        (Value::Array(desired), Value::Array(observed))
            if desired.iter().chain(observed).all(Value::is_object) =>
        {
            let mut observed = observed.iter();
            desired
                .iter()
                .all(|d| observed.by_ref().any(|o| is_subset(d, o)))
        }
        (Value::Array(desired), Value::Array(observed)) => {
            desired.len() == observed.len()
                && desired.iter().zip(observed).all(|(d, o)| is_subset(d, o))
        }
        _ => desired == observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_rules() {
        let cases = [
            ("equal scalars", json!(3), json!(3), true),
            ("different scalars", json!(3), json!(5), false),
            (
                "extra observed keys",
                json!({"a": 1}),
                json!({"a": 1, "b": 2}),
                true,
            ),
            (
                "missing key",
                json!({"a": 1, "b": 2}),
                json!({"a": 1}),
                false,
            ),
            (
                "nested change",
                json!({"a": {"b": 1}}),
                json!({"a": {"b": 2, "c": 3}}),
                false,
            ),
            (
                "list element defaults",
                json!([{"a": 1}]),
                json!([{"a": 1, "b": 2}]),
                true,
            ),
            ("scalar list grew", json!([1]), json!([1, 2]), false),
            ("scalar list shrank", json!([1, 2]), json!([1]), false),
            ("scalar list reordered", json!([1, 2]), json!([2, 1]), false),
            (
                "someone else's container added after ours",
                json!([{"name": "redis"}]),
                json!([{"name": "redis", "image": "r"}, {"name": "sidecar"}]),
                true,
            ),
            (
                "someone else's container added before ours",
                json!([{"name": "redis"}]),
                json!([{"name": "istio-proxy"}, {"name": "redis"}]),
                true,
            ),
            (
                "our container changed among others",
                json!([{"name": "redis", "image": "r:2"}]),
                json!([{"name": "sidecar"}, {"name": "redis", "image": "r:1"}]),
                false,
            ),
            (
                "one of ours missing",
                json!([{"name": "a"}, {"name": "b"}]),
                json!([{"name": "a"}, {"name": "c"}]),
                false,
            ),
            (
                "ours out of order",
                json!([{"name": "a"}, {"name": "b"}]),
                json!([{"name": "b"}, {"name": "a"}]),
                false,
            ),
            ("empty object list", json!([]), json!([{"name": "x"}]), true),
            ("null is not absent", json!({"a": null}), json!({}), false),
            ("type change", json!({"a": "1"}), json!({"a": 1}), false),
        ];
        for (name, desired, observed, expected) in cases {
            assert_eq!(is_subset(&desired, &observed), expected, "{name}");
        }
    }
}
