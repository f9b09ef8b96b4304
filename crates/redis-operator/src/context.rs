//! What a reconcile needs, shared by all of them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use rediscluster_crd::RedisCluster;

use crate::MANAGER;
use crate::auth::Credentials;
use crate::backoff::Backoff;
use crate::leader::Tenure;
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::pacing::Pacing;
use crate::redis::client::RedisAccess;
use crate::rolls::RollTurns;
use crate::trim::Packed;

/// Tunables of the reconcile loop, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a pod may sit in ImagePullBackOff and the like before the cluster is `Failed`.
    pub failure_grace: Duration,
    /// How long the pod counts of a cluster on its way to Running may stand still before it
    /// is `Failed`.
    pub progress_deadline: Duration,
    /// How many clusters replace their pods at once (`rolls::RollTurns`); 0: no limit.
    pub max_concurrent_rolls: usize,
    /// How often every cluster is looked at again even when nothing changed.
    pub resync_interval: Duration,
    /// How often the Redis of a cluster whose pods have addresses is asked about replication
    /// (pod events trigger it too).
    pub redis_probe_interval: Duration,
    /// How long a primary's Redis may stay silent before a replica is promoted.
    pub failover_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            failure_grace: Duration::from_secs(120),
            progress_deadline: Duration::from_secs(600),
            max_concurrent_rolls: 4,
            resync_interval: Duration::from_secs(600),
            redis_probe_interval: Duration::from_secs(5),
            failover_after: Duration::from_secs(5),
        }
    }
}

/// Read-only caches of the children, filled by the controller's watches.
#[derive(Clone)]
pub struct Stores {
    pub statefulsets: Store<Packed<StatefulSet>>,
    pub services: Store<Packed<Service>>,
    pub pods: Store<Packed<Pod>>,
    pub disruption_budgets: Store<PodDisruptionBudget>,
    /// The claims of clusters with storage (made by their StatefulSets from our template).
    pub claims: Store<PersistentVolumeClaim>,
}

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    /// One recorder for every event, so that repeats are folded into series.
    pub recorder: Recorder,
    pub settings: Settings,
    pub backoff: Backoff<ObjectRef<RedisCluster>>,
    pub metrics: Arc<Metrics>,
    /// The pods' Redis.
    pub redis: Arc<dyn RedisAccess>,
    /// What is remembered of each cluster between reconciles (`memory::ClusterMemory`).
    pub memory: Memory,
    /// Whether this instance may write now (under leader election, while its Lease holds).
    pub tenure: Arc<Tenure>,
    /// The operator's key to every cluster's `operator` and `replica` passwords.
    pub credentials: Credentials,
    /// Which clusters may replace their pods now.
    pub rolls: RollTurns,
    /// How often each cluster's Redis is probed, given how many there are.
    pub pacing: Pacing,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        metrics: Arc<Metrics>,
        redis: Arc<dyn RedisAccess>,
        credentials: Credentials,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            rolls: RollTurns::new(settings.max_concurrent_rolls),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            settings,
            backoff: Backoff::standard(),
            metrics,
            redis,
            memory: Memory::default(),
            tenure: Arc::new(Tenure::unbounded()),
            credentials,
            pacing: Pacing::default(),
        }
    }

    pub fn with_pacing(self, pacing: Pacing) -> Self {
        Self { pacing, ..self }
    }

    pub fn with_tenure(self, tenure: Arc<Tenure>) -> Self {
        Self { tenure, ..self }
    }
}
