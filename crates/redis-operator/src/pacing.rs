//! How often each cluster's Redis can be probed without the reconcile loop falling behind.
//!
//! Every cluster whose pods answer is reconciled again after the probe interval. When the
//! clusters ask for more reconciles than `--concurrency` of them at a time can do, kube-runtime
//! holds the ones that are due in a set and always takes the first it finds there, in the set's
//! own order: the same clusters are served again and again, and the others wait for good (seen at
//! 1000 clusters: 120 of them not reconciled for 14 minutes, their pods long ready). So the
//! interval is stretched to what the loop keeps up with, measured, with room to spare for the
//! reconciles that changes ask for; every cluster is then probed, only less often.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kube::runtime::reflector::{self, Store};
use rediscluster_crd::RedisCluster;

/// The share of the loop's capacity the probes may take; the rest is for changes.
const PROBE_SHARE: f64 = 0.8;

/// The weight of each new reconcile in the running mean of their durations: small, so that a
/// few slow ones (a status write to a busy API server) do not stretch every cluster's interval.
const MEAN_WEIGHT: f64 = 1.0 / 128.0;

pub struct Pacing {
    /// Every RedisCluster this process reconciles.
    clusters: Store<RedisCluster>,
    /// Reconciles run at once (`--concurrency`).
    concurrency: u16,
    /// Running mean of a reconcile's duration, in nanoseconds.
    mean_nanos: AtomicU64,
}

