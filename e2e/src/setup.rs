//! One scenario's namespace, its cluster and what the scenarios assert of it: Running and
//! serving as one primary with linked replicas, keys on every pod, claims where they belong.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use redis_operator::names::{INSTANCE_LABEL, ROLE_LABEL};
use rediscluster_crd::{Phase, RedisCluster};
use serde_json::json;

use crate::{
    NAME, Operator, StatusLog, TestNamespace, TestResult, WAIT, assert_redis_serves, client,
    cluster_pods, failure_grace, has_real_node, progress_deadline, real_node_or_skip, redis_cli,
    replication_info, reports, wait_for, wait_for_within,
};

/// A RedisCluster manifest as JSON.
pub fn redis_cluster(name: &str, image: &str, replicas: i32) -> TestResult<RedisCluster> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cache.example.com/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": name},
        "spec": {"image": image, "replicas": replicas},
    }))?)
}

/// One scenario's namespace and the APIs it uses there.
pub struct Setup {
    pub client: Client,
    pub namespace: TestNamespace,
    pub clusters: Api<RedisCluster>,
    pub statefulsets: Api<StatefulSet>,
    pub services: Api<Service>,
    pub pods: Api<Pod>,
}

impl Setup {
    pub async fn new(test: &str) -> TestResult<Self> {
        let client = client().await?;
        let namespace = TestNamespace::create(&client, test).await?;
        Ok(Self {
            clusters: Api::namespaced(client.clone(), &namespace.name),
            statefulsets: Api::namespaced(client.clone(), &namespace.name),
            services: Api::namespaced(client.clone(), &namespace.name),
            pods: Api::namespaced(client.clone(), &namespace.name),
            client,
            namespace,
        })
    }

    /// Creates the cluster `NAME`.
    pub async fn create_cluster(&self, image: &str, replicas: i32) -> TestResult {
        let cluster = redis_cluster(NAME, image, replicas)?;
        self.clusters
            .create(&PostParams::default(), &cluster)
            .await?;
        Ok(())
    }

