//! The reconcile against an in-process API server (tower-test behind `kube::Client`): every
//! request it sends is recorded, so the tests assert what was written and what was not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use std::time::Duration;

use rediscluster_crd::conditions::PRIMARY_AVAILABLE;
use rediscluster_crd::{Phase, RedisCluster, RedisClusterStatus};
use serde_json::{Value, json};

use super::*;
use crate::context::{Context, Settings, Stores};
use crate::fixtures::{
    NAME, NAMESPACE, STATEFULSET_UID, cluster, pod_ip, redis_pod, statefulset, sts_status,
    terminated, with_status,
};
use crate::redis::Command;
use crate::redis::client::{PodAddress, RedisAccess, Unanswered};
use crate::topology::{RedisRole, Replication, Role};
use crate::trim::Packed;

/// One request the reconcile sent.
#[derive(Debug, Clone)]
struct Sent {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Sent {
    fn is(&self, method: &str, path_end: &str) -> bool {
        self.method == method && self.path.ends_with(path_end)
    }
}

/// How the fake API server answers a request: a status code and a JSON body, usually from what
/// it stores.
type Responder = Box<dyn Fn(&Sent, &mut Stored) -> (StatusCode, Value) + Send + Sync>;

/// What the fake API server holds, by object path, and how it answers writes the way the real
/// one does: a patch is merged into the stored object (whose status it keeps), a status patch
/// into its status, and every write bumps the resourceVersion. An answer that merely echoed the
/// request could hide a status computed from what we sent rather than from what is there.
#[derive(Default)]
struct Stored {
    objects: BTreeMap<String, Value>,
    version: u64,
}

impl Stored {
    fn put<K: Resource<DynamicType = ()> + serde::Serialize>(&mut self, object: &K) {
        let path = format!(
            "{}/{}",
            K::url_path(&(), object.meta().namespace.as_deref()),
            object.meta().name.as_deref().unwrap()
        );
        self.objects
            .insert(path, serde_json::to_value(object).unwrap());
    }

    fn stamp(&mut self, object: &mut Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(format!("{}", 1000 + self.version));
    }

    fn answer(&mut self, sent: &Sent) -> (StatusCode, Value) {
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                status_body(404, "NotFound", "not found"),
            )
        };
        match sent.method.as_str() {
            "POST" if sent.path.ends_with("/events") => (StatusCode::CREATED, sent.body.clone()),
            "POST" => {
                let name = sent.body["metadata"]["name"].as_str().unwrap_or_default();
                let path = format!("{}/{name}", sent.path);
                if self.objects.contains_key(&path) {
                    return (
                        StatusCode::CONFLICT,
                        status_body(409, "AlreadyExists", "already exists"),
                    );
                }
                let mut object = sent.body.clone();
                object["metadata"]["generation"] = json!(1);
                object["metadata"]["uid"] = json!(format!("uid-{}", self.version));
                self.stamp(&mut object);
                self.objects.insert(path, object.clone());
                (StatusCode::CREATED, object)
            }
            "GET" => self
                .objects
                .get(&sent.path)
                .map_or_else(not_found, |o| (StatusCode::OK, o.clone())),
            "DELETE" => self
                .objects
                .remove(&sent.path)
                .map_or_else(not_found, |o| (StatusCode::OK, o)),
            "PATCH" if sent.path.ends_with("/status") => {
                let path = sent.path.trim_end_matches("/status").to_owned();
                let Some(mut object) = self.objects.get(&path).cloned() else {
                    return not_found();
                };
                merge(&mut object["status"], &sent.body["status"]);
                self.stamp(&mut object);
                self.objects.insert(path, object.clone());
                (StatusCode::OK, object)
            }
            "PATCH" => {
                let mut patch = sent.body.clone();
                // The main resource ignores status in a patch.
                if let Some(patch) = patch.as_object_mut() {
                    patch.remove("status");
                }
                let mut object = match self.objects.get(&sent.path) {
                    Some(stored) => stored.clone(),
                    // An apply creates what does not exist.
                    None => json!({"metadata": {"generation": 0}}),
                };
                let spec_before = object["spec"].clone();
                merge(&mut object, &patch);
                if object["spec"] != spec_before {
                    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
                    object["metadata"]["generation"] = json!(generation + 1);
                }
                self.stamp(&mut object);
                self.objects.insert(sent.path.clone(), object.clone());
                (StatusCode::OK, object)
            }
            _ => not_found(),
        }
    }
}

/// Merges `patch` into `target`: objects key by key, anything else replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                // As the API server does (RFC 7386): null removes the key.
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Answers like a healthy API server, from and into what it stores.
fn healthy(sent: &Sent, stored: &mut Stored) -> (StatusCode, Value) {
    stored.answer(sent)
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "code": code, "reason": reason, "message": message})
}

struct Harness {
    statefulsets: reflector::store::Writer<Packed<StatefulSet>>,
    services: reflector::store::Writer<Packed<Service>>,
    pods: reflector::store::Writer<Packed<Pod>>,
    disruption_budgets: reflector::store::Writer<PodDisruptionBudget>,
    claims: reflector::store::Writer<PersistentVolumeClaim>,
    redis: Arc<FakeRedis>,
    context: Arc<Context>,
    respond: Arc<Mutex<Responder>>,
    stored: Arc<Mutex<Stored>>,
    sent: Arc<Mutex<Vec<Sent>>>,
    /// Requests that no rule in permissions.rs allows.
    denied: Arc<Mutex<Vec<String>>>,
}

