//! The caches' initial lists against an in-process API server: what each list asks for, and
//! what ends up cached from the answer.

use std::collections::HashMap;

use ::http::{Request, Response};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{NAMESPACE, cluster, managed_fields, redis_pod, statefulset, sts_status};
use crate::names::Role;

/// Runs `cached_watch` until its first list is answered with `items`; returns that list's
/// query parameters and what the cache then holds.
async fn first_list<W, C>(
    config: watcher::Config,
    keep: fn(W) -> C,
    items: Vec<Value>,
) -> (HashMap<String, String>, Vec<Arc<C>>)
where
    W: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    W: Clone + Debug + DeserializeOwned + Send + 'static,
    C: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let (store, events) = cached_watch(Api::namespaced(client, NAMESPACE), config, keep, || {});
    let watch = tokio::spawn(events.for_each(|_| future::ready(())));

    let (request, reply) = handle.next_request().await.expect("a list request");
    let query = query_of(&request);
    let list = json!({"apiVersion": "v1", "kind": "List",
                      "metadata": {"resourceVersion": "500"}, "items": items});
    reply.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).unwrap(),
    )));
    store.wait_until_ready().await.expect("the cache fills");
    let cached = store.state();
    watch.abort();
    (query, cached)
}

fn query_of<B>(request: &Request<B>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|query| {
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (key.to_owned(), value.to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_managed_fields<K: Resource + serde::Serialize>(mut object: K) -> Value {
    object.meta_mut().managed_fields = Some(managed_fields());
    serde_json::to_value(object).unwrap()
}

#[tokio::test]
async fn redisclusters_are_listed_from_the_watch_cache_in_one_response() {
    let (query, cached) = first_list(
        cluster_watch_config(),
        trim::cluster,
        vec![with_managed_fields(cluster(3, "redis:7.0"))],
    )
    .await;
    assert_eq!(query.get("resourceVersion").map(String::as_str), Some("0"));
    assert_eq!(
        query.get("resourceVersionMatch").map(String::as_str),
        Some("NotOlderThan")
    );
    assert!(!query.contains_key("limit"), "{query:?}");
    assert_eq!(cached.len(), 1);
    assert!(cached[0].managed_fields().is_empty());
    assert_eq!(cached[0].spec.replicas, 3);
}

#[tokio::test]
async fn children_are_listed_in_pages_and_cached_packed_without_managed_fields() {
    let sts = statefulset(&cluster(2, "redis:7.0"), sts_status(2, 2));
    let (query, cached) = first_list(
        child_watch_config(),
        identity::<Packed<StatefulSet>>,
        vec![with_managed_fields(sts.clone())],
    )
    .await;
    assert_eq!(query.get("limit").map(String::as_str), Some("100"));
    assert_eq!(
        query.get("labelSelector").map(String::as_str),
        Some("app.kubernetes.io%2Fmanaged-by%3Dredis-operator")
    );
    // A consistent read from etcd: pages cannot come from the watch cache.
    assert!(!query.contains_key("resourceVersion"), "{query:?}");
    let cached: Vec<StatefulSet> = cached.iter().map(|s| s.unpack().unwrap()).collect();
    assert_eq!(cached, vec![sts]);
}

#[tokio::test]
async fn pods_are_cached_trimmed() {
    let mut pod = redis_pod(0, true, Some(Role::Primary));
    pod.annotations_mut()
        .insert("team".to_owned(), "cache".to_owned());
    pod.metadata.resource_version = Some("41".to_owned());
    let (_, cached) = first_list(
        child_watch_config(),
        identity::<Packed<Pod>>,
        vec![with_managed_fields(pod.clone())],
    )
    .await;
    // The watch that follows the list resumes from the version of the last object.
    assert_eq!(cached[0].resource_version().as_deref(), Some("41"));
    let cached = cached[0].unpack().unwrap();
    assert_eq!(cached.annotations().get("team"), None);
    assert_eq!(
        cached.labels().get(names::INSTANCE_LABEL),
        pod.labels().get(names::INSTANCE_LABEL)
    );
    assert_eq!(cached.status.unwrap().pod_ip, pod.status.unwrap().pod_ip);
}

#[tokio::test]
async fn a_watch_of_trimmed_pods_resumes_from_the_last_pods_version() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    let (_store, events) = cached_watch(
        Api::namespaced(client, NAMESPACE),
        child_watch_config(),
        identity::<Packed<Pod>>,
        || {},
    );
    let watch = tokio::spawn(events.for_each(|_| future::ready(())));
    let (_, reply) = handle.next_request().await.expect("a list request");
    let list = json!({"apiVersion": "v1", "kind": "List",
                      "metadata": {"resourceVersion": "500"}, "items": []});
    reply.send_response(Response::new(Body::from(list.to_string().into_bytes())));

    let (request, reply) = handle.next_request().await.expect("a watch request");
    assert_eq!(
        query_of(&request).get("watch").map(String::as_str),
        Some("true")
    );
    let mut pod = redis_pod(0, true, Some(Role::Primary));
    pod.metadata.resource_version = Some("501".to_owned());
    let added = json!({"type": "ADDED", "object": pod});
    reply.send_response(Response::new(Body::from(format!("{added}\n").into_bytes())));

    // The first watch ended; the next one starts where it left off, with no list between.
    let (request, _reply) = handle.next_request().await.expect("the next watch");
    let query = query_of(&request);
    assert_eq!(
        query.get("watch").map(String::as_str),
        Some("true"),
        "{query:?}"
    );
    assert_eq!(
        query.get("resourceVersion").map(String::as_str),
        Some("501")
    );
    watch.abort();
}
