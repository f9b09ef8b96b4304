//! Waiting for the cluster to reach a state, by watching, with a limit; and recording every
//! version of an object while a fault runs.

use std::fmt::Debug;
use std::time::Duration;

use kube::runtime::wait::await_condition;
use kube::{Api, Resource};
use rediscluster_crd::{Phase, RedisCluster};

use crate::{TestResult, WAIT};

/// Waits, by watching, until `condition` holds for the named object; fails after `WAIT`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> TestResult<Option<K>>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    wait_for_within(WAIT, api, name, what, condition).await
}

/// `wait_for` with a limit of its own, for waits that include a known delay.
pub async fn wait_for_within<K>(
    limit: Duration,
    api: &Api<K>,
    name: &str,
    what: &str,
    condition: impl Fn(Option<&K>) -> bool,
) -> TestResult<Option<K>>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            let current = api.get_opt(name).await?;
            Err(format!(
                "timed out after {limit:?} waiting for {name}: {what}; last seen: {current:#?}"
            )
            .into())
        }
    }
}

/// Every version of one object while it was recorded, as its watch delivered them.
pub struct WatchLog<K> {
    seen: std::sync::Arc<std::sync::Mutex<Vec<K>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Every status a RedisCluster had while it was recorded.
pub type StatusLog = WatchLog<RedisCluster>;

impl<K> WatchLog<K>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    /// Starts recording the named object; the first entry is its state now.
    pub fn start(api: &Api<K>, name: &str) -> Self {
        use futures::StreamExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let config =
            kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        let stream = kube::runtime::watcher(api.clone(), config);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            while let Some(Ok(object)) = stream.next().await {
                if let Ok(mut log) = log.lock() {
                    log.push(object);
                }
            }
        });
        Self { seen, task }
    }

    /// What was seen so far, oldest first.
    pub fn snapshot(&self) -> Vec<K> {
        self.seen.lock().map(|log| log.clone()).unwrap_or_default()
    }

    /// Stops recording and returns what was seen, oldest first.
    pub fn stop(self) -> Vec<K> {
        self.task.abort();
        self.snapshot()
    }
}

/// The cluster reports `phase` with `ready` ready pods, for its current generation.
pub fn reports(phase: Phase, ready: i32) -> impl Fn(Option<&RedisCluster>) -> bool {
    move |cluster| {
        cluster.is_some_and(|c| {
            c.status.as_ref().is_some_and(|s| {
                s.phase == phase
                    && s.ready_replicas == ready
                    && s.observed_generation.is_some()
                    && s.observed_generation == c.metadata.generation
            })
        })
    }
}