impl Harness {
    /// A context whose client talks to a fake API server answering with `respond`.
    fn new(
        respond: impl Fn(&Sent, &mut Stored) -> (StatusCode, Value) + Send + Sync + 'static,
    ) -> Self {
        let (statefulset_reader, statefulsets) = reflector::store();
        let (service_reader, services) = reflector::store();
        let (pod_reader, pods) = reflector::store();
        let (budget_reader, disruption_budgets) = reflector::store();
        let (claim_reader, claims) = reflector::store();
        let stores = Stores {
            statefulsets: statefulset_reader,
            services: service_reader,
            pods: pod_reader,
            disruption_budgets: budget_reader,
            claims: claim_reader,
        };
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let respond: Arc<Mutex<Responder>> = Arc::new(Mutex::new(Box::new(respond)));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let denied = Arc::new(Mutex::new(Vec::new()));
        let stored = Arc::new(Mutex::new(Stored::default()));
        let (server_respond, server_sent, server_denied, server_stored) = (
            respond.clone(),
            sent.clone(),
            denied.clone(),
            stored.clone(),
        );
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let request = Sent {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                // Every request a reconcile sends must be one the operator's RBAC allows.
                if let Err(denied) =
                    crate::permissions::allows(&request.method, &request.path, &request.query)
                {
                    server_denied.lock().unwrap().push(denied);
                }
                let (status, body) =
                    (server_respond.lock().unwrap())(&request, &mut server_stored.lock().unwrap());
                // Recorded before the answer, so a finished reconcile has all its requests here.
                server_sent.lock().unwrap().push(request);
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                reply.send_response(response);
            }
        });
        let redis = Arc::new(FakeRedis::default());
        let context = Arc::new(Context::new(
            Client::new(service, NAMESPACE),
            stores,
            Settings::default(),
            Arc::default(),
            redis.clone(),
            crate::fixtures::operator_credentials(),
        ));
        Harness {
            statefulsets,
            services,
            pods,
            disruption_budgets,
            claims,
            redis,
            context,
            respond,
            stored,
            sent,
            denied,
        }
    }

    /// The children the operator would have created for `cluster`, in the API server and in
    /// the caches, with the pods its StatefulSet status counts: pod 0 the primary, the others
    /// replicas linked to it, the first `readyReplicas` of them ready.
    fn with_children(mut self, cluster: &RedisCluster, sts: StatefulSet) -> Self {
        let status = sts.status.clone().unwrap_or_default();
        let sts_uid = sts.metadata.uid.clone();
        {
            let mut stored = self.stored.lock().unwrap();
            stored.put(&sts);
            for svc in crate::desired::services(cluster).unwrap() {
                stored.put(&svc);
                self.services
                    .apply_watcher_event(&watcher::Event::Apply(Packed::new(svc)));
            }
            if let Some(budget) = crate::desired::disruption_budget(cluster).unwrap() {
                stored.put(&budget);
                self.disruption_budgets
                    .apply_watcher_event(&watcher::Event::Apply(budget));
            }
        }
        self.statefulsets
            .apply_watcher_event(&watcher::Event::Apply(Packed::new(sts)));
        let ready = status.ready_replicas.unwrap_or(0);
        for index in 0..status.replicas {
            let role = if index == 0 {
                Role::Primary
            } else {
                Role::Replica
            };
            let seen = if index == 0 {
                FakeRedis::primary()
            } else {
                FakeRedis::replica_of(0, true)
            };
            let mut pod = redis_pod(index, index < ready, Some(role));
            // Controlled by this StatefulSet, whichever uid it has.
            pod.metadata.owner_references.as_mut().unwrap()[0].uid =
                sts_uid.clone().unwrap_or_default();
            self = self.with_pod(pod, seen);
        }
        self
    }

    /// A pod in the API server and the cache, and what its Redis answers.
    fn with_pod(mut self, pod: Pod, redis: Result<Replication, String>) -> Self {
        self.stored.lock().unwrap().put(&pod);
        self.redis.answer(&pod.name_any(), redis);
        // Trimmed and packed as the operator's own cache does.
        self.pods
            .apply_watcher_event(&watcher::Event::Apply(Packed::new(pod)));
        self
    }

    /// `count` pods in their roles, pod `primary` the primary and the others replicas linked
    /// to it, each changed by `adjust` first.
    fn with_pods_in_role(
        mut self,
        count: i32,
        primary: i32,
        adjust: impl Fn(i32, &mut Pod),
    ) -> Self {
        for index in 0..count {
            let role = if index == primary {
                Role::Primary
            } else {
                Role::Replica
            };
            let mut pod = redis_pod(index, true, Some(role));
            adjust(index, &mut pod);
            let seen = if index == primary {
                FakeRedis::primary()
            } else {
                FakeRedis::replica_of(primary, true)
            };
            self = self.with_pod(pod, seen);
        }
        self
    }

    /// A claim in the API server and the cache.
    fn with_claim(mut self, claim: PersistentVolumeClaim) -> Self {
        self.stored.lock().unwrap().put(&claim);
        self.claims
            .apply_watcher_event(&watcher::Event::Apply(claim));
        self
    }

    fn respond_with(
        &self,
        respond: impl Fn(&Sent, &mut Stored) -> (StatusCode, Value) + Send + Sync + 'static,
    ) {
        *self.respond.lock().unwrap() = Box::new(respond);
    }

    /// Runs one reconcile of `cluster` (as the API server holds it); returns its result and
    /// the requests it sent.
    /// Under leader election, with this `tenure`.
    fn with_tenure(mut self, tenure: crate::leader::Tenure) -> Self {
        Arc::get_mut(&mut self.context)
            .expect("the harness's context is not shared yet")
            .tenure = Arc::new(tenure);
        self
    }

    async fn reconcile(&self, cluster: &RedisCluster) -> (Result<Action>, Vec<Sent>) {
        self.stored.lock().unwrap().put(cluster);
        let result = reconcile(Arc::new(cluster.clone()), self.context.clone()).await;
        let denied = std::mem::take(&mut *self.denied.lock().unwrap());
        assert!(denied.is_empty(), "requests RBAC would refuse: {denied:#?}");
        (result, std::mem::take(&mut *self.sent.lock().unwrap()))
    }
}

/// Redis as the reconcile sees it: a set answer to `INFO replication` per pod, and a record of
/// the commands sent.
#[derive(Default)]
struct FakeRedis {
    answers: Mutex<BTreeMap<String, Result<Replication, String>>>,
    /// Pauses (true) and unpauses (false) of writes, by pod.
    paused: Mutex<Vec<(String, bool)>>,
    /// How long each silent pod has been silent (0 unless set).
    silent_for: Mutex<BTreeMap<String, Duration>>,
    ran: Mutex<Vec<(String, Command)>>,
    /// Pods that took a write after their replica caught up and before they were demoted (a
    /// pause that ran out): demoted, they report a higher offset.
    slipped: Mutex<Vec<String>>,
}

impl FakeRedis {
    fn answer(&self, pod: &str, replication: Result<Replication, String>) {
        self.answers
            .lock()
            .unwrap()
            .insert(pod.to_owned(), replication);
    }

    fn ran(&self) -> Vec<(String, Command)> {
        std::mem::take(&mut *self.ran.lock().unwrap())
    }

    fn primary() -> Result<Replication, String> {
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats::default(),
            role: RedisRole::Primary,
            offset: 100,
            keys: 10,
            handing_over: false,
            heard_from_primary: None,
            settings: None,
        })
    }

    fn replica_of(index: i32, linked: bool) -> Result<Replication, String> {
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats::default(),
            role: RedisRole::Replica {
                host: pod_ip(index),
                port: 6379,
                link_up: linked,
                syncing: false,
            },
            offset: 100,
            keys: 10,
            handing_over: false,
            heard_from_primary: None,
            settings: None,
        })
    }

    fn unassigned() -> Result<Replication, String> {
        Ok(Replication {
            passwords: Vec::new(),
            run_id: String::new(),
            stats: crate::redis::info::Stats::default(),
            role: RedisRole::Replica {
                host: crate::redis::UNASSIGNED_HOST.to_owned(),
                port: crate::redis::UNASSIGNED_PORT,
                link_up: false,
                syncing: false,
            },
            offset: 0,
            keys: 0,
            handing_over: false,
            heard_from_primary: None,
            settings: None,
        })
    }
}

impl RedisAccess for FakeRedis {
    fn replication<'a>(
        &'a self,
        pod: &'a PodAddress,
    ) -> futures::future::BoxFuture<'a, Result<Replication, Unanswered>> {
        let answer = self.answers.lock().unwrap().get(&pod.name).cloned();
        let for_ = self
            .silent_for
            .lock()
            .unwrap()
            .get(&pod.name)
            .copied()
            .unwrap_or_default();
        Box::pin(async move {
            answer
                .unwrap_or_else(|| Err("connection refused".to_owned()))
                .map_err(|why| Unanswered {
                    refused: crate::redis::client::refused(&why),
                    why,
                    for_,
                })
        })
    }

    fn run<'a>(
        &'a self,
        pod: &'a PodAddress,
        command: &'a Command,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        self.ran
            .lock()
            .unwrap()
            .push((pod.name.clone(), command.clone()));
        // As Redis does it: later answers say what it was told.
        match command {
            Command::Promote => self.answer(&pod.name, FakeRedis::primary()),
            Command::Follow { host } => {
                let index = host.rsplit('.').next().unwrap().parse::<i32>().unwrap() - 10;
                self.answer(&pod.name, FakeRedis::replica_of(index, true));
            }
            Command::Demote { host } => {
                let index = host.rsplit('.').next().unwrap().parse::<i32>().unwrap() - 10;
                let mut demoted = FakeRedis::replica_of(index, true);
                if self.slipped.lock().unwrap().contains(&pod.name) {
                    demoted.as_mut().unwrap().offset += 10;
                }
                self.answer(&pod.name, demoted);
            }
            Command::HandOver { .. }
            | Command::Configure(_)
            | Command::SetConfig { .. }
            | Command::Disconnect => {}
        }
        Box::pin(async { Ok(()) })
    }

    fn pause_writes<'a>(
        &'a self,
        pod: &'a PodAddress,
        ms: Option<u64>,
    ) -> futures::future::BoxFuture<'a, Result<(), String>> {
        self.paused
            .lock()
            .unwrap()
            .push((pod.name.clone(), ms.is_some()));
        Box::pin(async { Ok(()) })
    }
}

/// The status the reconcile wrote, if it wrote one.
fn written_status(sent: &[Sent]) -> Option<RedisClusterStatus> {
    let patch = sent
        .iter()
        .find(|s| s.is("PATCH", &format!("/redisclusters/{NAME}/status")))?;
    Some(serde_json::from_value(patch.body["status"].clone()).unwrap())
}

fn writes_to<'a>(sent: &'a [Sent], resource: &str) -> Vec<&'a Sent> {
    sent.iter()
        .filter(|s| s.method != "GET" && s.path.contains(&format!("/{resource}")))
        .collect()
}