impl Pacing {
    pub fn new(clusters: Store<RedisCluster>, concurrency: u16) -> Self {
        Self {
            clusters,
            concurrency,
            mean_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one reconcile's duration into the running mean.
    pub fn record(&self, took: Duration) {
        let sample = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        let _ = self
            .mean_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |mean| {
                Some(running_mean(mean, sample))
            });
    }

    /// The probe interval for now: `configured`, or longer when the loop could not keep up.
    pub fn probe_interval(&self, configured: Duration) -> Duration {
        let mean = Duration::from_nanos(self.mean_nanos.load(Ordering::Relaxed));
        probe_interval(configured, self.clusters.len(), mean, self.concurrency)
    }
}

impl Default for Pacing {
    /// No clusters known: the configured interval, always.
    fn default() -> Self {
        Self::new(reflector::store().0, 1)
    }
}

/// The first sample is the mean; each later one moves it by [`MEAN_WEIGHT`].
fn running_mean(mean: u64, sample: u64) -> u64 {
    if mean == 0 {
        return sample;
    }
    (mean as f64 + (sample as f64 - mean as f64) * MEAN_WEIGHT) as u64
}

/// The shortest interval, not below `configured`, at which probing every one of `clusters`
/// (reconciles of `mean` each, `concurrency` at a time) takes [`PROBE_SHARE`] of the loop.
pub fn probe_interval(
    configured: Duration,
    clusters: usize,
    mean: Duration,
    concurrency: u16,
) -> Duration {
    let sweep = mean.as_secs_f64() * clusters as f64 / f64::from(concurrency.max(1));
    configured.max(Duration::from_secs_f64(sweep / PROBE_SHARE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE: Duration = Duration::from_secs(5);

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_interval_stretches_only_past_what_the_loop_keeps_up_with() {
        // (clusters, mean reconcile, concurrency, interval)
        let table = [
            // 30 clusters at 10 ms, 4 at a time: a sweep takes 75 ms.
            (30, ms(10), 4, FIVE),
            // No reconcile measured yet.
            (1000, ms(0), 4, FIVE),
            // 1000 at 16 ms, 4 at a time: a sweep takes 4 s, 5 s with the spare fifth.
            (1000, ms(16), 4, FIVE),
            // 1000 at 28 ms (seen on a loaded machine): 7 s, 8.75 s with the spare.
            (1000, ms(28), 4, ms(8750)),
            // Four times the concurrency, a quarter of the sweep.
            (1000, ms(28), 16, FIVE),
            (4000, ms(28), 16, ms(8750)),
            // A concurrency of 0 would mean no limit to kube; counted as 1, never a division
            // by 0.
            (100, ms(50), 0, ms(6250)),
        ];
        for (clusters, mean, concurrency, expected) in table {
            assert_eq!(
                probe_interval(FIVE, clusters, mean, concurrency),
                expected,
                "{clusters} clusters at {mean:?}, {concurrency} at a time"
            );
        }
    }

    #[test]
    fn the_mean_starts_at_the_first_reconcile_and_follows_later_ones_slowly() {
        assert_eq!(running_mean(0, 32_000), 32_000);
        assert_eq!(running_mean(32_000, 48_000), 32_125);
        assert_eq!(running_mean(32_000, 16_000), 31_875);
    }

    /// A listed cache of clusters `c0` to `c{clusters - 1}`.
    fn store_of(clusters: usize) -> Store<RedisCluster> {
        use kube::runtime::watcher::Event;
        let (store, mut writer) = reflector::store::<RedisCluster>();
        writer.apply_watcher_event(&Event::Init);
        for i in 0..clusters {
            let mut cluster = crate::fixtures::cluster(1, "redis:7.2");
            cluster.metadata.name = Some(format!("c{i}"));
            writer.apply_watcher_event(&Event::InitApply(cluster));
        }
        writer.apply_watcher_event(&Event::InitDone);
        store
    }

    #[test]
    fn pacing_counts_the_cached_clusters() {
        let pacing = Pacing::new(store_of(1000), 4);
        pacing.record(ms(28));
        assert_eq!(pacing.probe_interval(FIVE), ms(8750));
    }

    /// Runs kube-runtime's reconcile loop for 60 s of paused time over `clusters`, one
    /// reconcile of 10 ms at a time, each asking to come back after `interval(pacing)`; counts
    /// the reconciles of each cluster.
    async fn reconciles_per_cluster(
        clusters: usize,
        interval: fn(&Pacing) -> Duration,
    ) -> Vec<usize> {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        use futures::StreamExt;
        use kube::ResourceExt;
        use kube::runtime::controller::{self, Action};
        use kube::runtime::reflector::ObjectRef;

        let store = store_of(clusters);
        let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let pacing = Arc::new(Pacing::new(store.clone(), 1));
        let reconcile = {
            let counts = counts.clone();
            move |cluster: Arc<RedisCluster>, pacing: Arc<Pacing>| {
                let counts = counts.clone();
                Box::pin(async move {
                    *counts
                        .lock()
                        .unwrap()
                        .entry(cluster.name_any())
                        .or_default() += 1;
                    let took = ms(10);
                    tokio::time::sleep(took).await;
                    pacing.record(took);
                    Ok::<_, std::io::Error>(Action::requeue(interval(&pacing)))
                })
            }
        };
        let queue = futures::stream::iter(store.state())
            .map(|cluster| Ok::<_, std::convert::Infallible>(ObjectRef::from_obj(&*cluster)))
            .chain(futures::stream::pending());
        let applier = controller::applier(
            reconcile,
            |_, _, _| Action::await_change(),
            pacing,
            store,
            queue,
            controller::Config::default().concurrency(1),
        )
        .for_each(|_| async {});
        let _ = tokio::time::timeout(Duration::from_secs(60), applier).await;
        let counts = counts.lock().unwrap();
        (0..clusters)
            .map(|i| counts.get(&format!("c{i}")).copied().unwrap_or(0))
            .collect()
    }

    /// 200 clusters probed every 1 s at 10 ms a reconcile ask for twice what one reconcile at
    /// a time can do. kube-runtime then serves some clusters again and again and leaves others
    /// waiting for good: the fixed interval is the control that shows the test can tell.
    #[tokio::test(start_paused = true)]
    async fn an_overloaded_loop_starves_clusters_and_a_paced_one_reaches_every_cluster() {
        let fixed = reconciles_per_cluster(200, |_| Duration::from_secs(1)).await;
        assert!(
            fixed.iter().any(|&n| n <= 1),
            "some cluster starves at the fixed interval: {fixed:?}"
        );
        let paced =
            reconciles_per_cluster(200, |pacing| pacing.probe_interval(Duration::from_secs(1)))
                .await;
        // 200 reconciles of 10 ms, one at a time, are a 2 s sweep: 2.5 s with the spare, so
        // about 24 in 60 s for each cluster.
        let (fewest, most) = (paced.iter().min(), paced.iter().max());
        assert!(
            fewest >= Some(&20) && most <= Some(&26),
            "every cluster reconciled about as often: {paced:?}"
        );
    }

    #[test]
    fn pacing_without_clusters_keeps_the_configured_interval() {
        let pacing = Pacing::default();
        pacing.record(Duration::from_secs(3));
        assert_eq!(pacing.probe_interval(FIVE), FIVE);
    }
}