    /// After a fault inflicted while `log` recorded the cluster: waits until the operator
    /// noticed (a status other than Running), then until it is Running with `ready` pods and
    /// serving as one primary with linked replicas.
    pub async fn wait_recovered(&self, log: StatusLog, ready: i32) -> TestResult<RedisCluster> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !log
            .snapshot()
            .iter()
            .any(|c| c.status.as_ref().is_some_and(|s| s.phase != Phase::Running))
        {
            if tokio::time::Instant::now() > deadline {
                return Err("the cluster never left Running: the fault went unnoticed".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        log.stop();
        self.wait_running(ready).await
    }

    /// Creates the cluster `NAME` with `fields` (storage, resources, ...) in its spec too.
    pub async fn create_cluster_with(
        &self,
        image: &str,
        replicas: i32,
        fields: serde_json::Value,
    ) -> TestResult {
        let mut cluster = serde_json::to_value(redis_cluster(NAME, image, replicas)?)?;
        if let (Some(spec), Some(fields)) = (cluster["spec"].as_object_mut(), fields.as_object()) {
            spec.extend(fields.clone());
        }
        self.clusters
            .create(&PostParams::default(), &serde_json::from_value(cluster)?)
            .await?;
        Ok(())
    }

    /// Waits until the cluster reports `phase` with `ready` ready pods for its current spec
    /// (`status.observedGeneration` equals `metadata.generation`, so the status was written
    /// for the latest change, not left over from before it).
    pub async fn wait_phase(&self, phase: Phase, ready: i32) -> TestResult<RedisCluster> {
        let what = format!("{phase} with {ready} ready, for the current generation");
        wait_for(&self.clusters, NAME, &what, reports(phase, ready))
            .await?
            .ok_or_else(|| "the RedisCluster vanished".into())
    }

    /// Waits until the cluster is Failed (allowing for the operator's grace period and progress
    /// deadline) and returns its Degraded condition, which must be True.
    pub async fn wait_failed(&self) -> TestResult<Condition> {
        self.wait_failed_within(failure_grace().max(progress_deadline()) + WAIT)
            .await
    }

    /// [`Setup::wait_failed`], within `limit`.
    pub async fn wait_failed_within(&self, limit: Duration) -> TestResult<Condition> {
        let failed = wait_for_within(
            limit,
            &self.clusters,
            NAME,
            "Failed",
            |c: Option<&RedisCluster>| {
                c.and_then(|c| c.status.as_ref())
                    .is_some_and(|s| s.phase == Phase::Failed)
            },
        )
        .await?
        .ok_or("the RedisCluster vanished")?;
        let degraded = failed
            .status
            .as_ref()
            .and_then(|s| s.condition(rediscluster_crd::conditions::DEGRADED))
            .ok_or("no Degraded condition")?
            .clone();
        assert_eq!(degraded.status, "True", "{degraded:?}");
        Ok(degraded)
    }

    /// Waits for Running with `ready` pods, then proves that Redis answers on each of them
    /// and that they are one primary with replicas linked to it, as the labels and the status
    /// say.
    pub async fn wait_running(&self, ready: i32) -> TestResult<RedisCluster> {
        let cluster = self.wait_phase(Phase::Running, ready).await?;
        let expected = usize::try_from(ready)?;
        assert_redis_serves(&self.client, &self.namespace.name, NAME, expected).await?;
        if has_real_node(&self.client).await? {
            self.assert_one_primary_and_linked_replicas().await?;
        }
        Ok(cluster)
    }

    /// A namespace for a scenario that needs Redis to run in its pods (every scenario that
    /// waits for Running does: the operator gives roles only to Redis that answers); `None`,
    /// said, where no node runs pods.
    pub async fn on_real_pods(test: &str) -> TestResult<Option<Self>> {
        if !real_node_or_skip(&client().await?, test).await? {
            return Ok(None);
        }
        Ok(Some(Self::new(test).await?))
    }

    /// A namespace with its own operator and the sample at `replicas`, Running and serving.
    async fn running_sample(test: &str, replicas: i32) -> TestResult<(Self, Operator)> {
        let setup = Self::new(test).await?;
        let operator = Operator::start(&setup.namespace.name)?;
        setup.create_cluster("redis:7.0", replicas).await?;
        setup.wait_running(replicas).await?;
        Ok((setup, operator))
    }

    /// `running_sample` where pods really run; `None`, said, elsewhere.
    pub async fn sample_on_real_pods(
        test: &str,
        replicas: i32,
    ) -> TestResult<Option<(Self, Operator)>> {
        if !real_node_or_skip(&client().await?, test).await? {
            return Ok(None);
        }
        Ok(Some(Self::running_sample(test, replicas).await?))
    }

    /// Where pods really run (`None`, said, elsewhere): a namespace with its own operator and
    /// the cluster at `replicas` with `fields` in its spec, Running and serving.
    pub async fn running_on_real_pods(
        test: &str,
        replicas: i32,
        fields: serde_json::Value,
    ) -> TestResult<Option<(Self, Operator)>> {
        let Some(setup) = Self::on_real_pods(test).await? else {
            return Ok(None);
        };
        let operator = Operator::start(&setup.namespace.name)?;
        setup
            .create_cluster_with("redis:7.0", replicas, fields)
            .await?;
        setup.wait_running(replicas).await?;
        Ok(Some((setup, operator)))
    }

    /// The ClusterIP of the `<name>-primary` Service, where applications write.
    pub async fn primary_address(&self) -> TestResult<String> {
        Ok(self
            .services
            .get(&format!("{NAME}-primary"))
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .ok_or("the primary Service has no ClusterIP")?)
    }

    /// The cluster's password (`redis::password`), None without auth.
    pub async fn password(&self) -> TestResult<Option<String>> {
        crate::password(&self.client, &self.namespace.name, NAME).await
    }

    /// Merge-patches the cluster's spec, as `kubectl patch --type=merge` does.
    pub async fn patch_spec(&self, spec: serde_json::Value) -> TestResult {
        use kube::api::{Patch, PatchParams};
        let patch = json!({ "spec": spec });
        self.clusters
            .patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

impl Setup {
    /// Each live pod by name and uid: a pod replaced under the same name has another uid.
    pub async fn pod_uids(&self) -> TestResult<Vec<(String, String)>> {
        Ok(self
            .live_pods()
            .await?
            .iter()
            .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
            .collect())
    }

    /// The cluster's live pods, by name.
    pub async fn live_pods(&self) -> TestResult<Vec<Pod>> {
        Ok(cluster_pods(&self.client, &self.namespace.name, NAME)
            .await?
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect())
    }

    /// Checks that labels, `status.primary` and what each Redis reports agree: exactly one pod
    /// labelled primary, the one the status names, a Redis primary; every other pod labelled
    /// replica, its Redis linked to the primary's IP. Returns the primary's name.
    pub async fn assert_one_primary_and_linked_replicas(&self) -> TestResult<String> {
        let cluster = self.clusters.get(NAME).await?;
        let primary = cluster
            .status
            .as_ref()
            .and_then(|s| s.primary.clone())
            .ok_or("status.primary is not set")?;
        let pods = self.live_pods().await?;
        let role = |pod: &Pod| pod.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        let labelled: Vec<String> = pods
            .iter()
            .filter(|pod| role(pod) == "primary")
            .map(|pod| pod.name_any())
            .collect();
        assert_eq!(
            labelled,
            std::slice::from_ref(&primary),
            "pods labelled primary"
        );
        let primary_ip = pods
            .iter()
            .find(|pod| pod.name_any() == primary)
            .and_then(|pod| pod.status.as_ref()?.pod_ip.clone())
            .ok_or("the primary has no IP")?;
        for pod in &pods {
            let name = pod.name_any();
            let info = replication_info(&self.namespace.name, &name).await?;
            if name == primary {
                assert_eq!(info["role"], "master", "{name}: {info:?}");
                continue;
            }
            assert_eq!(role(pod), "replica", "{name} is labelled replica");
            assert_eq!(info["role"], "slave", "{name}: {info:?}");
            assert_eq!(
                info["master_host"], primary_ip,
                "{name} follows the primary"
            );
            assert_eq!(info["master_link_status"], "up", "{name}: {info:?}");
        }
        Ok(primary)
    }

    /// A pod of the cluster other than `than`, to run a client in (a pod reaching a Service
    /// that routes back to itself needs hairpin NAT, which not every bridge has).
    async fn pod_other_than(&self, than: &str) -> TestResult<String> {
        self.live_pods()
            .await?
            .iter()
            .map(|pod| pod.name_any())
            .find(|name| name != than)
            .ok_or_else(|| "no other pod".into())
    }

    /// Writes `keys` with one MSET through the `<name>-primary` Service, from a replica pod.
    pub async fn write_through_primary_service(&self, keys: &[(String, String)]) -> TestResult {
        let primary = self.assert_one_primary_and_linked_replicas().await?;
        let client_pod = self.pod_other_than(&primary).await?;
        let service = format!("{NAME}-primary");
        let mut command = vec!["-h", &service, "mset"];
        for (key, value) in keys {
            command.extend([key.as_str(), value.as_str()]);
        }
        let answer = redis_cli(&self.namespace.name, &client_pod, &command).await?;
        assert_eq!(answer, "OK", "MSET through {service}");
        Ok(())
    }

    /// The values of `keys` as read with one MGET in `pod`, or, with `service`, from `pod`
    /// through that Service.
    pub async fn read_keys(
        &self,
        pod: &str,
        service: Option<&str>,
        keys: &[(String, String)],
    ) -> TestResult<Vec<String>> {
        let mut command: Vec<&str> = Vec::new();
        if let Some(service) = service {
            command.extend(["-h", service]);
        }
        command.push("mget");
        command.extend(keys.iter().map(|(key, _)| key.as_str()));
        let answer = redis_cli(&self.namespace.name, pod, &command).await?;
        Ok(answer.lines().map(str::to_owned).collect())
    }

    /// Asserts that every pod holds every one of `keys` with its value, read in the pod, and
    /// that a read through `<name>-replicas` (from the primary's pod) returns them all.
    /// Replication is asynchronous: each read is retried for up to 10 s.
    pub async fn assert_every_pod_holds(&self, keys: &[(String, String)]) -> TestResult {
        let expected: Vec<String> = keys.iter().map(|(_, value)| value.clone()).collect();
        let primary = self.assert_one_primary_and_linked_replicas().await?;
        let replicas_service = format!("{NAME}-replicas");
        let mut reads: Vec<(String, Option<&str>)> = self
            .live_pods()
            .await?
            .iter()
            .map(|pod| (pod.name_any(), None))
            .collect();
        if reads.len() > 1 {
            reads.push((primary.clone(), Some(replicas_service.as_str())));
        }
        for (pod, service) in reads {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let values = self.read_keys(&pod, service, keys).await?;
                if values == expected {
                    break;
                }
                if Instant::now() > deadline {
                    let missing = values.iter().zip(&expected).filter(|(a, b)| a != b).count();
                    return Err(format!(
                        "{pod} (through {service:?}) lacks {missing} of {} keys",
                        keys.len()
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

impl Setup {
    /// The cluster's claims (made by its StatefulSet, labelled with its instance), name → uid.
    pub async fn claim_uids(&self) -> TestResult<BTreeMap<String, String>> {
        let selector = format!("{INSTANCE_LABEL}={NAME}");
        Ok(
            Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &self.namespace.name)
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .iter()
                .filter(|claim| claim.metadata.deletion_timestamp.is_none())
                .map(|claim| (claim.name_any(), claim.uid().unwrap_or_default()))
                .collect(),
        )
    }

    /// The claim each live pod mounts as its data volume, pod → claim.
    pub async fn mounted_claims(&self) -> TestResult<BTreeMap<String, Option<String>>> {
        Ok(self
            .live_pods()
            .await?
            .iter()
            .map(|pod| {
                let claim = pod
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.volumes.as_ref())
                    .and_then(|volumes| volumes.iter().find(|v| v.name == "data"))
                    .and_then(|volume| volume.persistent_volume_claim.as_ref())
                    .map(|claim| claim.claim_name.clone());
                (pod.name_any(), claim)
            })
            .collect())
    }
}

/// Pods `0..replicas` of the cluster, each on its claim `data-<pod>`.
pub fn claims_of_pods(replicas: i32) -> BTreeMap<String, Option<String>> {
    (0..replicas)
        .map(|i| (format!("{NAME}-{i}"), Some(format!("data-{NAME}-{i}"))))
        .collect()
}