fn event_reasons(sent: &[Sent]) -> Vec<String> {
    sent.iter()
        .filter(|s| s.path.ends_with("/events"))
        .map(|s| s.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A cluster whose status is what the operator wrote last time for these children, so that a
/// reconcile sees nothing to do.
async fn settled(cluster: RedisCluster, sts: StatefulSet) -> RedisCluster {
    let harness = Harness::new(healthy).with_children(&cluster, sts);
    let (_, sent) = harness.reconcile(&cluster).await;
    let status = written_status(&sent).expect("a first reconcile writes the status");
    with_status(cluster, status)
}

/// The sample of three pods, Running as the operator last wrote it, and its rolled-out
/// StatefulSet.
async fn running_three() -> (RedisCluster, StatefulSet) {
    let cluster = cluster(3, "redis:7.0");
    let sts = statefulset(&cluster, sts_status(3, 3));
    (settled(cluster, sts.clone()).await, sts)
}

#[tokio::test]
async fn first_reconcile_creates_both_children_and_writes_status() {
    let cluster = cluster(3, "redis:7.0");
    let (result, sent) = Harness::new(healthy).reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");

    // Every child is created at once; their order on the wire is not fixed.
    let mut creates: Vec<&str> = sent
        .iter()
        .filter(|s| s.method == "POST" && !s.path.ends_with("/events"))
        .map(|s| s.path.as_str())
        .collect();
    creates.sort_unstable();
    let services = format!("/api/v1/namespaces/{NAMESPACE}/services");
    assert_eq!(
        creates,
        [
            &format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
            services.as_str(),
            &services,
            &services,
            &format!("/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets"),
            &format!("/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"),
        ]
    );
    for create in sent
        .iter()
        .filter(|s| s.method == "POST" && !s.path.ends_with("/events"))
    {
        assert!(
            create.query.contains("fieldManager=redis-operator"),
            "{create:?}"
        );
    }
    let sts = sent
        .iter()
        .find(|s| s.path.ends_with("/statefulsets"))
        .unwrap();
    assert_eq!(sts.body["spec"]["replicas"], 3);
    assert_eq!(
        sts.body["metadata"]["ownerReferences"][0]["uid"],
        crate::fixtures::UID
    );

    // A new cluster has auth: its password Secret is made before its pods, which read it.
    let secret = sent
        .iter()
        .position(|s| s.path.ends_with("/secrets"))
        .unwrap();
    let statefulset = sent
        .iter()
        .position(|s| s.path.ends_with("/statefulsets"))
        .unwrap();
    assert!(secret < statefulset, "{sent:#?}");
    let secret = &sent[secret].body;
    assert_eq!(secret["metadata"]["name"], format!("{NAME}-auth"));
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        crate::fixtures::UID
    );
    let password = secret["stringData"]["password"].as_str().unwrap();
    assert!(password.len() == 64 && password.chars().all(|c| c.is_ascii_hexdigit()));
    let volumes = &sts.body["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[1]["secret"]["secretName"], format!("{NAME}-auth"));
    assert!(!sts.body.to_string().contains(password));

    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Pending);
    let patch = sent.iter().find(|s| s.path.ends_with("/status")).unwrap();
    assert!(
        patch.query.contains("fieldManager=redis-operator") && patch.query.contains("force=true")
    );
    // One event for all children: every event is a write.
    assert_eq!(event_reasons(&sent), ["Created"]);
    let note = sent
        .iter()
        .find(|s| s.path.ends_with("/events"))
        .unwrap()
        .body["note"]
        .clone();
    assert_eq!(
        note,
        format!(
            "created Service {NAME}, Service {NAME}-primary, Service {NAME}-replicas, \
             StatefulSet {NAME}, PodDisruptionBudget {NAME}"
        )
    );
}

#[tokio::test]
async fn the_reconcile_that_sees_its_own_creates_writes_nothing() {
    let cluster = cluster(3, "redis:7.0");
    let (_, sent) = Harness::new(healthy).reconcile(&cluster).await;
    let cluster = with_status(cluster, written_status(&sent).unwrap());

    // The watch then delivers the new StatefulSet, which its controller has not yet acted on.
    let sent_sts = sent.iter().find(|s| s.path.ends_with("/statefulsets"));
    let mut created: StatefulSet = serde_json::from_value(sent_sts.unwrap().body.clone()).unwrap();
    created.metadata.uid = Some(STATEFULSET_UID.to_owned());
    let harness = Harness::new(healthy).with_children(&cluster, created);
    let (result, sent) = harness.reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(sent.is_empty(), "expected no request at all, got {sent:#?}");
}

#[tokio::test]
async fn nothing_changed_means_nothing_is_written() {
    let cluster = cluster(3, "redis:7.0");
    let sts = statefulset(&cluster, sts_status(3, 3));
    let cluster = settled(cluster, sts.clone()).await;
    assert_eq!(cluster.status.as_ref().unwrap().phase, Phase::Running);

    let harness = Harness::new(healthy).with_children(&cluster, sts);
    let (result, sent) = harness.reconcile(&cluster).await;
    // Its pods have addresses: their Redis is asked again after the probe interval.
    assert_eq!(
        result.unwrap(),
        Action::requeue(Settings::default().redis_probe_interval)
    );
    assert!(sent.is_empty(), "expected no request at all, got {sent:#?}");
    assert!(harness.redis.ran().is_empty());
}

#[tokio::test]
async fn a_running_cluster_that_loses_a_pod_says_so_once() {
    let cluster = cluster(3, "redis:7.0");
    let cluster = settled(cluster.clone(), statefulset(&cluster, sts_status(3, 3))).await;
    // The spec did not change; a pod stopped being ready (its Redis crashed, say).
    let degraded = statefulset(&cluster, sts_status(3, 2));
    let harness = Harness::new(healthy).with_children(&cluster, degraded.clone());
    let (result, sent) = harness.reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(writes_to(&sent, "statefulsets").is_empty(), "{sent:#?}");
    let status = written_status(&sent).unwrap();
    assert_eq!((status.phase, status.ready_replicas), (Phase::Scaling, 2));
    assert_eq!(event_reasons(&sent), ["ReplicaNotReady"]);

    // The next look at the same state writes nothing and tells nobody again.
    let scaling = with_status(cluster.clone(), status);
    let harness = Harness::new(healthy).with_children(&scaling, degraded);
    let (_, sent) = harness.reconcile(&scaling).await;
    assert!(sent.is_empty(), "{sent:#?}");
}

#[tokio::test]
async fn a_status_that_only_moves_a_count_waits_for_the_detail_hold() {
    // On its way up: 1 pod of 3 made, none ready, then 2 made, moments apart.
    let cluster = cluster(3, "redis:7.0");
    let harness =
        Harness::new(healthy).with_children(&cluster, statefulset(&cluster, sts_status(1, 0)));
    let (_, sent) = harness.reconcile(&cluster).await;
    let first = written_status(&sent).expect("the first look writes its status");
    assert_eq!((first.phase, first.replicas), (Phase::Pending, 1));

    let cluster = with_status(cluster, first.clone());
    let harness = harness.with_children(&cluster, statefulset(&cluster, sts_status(2, 0)));
    let (result, sent) = harness.reconcile(&cluster).await;
    assert_eq!(written_status(&sent), None, "{sent:#?}");
    // Looked at again when the hold is over, to write what is true then.
    // (Action keeps its duration private: its Debug shows it, as 4.99...s here.)
    let action = format!("{:?}", result.unwrap());
    assert!(action.contains("requeue_after: Some(4."), "{action}");

    // A change of phase goes out at once, hold or not.
    let harness = harness.with_children(&cluster, statefulset(&cluster, sts_status(3, 3)));
    let (_, sent) = harness.reconcile(&cluster).await;
    let running = written_status(&sent).expect("Running is written at once");
    assert_eq!((running.phase, running.ready_replicas), (Phase::Running, 3));
}

#[tokio::test]
async fn a_replicas_change_sends_one_apply() {
    let before = cluster(3, "redis:7.0");
    let sts = statefulset(&before, sts_status(3, 3));
    let settled = settled(before, sts.clone()).await;
    let mut scaled = settled.clone();
    scaled.spec.replicas = 5;
    scaled.metadata.generation = Some(2);

    let harness = Harness::new(healthy).with_children(&scaled, sts);
    let (result, sent) = harness.reconcile(&scaled).await;
    assert!(result.is_ok(), "{result:?}");

    let applies = writes_to(&sent, "statefulsets");
    assert_eq!(applies.len(), 1, "{sent:#?}");
    let apply = applies[0];
    assert_eq!(apply.method, "PATCH");
    assert!(apply.path.ends_with(&format!("/statefulsets/{NAME}")));
    assert!(
        apply.query.contains("fieldManager=redis-operator") && apply.query.contains("force=true")
    );
    assert_eq!(apply.body["spec"]["replicas"], 5);
    assert!(
        writes_to(&sent, "services").is_empty(),
        "the Service did not drift"
    );

    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Scaling);
    assert_eq!(status.observed_generation, Some(2));
    // Assessed from the server's answer (the stored StatefulSet with our patch merged in):
    // its three ready pods are still there; the apply body alone would say none are.
    assert_eq!((status.ready_replicas, status.replicas), (3, 3));
    // A scale the user asked for is no lost pod: no ReplicaNotReady warning.
    assert_eq!(event_reasons(&sent), ["Scaling"]);
}

