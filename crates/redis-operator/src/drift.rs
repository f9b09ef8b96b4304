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

/// `desired ⊆ observed`: objects by key, lists element by element (same length, same order, as
/// server-side apply keeps them), scalars by value.
fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(desired), Value::Object(observed)) => desired.iter().all(|(key, value)| {
            observed
                .get(key)
                .is_some_and(|observed| is_subset(value, observed))
        }),
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
            ("list grew", json!([1]), json!([1, 2]), false),
            ("list shrank", json!([1, 2]), json!([1]), false),
            ("list reordered", json!([1, 2]), json!([2, 1]), false),
            ("null is not absent", json!({"a": null}), json!({}), false),
            ("type change", json!({"a": "1"}), json!({"a": 1}), false),
        ];
        for (name, desired, observed, expected) in cases {
            assert_eq!(is_subset(&desired, &observed), expected, "{name}");
        }
    }
}