#[tokio::test]
async fn a_hand_edit_of_an_owned_field_is_reverted() {
    let cluster = cluster(3, "redis:7.0");
    let mut edited = statefulset(&cluster, sts_status(3, 3));
    edited.spec.as_mut().unwrap().replicas = Some(1);
    let (result, sent) = Harness::new(healthy)
        .with_children(&cluster, edited)
        .reconcile(&cluster)
        .await;
    assert!(result.is_ok());
    let applies = writes_to(&sent, "statefulsets");
    assert_eq!(applies.len(), 1);
    assert_eq!(applies[0].body["spec"]["replicas"], 3);
}

#[tokio::test]
async fn a_cached_child_we_do_not_own_is_left_alone_and_fails_the_cluster() {
    let cluster = cluster(3, "redis:7.0");
    let mut foreign = statefulset(&cluster, sts_status(2, 2));
    foreign.metadata.owner_references = None;
    let (result, sent) = Harness::new(healthy)
        .with_children(&cluster, foreign)
        .reconcile(&cluster)
        .await;
    // Removing the blocker sends us no event: look again soon, not at the next resync.
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_RECHECK));
    assert!(writes_to(&sent, "statefulsets").is_empty(), "{sent:#?}");

    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(
        status.ready_replicas, 0,
        "a foreign StatefulSet's counts are not ours"
    );
    let degraded = status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "ChildNotOwned");
    assert!(degraded.message.contains(&format!("StatefulSet {NAME}")));
    assert_eq!(event_reasons(&sent), ["ChildNotOwned"]);
}

#[tokio::test]
async fn an_unlabelled_object_with_the_childs_name_is_never_modified() {
    let cluster = cluster(3, "redis:7.0");
    let mut foreign = crate::desired::initial_statefulset(&cluster).unwrap();
    foreign.metadata.owner_references = None;
    foreign.metadata.labels = None;
    let foreign = serde_json::to_value(foreign).unwrap();
    let (result, sent) = Harness::new(move |sent: &Sent, stored: &mut Stored| {
        if sent.is("POST", "/statefulsets") {
            (
                StatusCode::CONFLICT,
                status_body(409, "AlreadyExists", "already exists"),
            )
        } else if sent.is("GET", &format!("/statefulsets/{NAME}")) {
            (StatusCode::OK, foreign.clone())
        } else {
            healthy(sent, stored)
        }
    })
    .reconcile(&cluster)
    .await;
    assert!(result.is_ok(), "{result:?}");
    let to_statefulsets: Vec<&str> = sent
        .iter()
        .filter(|s| s.path.contains("/statefulsets"))
        .map(|s| s.method.as_str())
        .collect();
    assert_eq!(
        to_statefulsets,
        ["POST", "GET"],
        "a create and a look, never a patch"
    );
    assert_eq!(written_status(&sent).unwrap().phase, Phase::Failed);
}

#[tokio::test]
async fn a_rejected_child_fails_the_cluster_without_retrying_hot() {
    let cluster = cluster(3, "redis:7.0");
    let (result, sent) = Harness::new(move |sent: &Sent, stored: &mut Stored| {
        if sent.is("POST", "/statefulsets") {
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                status_body(
                    422,
                    "Invalid",
                    "spec.template.spec.containers[0].image: Invalid value",
                ),
            )
        } else {
            healthy(sent, stored)
        }
    })
    .reconcile(&cluster)
    .await;
    // Not an error to back off from, and not hot: one look every BLOCKED_RECHECK, so that a
    // fix outside the RedisCluster (an admission policy relaxed, say) is noticed.
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_RECHECK));
    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let degraded = status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "ChildRejected");
    assert!(
        degraded.message.contains("Invalid value"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn a_full_service_ip_range_fails_the_cluster_with_the_servers_message() {
    let cluster = cluster(3, "redis:7.0");
    let (result, sent) = Harness::new(move |sent: &Sent, stored: &mut Stored| {
        if sent.is("POST", "/services")
            && sent.body["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-primary"))
        {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                status_body(
                    500,
                    "InternalError",
                    "Internal error occurred: failed to allocate a serviceIP: range is full",
                ),
            )
        } else {
            healthy(sent, stored)
        }
    })
    .reconcile(&cluster)
    .await;
    // Not retried hot: the range is the user's (or the cluster admin's) to widen.
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_RECHECK));
    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let degraded = status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "ChildRejected");
    assert!(
        degraded.message.contains("Service")
            && degraded
                .message
                .contains("failed to allocate a serviceIP: range is full"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn an_api_error_backs_off_per_object_and_a_success_resets_it() {
    let cluster = cluster(3, "redis:7.0");
    let harness = Harness::new(move |sent: &Sent, stored: &mut Stored| {
        if sent.is("POST", "/services") {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                status_body(503, "ServiceUnavailable", "etcd is down"),
            )
        } else {
            healthy(sent, stored)
        }
    });
    let (result, sent) = harness.reconcile(&cluster).await;
    let error = result.unwrap_err();
    assert!(error.is_transient(), "{error}");
    // The children are independent (the StatefulSet may still have been created); what the
    // failure must stop is a status that would claim more than was done, and any event.
    assert!(written_status(&sent).is_none());
    assert!(event_reasons(&sent).is_empty(), "{sent:#?}");

    // About a second after one failure, about two after the second; other clusters unaffected.
    let context = &harness.context;
    let first = retry_after(&cluster, &error, context);
    let second = retry_after(&cluster, &error, context);
    assert!((0.8..=1.2).contains(&first.as_secs_f64()), "{first:?}");
    assert!((1.6..=2.4).contains(&second.as_secs_f64()), "{second:?}");
    let mut other = cluster.clone();
    other.metadata.name = Some("other".to_owned());
    assert!(retry_after(&other, &error, context) <= Duration::from_millis(1200));

    // A permanent error waits for the resync instead of a hot retry.
    let permanent = Error::MissingObjectKey("uid");
    assert_eq!(
        retry_after(&cluster, &permanent, context),
        Settings::default().resync_interval
    );

    // A successful reconcile forgets the failures.
    let key = ObjectRef::from_obj(&cluster);
    assert_eq!(context.backoff.failures(&key), 2);
    harness.respond_with(healthy);
    harness.reconcile(&cluster).await.0.unwrap();
    assert_eq!(context.backoff.failures(&key), 0);
}

#[tokio::test]
async fn a_cluster_being_deleted_gets_no_writes_even_with_its_children_gone() {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::fixtures::at(0)),
    );
    // The garbage collector took the children already: nothing may recreate them.
    let (result, sent) = Harness::new(healthy).reconcile(&cluster).await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert!(sent.is_empty(), "expected no request at all, got {sent:#?}");
}

#[tokio::test]
async fn a_name_no_child_can_take_fails_the_cluster_and_creates_nothing() {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.metadata.name = Some(format!("r{}", "e".repeat(60)));
    let (result, sent) = Harness::new(healthy).reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(writes_to(&sent, "statefulsets").is_empty(), "{sent:#?}");
    assert!(writes_to(&sent, "services").is_empty(), "{sent:#?}");
    let patch = sent.iter().find(|s| s.path.ends_with("/status")).unwrap();
    let status: RedisClusterStatus = serde_json::from_value(patch.body["status"].clone()).unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let degraded = status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "InvalidName");
    assert!(
        degraded.message.contains("at most 52"),
        "{}",
        degraded.message
    );
    assert_eq!(event_reasons(&sent), ["InvalidName"]);
}

#[tokio::test]
async fn an_immutable_field_change_recreates_the_statefulset_keeping_its_pods() {
    let cluster = cluster(3, "redis:7.0");
    let cluster = settled(cluster.clone(), statefulset(&cluster, sts_status(3, 3))).await;
    // Made by a release that let the policy default (OrderedReady); ours is Parallel.
    let mut older = statefulset(&cluster, sts_status(3, 3));
    older.spec.as_mut().unwrap().pod_management_policy = None;
    older.metadata.uid = Some("sts-uid-1".to_owned());
    let harness = Harness::new(healthy).with_children(&cluster, older.clone());
    let (result, sent) = harness.reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");

    let writes = writes_to(&sent, "statefulsets");
    assert_eq!(writes.len(), 1, "one delete, no apply: {sent:#?}");
    let delete = writes[0];
    assert_eq!(delete.method, "DELETE");
    assert!(delete.path.ends_with(&format!("/statefulsets/{NAME}")));
    assert_eq!(delete.body["propagationPolicy"], "Orphan", "pods must stay");
    assert_eq!(delete.body["preconditions"]["uid"], "sts-uid-1");
    assert_eq!(event_reasons(&sent), ["RecreatingStatefulSet"]);
    let status = written_status(&sent).unwrap();
    assert_eq!((status.phase, status.ready_replicas), (Phase::Scaling, 3));

    // While it is being deleted, nothing is sent for it; once gone, it is created anew.
    let scaling = with_status(cluster.clone(), status);
    let mut terminating = older;
    terminating.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(crate::fixtures::at(0)),
    );
    let harness = Harness::new(healthy).with_children(&scaling, terminating);
    let (_, sent) = harness.reconcile(&scaling).await;
    assert!(writes_to(&sent, "statefulsets").is_empty(), "{sent:#?}");
    let harness = Harness::new(healthy);
    let (_, sent) = harness.reconcile(&scaling).await;
    let creates: Vec<_> = writes_to(&sent, "statefulsets");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].method, "POST");
    assert_eq!(creates[0].body["spec"]["podManagementPolicy"], "Parallel");
}

/// The role label PATCHes sent to pods: (pod, label value or None for removed, uid precondition).
fn role_patches(sent: &[Sent]) -> Vec<(String, Option<String>, Option<String>)> {
    sent.iter()
        .filter(|s| s.method == "PATCH" && s.path.contains("/pods/"))
        .map(|s| {
            let pod = s.path.rsplit('/').next().unwrap().to_owned();
            let labels = &s.body["metadata"]["labels"];
            assert_eq!(
                labels.as_object().unwrap().len(),
                1,
                "only the role label is touched: {s:?}"
            );
            (
                pod,
                labels[crate::names::ROLE_LABEL].as_str().map(str::to_owned),
                s.body["metadata"]["uid"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test]
async fn new_pods_get_their_roles_from_the_operator() {
    let cluster = cluster(3, "redis:7.0");
    let mut harness =
        Harness::new(healthy).with_children(&cluster, statefulset(&cluster, sts_status(3, 0)));
    for index in 0..3 {
        harness = harness.with_pod(redis_pod(index, false, None), FakeRedis::unassigned());
    }
    let (result, sent) = harness.reconcile(&cluster).await;
    assert!(result.is_ok(), "{result:?}");

    assert_eq!(
        sorted(harness.redis.ran()),
        [
            (format!("{NAME}-0"), Command::Promote),
            (format!("{NAME}-1"), Command::Follow { host: pod_ip(0) }),
            (format!("{NAME}-2"), Command::Follow { host: pod_ip(0) }),
        ]
    );
    let label = |index: i32, role: &str| {
        (
            format!("{NAME}-{index}"),
            Some(role.to_owned()),
            Some(format!("pod-uid-{index}")),
        )
    };
    assert_eq!(
        sorted(role_patches(&sent)),
        [
            label(0, "primary"),
            label(1, "replica"),
            label(2, "replica")
        ]
    );
    let patch = sent.iter().find(|s| s.path.contains("/pods/")).unwrap();
    assert!(
        !patch.query.contains("force"),
        "a merge patch, not an apply"
    );

    let status = written_status(&sent).unwrap();
    assert_eq!(status.primary.as_deref(), Some(&*format!("{NAME}-0")));
    assert_eq!(status.phase, Phase::Pending, "nobody is linked yet");
    assert!(event_reasons(&sent).contains(&"Elected".to_owned()));
}

#[tokio::test]
async fn pods_whose_redis_does_not_answer_get_no_role_and_the_status_says_why() {
    let cluster = cluster(2, "redis:7.0");
    let mut harness =
        Harness::new(healthy).with_children(&cluster, statefulset(&cluster, sts_status(2, 0)));
    for index in 0..2 {
        harness = harness.with_pod(
            redis_pod(index, false, None),
            Err("connection refused".into()),
        );
    }
    let (result, sent) = harness.reconcile(&cluster).await;
    // Asked again after the probe interval, not hot.
    assert_eq!(
        result.unwrap(),
        Action::requeue(Settings::default().redis_probe_interval)
    );
    assert!(harness.redis.ran().is_empty());
    assert!(role_patches(&sent).is_empty(), "{sent:#?}");
    let status = written_status(&sent).unwrap();
    assert_eq!(
        (status.phase, status.primary.as_deref()),
        (Phase::Pending, None)
    );
    let message = &status.condition(READY).unwrap().message;
    assert!(
        message.contains(&format!(
            "no primary yet: pod {NAME}-0 does not answer: connection refused"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn of_two_pods_labelled_primary_the_one_redis_disowns_loses_the_label() {
    let cluster = cluster(2, "redis:7.0");
    let cluster = settled(cluster.clone(), statefulset(&cluster, sts_status(2, 2))).await;
    let harness = Harness::new(healthy)
        .with_children(&cluster, statefulset(&cluster, sts_status(2, 2)))
        // Pod 1 is labelled primary too, but its Redis follows pod 0.
        .with_pod(
            redis_pod(1, true, Some(Role::Primary)),
            FakeRedis::replica_of(0, true),
        );
    let (_, sent) = harness.reconcile(&cluster).await;
    assert_eq!(
        role_patches(&sent),
        [(
            format!("{NAME}-1"),
            Some("replica".to_owned()),
            Some("pod-uid-1".to_owned())
        )]
    );
    assert!(harness.redis.ran().is_empty(), "Redis already agrees");
    assert!(writes_to(&sent, "statefulsets").is_empty());
}

/// A Running 3-pod cluster scaled to 2 whose primary, after some change of primary, is pod 2:
/// it has to hand over before its pod goes.
async fn scaled_to_2_with_pod_2_primary() -> (Harness, RedisCluster) {
    let before = cluster(3, "redis:7.0");
    let sts = statefulset(&before, sts_status(3, 3));
    let running = settled(before, sts.clone()).await;
    let mut scaled = running.clone();
    scaled.spec.replicas = 2;
    scaled.metadata.generation = Some(2);
    let mut harness = Harness::new(healthy).with_children(&scaled, sts);
    for index in 0..2 {
        harness = harness.with_pod(
            redis_pod(index, true, Some(Role::Replica)),
            FakeRedis::replica_of(2, true),
        );
    }
    let harness = harness.with_pod(
        redis_pod(2, true, Some(Role::Primary)),
        FakeRedis::primary(),
    );
    (harness, scaled)
}

#[tokio::test]
async fn a_handover_that_a_write_slipped_past_is_undone_rather_than_the_write_lost() {
    let (harness, scaled) = scaled_to_2_with_pod_2_primary().await;
    let old = format!("{NAME}-2");
    harness.redis.slipped.lock().unwrap().push(old.clone());
    let (_, sent) = harness.reconcile(&scaled).await;
    assert_eq!(
        harness.redis.ran(),
        [
            (old.clone(), Command::Demote { host: pod_ip(0) }),
            (old.clone(), Command::Promote),
        ],
        "pod 0 lacks a write pod 2 took: pod 2 is the primary again, pod 0 never promoted"
    );
    assert_eq!(
        *harness.redis.paused.lock().unwrap(),
        [(old.clone(), true), (old, false)]
    );
    assert!(role_patches(&sent).is_empty(), "{sent:#?}");
    let status = written_status(&sent).unwrap();
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.message.contains("did not have when it was demoted")),
        "{status:#?}"
    );
}

#[tokio::test]
async fn a_scale_down_waits_while_the_primary_does_not_answer() {
    let (running, sts) = running_three().await;
    let mut scaled = running.clone();
    scaled.spec.replicas = 1;
    scaled.metadata.generation = Some(2);
    let harness = Harness::new(healthy).with_children(&scaled, sts);
    harness
        .redis
        .answer(&format!("{NAME}-0"), Err("no answer within 1s".to_owned()));
    let (_, sent) = harness.reconcile(&scaled).await;
    let applies = writes_to(&sent, "statefulsets");
    assert!(
        applies.iter().all(|a| a.body["spec"]["replicas"] == 3),
        "the replicas that may have to take over stay: {applies:#?}"
    );
    // The primary answers again: the scale-down goes on.
    harness
        .redis
        .answer(&format!("{NAME}-0"), FakeRedis::primary());
    let (_, sent) = harness.reconcile(&scaled).await;
    let applies = writes_to(&sent, "statefulsets");
    assert_eq!(applies.len(), 1, "{sent:#?}");
    assert_eq!(applies[0].body["spec"]["replicas"], 1);
}

#[tokio::test]
async fn a_scale_down_keeps_the_pod_whose_redis_is_primary_though_the_cache_has_no_label_yet() {
    let (running, sts) = running_three().await;
    let mut scaled = running.clone();
    scaled.spec.replicas = 1;
    scaled.metadata.generation = Some(2);
    // Pod 1 was just promoted (its label not in the cache yet); pod 0 came back empty.
    let harness = Harness::new(healthy)
        .with_children(&scaled, sts)
        .with_pod(redis_pod(0, true, None), FakeRedis::unassigned())
        .with_pod(redis_pod(1, true, None), FakeRedis::primary())
        .with_pod(
            redis_pod(2, true, Some(Role::Replica)),
            FakeRedis::replica_of(1, true),
        );
    let (_, sent) = harness.reconcile(&scaled).await;
    let applies = writes_to(&sent, "statefulsets");
    assert!(
        applies
            .iter()
            .all(|a| a.body["spec"]["replicas"].as_i64() >= Some(2)),
        "pod 1, the primary, stays: {applies:#?}"
    );
    assert!(
        !harness
            .redis
            .ran()
            .contains(&(format!("{NAME}-0"), Command::Promote)),
        "the empty pod 0 is not made primary"
    );
}

#[tokio::test]
async fn a_scale_down_hands_the_primary_over_before_its_pod_goes() {
    let (harness, scaled) = scaled_to_2_with_pod_2_primary().await;
    let (_, sent) = harness.reconcile(&scaled).await;
    let applies = writes_to(&sent, "statefulsets");
    assert!(
        applies.iter().all(|a| a.body["spec"]["replicas"] == 3),
        "the StatefulSet keeps 3 pods: {applies:#?}"
    );
    assert_eq!(
        harness.redis.ran(),
        [
            (format!("{NAME}-2"), Command::Demote { host: pod_ip(0) }),
            (format!("{NAME}-0"), Command::Promote),
            (format!("{NAME}-1"), Command::Follow { host: pod_ip(0) })
        ],
        "once pod 0 (it stays) caught up, the old primary is demoted, pod 0 promoted, then \
         the other replica follows"
    );
    assert_eq!(
        *harness.redis.paused.lock().unwrap(),
        [(format!("{NAME}-2"), true), (format!("{NAME}-2"), false)],
        "writes paused on the old primary for the handover, and resumed"
    );
    // Redis said it was done: the labels moved in the same reconcile, the new primary's first
    // (the old one is a read-only replica by then; the Service never goes without an endpoint).
    assert_eq!(
        role_patches(&sent),
        [
            (
                format!("{NAME}-0"),
                Some("primary".to_owned()),
                Some("pod-uid-0".to_owned())
            ),
            (
                format!("{NAME}-2"),
                Some("replica".to_owned()),
                Some("pod-uid-2".to_owned())
            ),
        ]
    );
    assert_eq!(event_reasons(&sent), ["SwitchedOver"]);
    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Scaling);
    assert_eq!(status.primary.as_deref(), Some(&*format!("{NAME}-0")));
    let available = status.condition(PRIMARY_AVAILABLE).unwrap();
    assert_eq!(available.reason, "SwitchedOver");
}

#[tokio::test]
async fn a_forbidden_service_fails_the_cluster_with_the_servers_reason() {
    // A ResourceQuota on services (or a missing RBAC grant) answers 403: the user's to fix.
    let cluster = cluster(3, "redis:7.0");
    let (result, sent) = Harness::new(move |sent: &Sent, stored: &mut Stored| {
        if sent.is("POST", "/services") && sent.body["metadata"]["name"] == "cache-replicas" {
            (
                StatusCode::FORBIDDEN,
                status_body(
                    403,
                    "Forbidden",
                    "services \"cache-replicas\" is forbidden: exceeded quota: svc, requested: services=1, used: services=2, limited: services=2",
                ),
            )
        } else {
            healthy(sent, stored)
        }
    })
    .reconcile(&cluster)
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_RECHECK));
    let degraded = written_status(&sent)
        .unwrap()
        .condition(DEGRADED)
        .cloned()
        .unwrap();
    assert_eq!(degraded.reason, "ChildRejected");
    assert!(
        degraded.message.contains("exceeded quota"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn a_primary_silent_past_the_failover_delay_is_stopped_before_anything_else() {
    let (running, sts) = running_three().await;
    let harness = Harness::new(healthy).with_children(&running, sts);
    let silent = format!("{NAME}-0");
    harness
        .redis
        .answer(&silent, Err("no answer within 1s".to_owned()));
    harness
        .redis
        .silent_for
        .lock()
        .unwrap()
        .insert(silent.clone(), Duration::from_secs(6));
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    // Its pod deleted with a 1 s grace period, that pod only: the kubelet kills a Redis that
    // hangs. Nothing else yet: no label moves, no Redis is told anything.
    let deletes: Vec<&Sent> = sent.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert!(deletes[0].path.ends_with(&format!("/pods/{silent}")));
    assert_eq!(deletes[0].body["gracePeriodSeconds"], 1);
    assert_eq!(deletes[0].body["preconditions"]["uid"], "pod-uid-0");
    assert!(role_patches(&sent).is_empty() && harness.redis.ran().is_empty());
    let status = written_status(&sent).unwrap();
    let available = status.condition(PRIMARY_AVAILABLE).unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "PrimaryNotAnswering")
    );
    assert!(
        available.message.contains("being stopped before"),
        "{}",
        available.message
    );
}

/// A Redis that refuses the operator's login runs: however long it refuses, its pod is not
/// stopped and no replica takes over; the status says why, and nobody is asked again at once.
#[tokio::test]
async fn a_primary_that_refuses_the_operators_login_is_not_failed_over() {
    let (running, sts) = running_three().await;
    let harness = Harness::new(healthy).with_children(&running, sts);
    for pod in 0..3 {
        let name = format!("{NAME}-{pod}");
        let refusal = "WRONGPASS invalid username-password pair".to_owned();
        harness.redis.answer(&name, Err(refusal));
        let long = Duration::from_secs(600);
        harness.redis.silent_for.lock().unwrap().insert(name, long);
    }
    let (result, sent) = harness.reconcile(&running).await;
    let action = result.unwrap();
    assert!(sent.iter().all(|s| s.method != "DELETE"), "{sent:#?}");
    assert!(role_patches(&sent).is_empty() && harness.redis.ran().is_empty());
    let status = written_status(&sent).unwrap();
    assert_eq!(status.primary.as_deref(), Some("cache-0"));
    let available = status.condition(PRIMARY_AVAILABLE).unwrap();
    assert_eq!(available.status, "False");
    assert!(
        available
            .message
            .contains("refuses the operator (WRONGPASS")
            && available.message.contains("not failed over"),
        "{}",
        available.message
    );
    assert!(action != Action::requeue(URGENT_RECHECK), "{action:?}");
}

#[tokio::test]
async fn a_leader_whose_lease_may_have_run_out_writes_nothing() {
    let (running, sts) = running_three().await;
    let silent = format!("{NAME}-0");
    // A bounded tenure that saw no Lease: as a leader that woke past its Lease's expiry.
    let harness = Harness::new(healthy)
        .with_children(&running, sts)
        .with_pod(
            terminated(redis_pod(0, false, Some(Role::Primary))),
            Err("no answer within 1s".to_owned()),
        )
        .with_tenure(crate::leader::Tenure::bounded());
    harness
        .redis
        .silent_for
        .lock()
        .unwrap()
        .insert(silent, Duration::from_secs(8));
    let (result, sent) = harness.reconcile(&running).await;
    assert!(
        matches!(result, Err(crate::error::Error::NotLeading)),
        "{result:?}"
    );
    // Nothing at all: no label, no delete, no child, no status, no Redis command.
    assert!(sent.is_empty(), "{sent:#?}");
    assert!(harness.redis.ran().is_empty());
}

#[tokio::test]
async fn a_primary_silent_past_the_failover_delay_is_replaced_counted_and_told_once_stopped() {
    let (running, sts) = running_three().await;
    let silent = format!("{NAME}-0");
    let harness = Harness::new(healthy).with_children(&running, sts).with_pod(
        terminated(redis_pod(0, false, Some(Role::Primary))),
        Err("no answer within 1s".to_owned()),
    );
    harness
        .redis
        .silent_for
        .lock()
        .unwrap()
        .insert(silent.clone(), Duration::from_secs(8));
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(sent.iter().all(|s| s.method != "DELETE"), "{sent:#?}");
    // The silent primary loses its label before anything else; pod 1 (offsets tie, lowest
    // ordinal) is promoted and labelled; pod 2 follows it.
    assert_eq!(
        role_patches(&sent),
        [
            (silent, None, Some("pod-uid-0".to_owned())),
            (
                format!("{NAME}-1"),
                Some("primary".to_owned()),
                Some("pod-uid-1".to_owned())
            ),
        ]
    );
    assert_eq!(
        harness.redis.ran(),
        [
            (format!("{NAME}-1"), Command::Promote),
            (format!("{NAME}-2"), Command::Follow { host: pod_ip(1) }),
        ]
    );
    // And, Running no more while pod 1 takes the role, the usual warning.
    assert_eq!(event_reasons(&sent), ["FailedOver", "ReplicaNotReady"]);
    let status = written_status(&sent).unwrap();
    assert_eq!(status.primary.as_deref(), Some(&*format!("{NAME}-1")));
    let available = status.condition(PRIMARY_AVAILABLE).unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("True", "FailedOver")
    );
    let metrics = harness.context.metrics.render(None);
    assert!(
        metrics.contains(r#"redis_operator_failovers_total{reason="primary_not_answering"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("redis_operator_failover_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_silent_primary_within_the_failover_delay_changes_nothing_but_the_status() {
    let (running, sts) = running_three().await;
    let harness = Harness::new(healthy).with_children(&running, sts);
    harness
        .redis
        .answer(&format!("{NAME}-0"), Err("no answer within 1s".to_owned()));
    let (result, sent) = harness.reconcile(&running).await;
    assert!(role_patches(&sent).is_empty() && harness.redis.ran().is_empty());
    let status = written_status(&sent).unwrap();
    let available = status.condition(PRIMARY_AVAILABLE).unwrap();
    assert_eq!(available.reason, "PrimaryNotAnswering");
    // Looked at again within a second, not at the probe interval.
    let requeue = format!("{:?}", result.unwrap());
    assert!(requeue.contains("250ms"), "{requeue}");
}

#[tokio::test]
async fn a_roll_deletes_one_outdated_replica_at_a_time_with_a_uid_precondition() {
    let (running, sts) = running_three().await;
    // The pods were made for an earlier spec.
    let harness = Harness::new(healthy)
        .with_children(&running, sts)
        .with_pods_in_role(3, 0, |_, pod| {
            pod.annotations_mut().insert(
                crate::names::POD_CONFIG_ANNOTATION.to_owned(),
                "made-for-an-earlier-spec".to_owned(),
            );
        });
    let (_, sent) = harness.reconcile(&running).await;
    let deletes: Vec<&Sent> = sent.iter().filter(|s| s.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    assert!(deletes[0].path.ends_with(&format!("/pods/{NAME}-2")));
    assert_eq!(deletes[0].body["preconditions"]["uid"], "pod-uid-2");
    assert!(harness.redis.ran().is_empty() && role_patches(&sent).is_empty());
}

#[tokio::test]
async fn a_statefulset_of_the_previous_release_switches_to_on_delete_without_a_roll() {
    let (running, sts) = running_three().await;
    // As the previous release created it: RollingUpdate, with the server's default partition.
    let mut previous = sts;
    previous.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("RollingUpdate".to_owned()),
        rolling_update: Some(RollingUpdateStatefulSetStrategy {
            partition: Some(0),
            ..RollingUpdateStatefulSetStrategy::default()
        }),
    });
    let harness = Harness::new(healthy).with_children(&running, previous);
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    let writes = writes_to(&sent, "statefulsets");
    assert_eq!(
        writes.len(),
        1,
        "one merge patch, then nothing to apply: {writes:#?}"
    );
    assert_eq!(
        writes[0].body["spec"]["updateStrategy"],
        json!({"type": "OnDelete", "rollingUpdate": null})
    );
    assert_eq!(
        writes[0].body["metadata"]["uid"],
        crate::fixtures::STATEFULSET_UID
    );
    assert!(
        writes[0].body["spec"].get("template").is_none(),
        "the pod template is not touched: no pod restarts"
    );
    assert!(sent.iter().all(|s| s.method != "DELETE"));
}

#[tokio::test]
async fn pods_of_an_earlier_release_made_for_the_same_spec_are_not_replaced() {
    let (running, sts) = running_three().await;
    // The earlier release's template: no pod-config annotation, no probes or spreading of
    // this one. Its pods run the spec's image.
    let mut earlier = sts;
    let template = &mut earlier.spec.as_mut().unwrap().template;
    template.metadata.as_mut().unwrap().annotations = None;
    template.spec.as_mut().unwrap().affinity = None;
    let harness = Harness::new(healthy)
        .with_children(&running, earlier)
        .with_pods_in_role(3, 0, |_, pod| {
            pod.spec = Some(crate::fixtures::earlier_release_spec("redis:7.0"));
        });
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    // The template is brought up to date, for pods made from now on; no pod is deleted.
    assert_eq!(writes_to(&sent, "statefulsets").len(), 1, "{sent:#?}");
    assert!(sent.iter().all(|s| s.method != "DELETE"), "{sent:#?}");
    assert!(harness.redis.ran().is_empty());
}

#[tokio::test]
async fn a_cluster_scaled_to_one_pod_deletes_its_disruption_budget() {
    let three = cluster(3, "redis:7.0");
    let budget = crate::desired::disruption_budget(&three).unwrap().unwrap();
    let mut budget_with_uid = budget.clone();
    budget_with_uid.metadata.uid = Some("budget-uid".to_owned());
    let one = cluster(1, "redis:7.0");
    let sts = statefulset(&one, sts_status(1, 1));
    let running = settled(one, sts.clone()).await;
    let mut harness = Harness::new(healthy).with_children(&running, sts);
    harness.stored.lock().unwrap().put(&budget_with_uid);
    harness
        .disruption_budgets
        .apply_watcher_event(&watcher::Event::Apply(budget_with_uid));
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    let writes = writes_to(&sent, "poddisruptionbudgets");
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert!(writes[0].is("DELETE", &format!("/poddisruptionbudgets/{NAME}")));
    assert_eq!(writes[0].body["preconditions"]["uid"], "budget-uid");

    // Three pods again: the budget comes back, letting one pod go at a time.
    assert_eq!(
        serde_json::to_value(&budget.spec).unwrap(),
        json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow",
               "selector": {"matchLabels": crate::names::selector_labels(NAME)}})
    );
}

/// A cluster of three with `storage` of `size`, its claims asking for 1Gi.
fn with_storage(size: &str) -> (RedisCluster, Vec<PersistentVolumeClaim>) {
    let mut cluster = cluster(3, "redis:7.0");
    cluster.spec.storage = Some(rediscluster_crd::Storage {
        size: size.to_owned(),
        storage_class_name: None,
        persistent_volume_claim_retention_policy: None,
    });
    let claims = (0..3)
        .map(|index| {
            serde_json::from_value(json!({
                "metadata": {"name": format!("data-{NAME}-{index}"), "namespace": NAMESPACE,
                             "uid": format!("claim-uid-{index}"),
                             "labels": crate::names::selector_labels(NAME)},
                "spec": {"resources": {"requests": {"storage": "1Gi"}}},
                "status": {"capacity": {"storage": "1Gi"}}
            }))
            .unwrap()
        })
        .collect();
    (cluster, claims)
}

#[tokio::test]
async fn a_grown_size_patches_each_smaller_claim_and_a_refusal_is_not_repeated() {
    let (cluster, claims) = with_storage("2Gi");
    let sts = statefulset(&cluster, sts_status(3, 3));
    let running = settled(cluster, sts.clone()).await;
    let refuse = |sent: &Sent, stored: &mut Stored| {
        if sent.method == "PATCH" && sent.path.contains("/persistentvolumeclaims/") {
            (
                StatusCode::FORBIDDEN,
                status_body(
                    403,
                    "Forbidden",
                    "only dynamically provisioned pvc can be resized",
                ),
            )
        } else {
            stored.answer(sent)
        }
    };
    let mut harness = Harness::new(refuse).with_children(&running, sts.clone());
    for claim in claims.clone() {
        harness = harness.with_claim(claim);
    }
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    let patches = writes_to(&sent, "persistentvolumeclaims");
    assert_eq!(patches.len(), 3, "{patches:#?}");
    assert_eq!(
        patches[0].body["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    assert!(
        patches[0].body["metadata"]["uid"]
            .as_str()
            .unwrap()
            .starts_with("claim-uid-")
    );
    let status = written_status(&sent).unwrap();
    let sized = status
        .condition(rediscluster_crd::conditions::STORAGE_SIZED)
        .unwrap();
    assert_eq!(
        (sized.status.as_str(), sized.reason.as_str()),
        ("False", "ResizeRefused")
    );
    assert!(
        sized.message.contains("only dynamically provisioned"),
        "{}",
        sized.message
    );
    assert_eq!(status.phase, Phase::Running, "the cluster still serves");

    // The next look does not ask again, and has nothing new to say.
    let refused = with_status(running.clone(), status);
    let (_, sent) = harness.reconcile(&refused).await;
    assert!(sent.is_empty(), "{sent:#?}");

    // Where the StorageClass allows it, the claims are patched and the status waits for them.
    let mut harness = Harness::new(healthy).with_children(&running, sts);
    for claim in claims {
        harness = harness.with_claim(claim);
    }
    let (_, sent) = harness.reconcile(&running).await;
    assert_eq!(writes_to(&sent, "persistentvolumeclaims").len(), 3);
    let status = written_status(&sent).unwrap();
    let sized = status
        .condition(rediscluster_crd::conditions::STORAGE_SIZED)
        .unwrap();
    assert_eq!(
        (sized.status.as_str(), sized.reason.as_str()),
        ("False", "Resizing")
    );
}

#[tokio::test]
async fn a_spec_the_schema_could_not_check_changes_no_pod() {
    let (running, sts) = running_three().await;
    // A memory limit written with an exponent (which CEL cannot size) and too small.
    let mut invalid = running.clone();
    invalid.spec.resources = Some(rediscluster_crd::Resources {
        requests: None,
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1e6".to_owned()),
        )])),
    });
    invalid.metadata.generation = Some(2);
    let harness = Harness::new(healthy).with_children(&invalid, sts);
    let (result, sent) = harness.reconcile(&invalid).await;
    assert!(result.is_ok(), "{result:?}");
    assert!(writes_to(&sent, "statefulsets").is_empty(), "{sent:#?}");
    assert!(sent.iter().all(|s| s.method != "DELETE"));
    let status = written_status(&sent).unwrap();
    assert_eq!(status.phase, Phase::Failed);
    let degraded = status.condition(DEGRADED).unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded
            .message
            .contains("spec.resources.limits.memory must be at least 32Mi, not 1e6"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn while_the_statefulset_adopts_its_pods_the_roles_see_all_of_them() {
    // Recreated to add storage: the new StatefulSet has adopted pod 0 so far; pods 1 (the
    // primary, since a handover) and 2 have no controller yet.
    let (running, sts) = running_three().await;
    let harness = Harness::new(healthy)
        .with_children(&running, sts)
        .with_pods_in_role(3, 1, |index, pod| {
            if index > 0 {
                pod.metadata.owner_references = None;
            }
        });
    let (result, sent) = harness.reconcile(&running).await;
    assert!(result.is_ok(), "{result:?}");
    // Seeing pod 0 alone, it would have been elected primary beside pod 1.
    assert!(harness.redis.ran().is_empty(), "{:?}", harness.redis.ran());
    assert!(role_patches(&sent).is_empty() && sent.iter().all(|s| s.method != "DELETE"));
    let status = written_status(&sent).unwrap();
    assert_eq!(status.primary.as_deref(), Some("cache-1"));
}

/// A status that says the cluster failed because pods could not be created.
fn pods_not_created() -> RedisClusterStatus {
    serde_json::from_value(json!({
        "phase": "Failed",
        "readyReplicas": 1,
        "replicas": 1,
        "observedGeneration": 1,
        "conditions": [{
            "type": "Degraded", "status": "True", "reason": "PodsNotCreated",
            "message": "1/3 Redis pods exist and none was created for 120s",
            "lastTransitionTime": "2026-12-01T00:00:00Z"
        }]
    }))
    .unwrap()
}

#[test]
fn a_statefulset_whose_pods_could_not_be_created_is_nudged_every_interval() {
    let cluster = cluster(3, "redis:7.0");
    let one_of_three = statefulset(&cluster, sts_status(1, 1));
    let nudged_at = |at: Timestamp| {
        let mut sts = one_of_three.clone();
        sts.metadata.annotations = Some(BTreeMap::from([(
            crate::names::NUDGED_AT_ANNOTATION.to_owned(),
            at.to_string(),
        )]));
        sts
    };
    let mut not_synced = one_of_three.clone();
    not_synced.metadata.generation = Some(2);
    let failed = pods_not_created();
    let mut stuck_otherwise = pods_not_created();
    stuck_otherwise.conditions[0].reason = "ContainersNotStarting".to_owned();
    let now = crate::fixtures::at(100);
    let (at_70, at_71) = (crate::fixtures::at(70), crate::fixtures::at(71));
    // (case, status, StatefulSet, pods that exist) → due.
    let cases = [
        ("never nudged", Some(&failed), one_of_three.clone(), 1, true),
        ("nudged 30 s ago", Some(&failed), nudged_at(at_70), 1, true),
        ("nudged 29 s ago", Some(&failed), nudged_at(at_71), 1, false),
        (
            "another failure",
            Some(&stuck_otherwise),
            one_of_three.clone(),
            1,
            false,
        ),
        ("no status yet", None, one_of_three.clone(), 1, false),
        (
            "every pod exists, the count lags",
            Some(&failed),
            one_of_three.clone(),
            3,
            false,
        ),
        (
            "not synced by its controller yet",
            Some(&failed),
            not_synced,
            1,
            false,
        ),
    ];
    for (case, status, sts, exist, due) in cases {
        let nudge = crate::children::nudge_due(status, &sts, exist, now);
        assert_eq!(nudge, due, "{case}");
    }
}

#[tokio::test]
async fn pods_that_could_not_be_created_are_asked_for_again_without_waiting_for_the_controller() {
    let cluster = with_status(cluster(3, "redis:7.0"), pods_not_created());
    let sts = statefulset(&cluster, sts_status(1, 1));
    let harness = Harness::new(healthy).with_children(&cluster, sts);
    let (_, sent) = harness.reconcile(&cluster).await;
    let nudges: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.is("PATCH", "/statefulsets/cache"))
        .collect();
    assert_eq!(nudges.len(), 1, "{sent:#?}");
    let annotations = &nudges[0].body["metadata"]["annotations"];
    assert!(annotations[crate::names::NUDGED_AT_ANNOTATION].is_string());
    assert_eq!(nudges[0].body["metadata"]["uid"], STATEFULSET_UID);
    // The template is untouched: no pod is replaced for a nudge.
    assert!(nudges[0].body.get("spec").is_none());
}
