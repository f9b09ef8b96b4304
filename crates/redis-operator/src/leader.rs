//! Leader election on a coordination.k8s.io/v1 Lease, through `kube-lease-manager`: only the
//! holder reconciles. A holder that fails to renew gives up before its lease runs out, because
//! the renewal is attempted `renew_margin` before expiry and any failure of it ends leadership.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, future};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tracing::{info, warn};

use crate::sync::lock;

/// Until when this instance may act as the leader, by the Lease it last saw: the renewal the
/// Lease records, plus the lease duration, less half the renewal margin (the next renewal is
/// due a whole margin before expiry; half is left for the news of it to arrive). A leader
/// paused past its Lease (a stopped process, a long stall) finds its tenure over when it
/// resumes, before it sends a command to Redis or a label, whatever its renewal loop has not
/// noticed yet. Without leader election, it never ends.
pub struct Tenure {
    bounded: bool,
    until: Mutex<Option<Instant>>,
}

impl Tenure {
    /// No leader election: this instance is the only one.
    pub fn unbounded() -> Self {
        Self {
            bounded: false,
            until: Mutex::new(None),
        }
    }

    /// Under leader election, with no Lease seen yet.
    pub fn bounded() -> Self {
        Self {
            bounded: true,
            until: Mutex::new(None),
        }
    }

    /// Whether this instance may write now.
    pub fn holds(&self) -> bool {
        !self.bounded || lock(&self.until).is_some_and(|until| Instant::now() < until)
    }

    /// Takes in a Lease seen at `now`: held by `identity`, it extends the tenure to its
    /// expiry less half the margin; held by another, it ends it.
    pub fn saw(&self, lease: &LeaseObject, election: &Election, now: Timestamp) {
        let spec = lease.spec.as_ref();
        let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(&election.identity);
        let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        *lock(&self.until) = match (ours, renewed) {
            (true, Some(renewed)) => {
                let age = Duration::try_from(now.duration_since(renewed)).unwrap_or(Duration::ZERO);
                Self::length(election)
                    .checked_sub(age)
                    .map(|left| Instant::now() + left)
            }
            _ => None,
        };
    }

    /// This instance just took or renewed the Lease.
    fn renewed(&self, election: &Election) {
        *lock(&self.until) = Some(Instant::now() + Self::length(election));
    }

    /// How long a tenure lasts from a renewal.
    fn length(election: &Election) -> Duration {
        election.lease_duration - election.renew_margin / 2
    }
}

type LeaseObject = k8s_openapi::api::coordination::v1::Lease;

/// How this instance takes part in leader election.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease_name: String,
    pub namespace: String,
    /// Unique among the candidates: the pod name in a cluster.
    pub identity: String,
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// How long before expiry the holder renews; also the most clock skew tolerated.
    pub renew_margin: Duration,
}

impl Election {
    /// The margin must leave room for a renewal inside the lease.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_margin.is_zero() || self.renew_margin >= self.lease_duration {
            return Err(format!(
                "--lease-renew-margin ({:?}) must be above zero and below --lease-duration ({:?})",
                self.renew_margin, self.lease_duration
            ));
        }
        if self.lease_duration.subsec_nanos() != 0 || self.renew_margin.subsec_nanos() != 0 {
            return Err("lease durations are whole seconds".to_owned());
        }
        Ok(())
    }

    /// The default identity outside a pod: host name and process id, unique on one machine.
    pub fn local_identity() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

pub struct Lease {
    manager: LeaseManager,
    /// To build the manager anew (see `acquired`).
    client: Client,
    election: Election,
    identity: String,
    /// For watching the Lease, with a client whose timeouts suit long-running watches.
    leases: Api<LeaseObject>,
    lease_name: String,
}

impl Lease {
    /// Joins the election (creating the Lease if it does not exist); does not wait to win.
    /// `client` should time out well inside `renew_margin`, so that a hung renewal still ends
    /// leadership before the lease expires; `watch_client` is for the long-running watch.
    pub async fn join(
        client: Client,
        watch_client: Client,
        election: &Election,
    ) -> Result<Self, LeaseManagerError> {
        let manager = manager(&client, election).await?;
        info!(lease = %election.lease_name, namespace = %election.namespace, identity = %election.identity, "joined leader election");
        Ok(Self {
            manager,
            client,
            election: election.clone(),
            identity: election.identity.clone(),
            leases: Api::namespaced(watch_client, &election.namespace),
            lease_name: election.lease_name.clone(),
        })
    }

    /// Keeps `tenure` to what the Lease says as it changes (every renewal changes it).
    pub async fn keep(&self, tenure: &Tenure) {
        let mut leases = std::pin::pin!(self.watch());
        while let Some(lease) = leases.next().await {
            if let Ok(lease) = lease {
                tenure.saw(&lease, &self.election, Timestamp::now());
            }
        }
    }

    /// Waits until this instance holds the lease, and starts `tenure`. API errors are retried:
    /// a standby keeps trying.
    pub async fn acquired(&mut self, tenure: &Tenure) {
        self.wait_to_acquire().await;
        tenure.renewed(&self.election);
    }

    async fn wait_to_acquire(&mut self) {
        // A standby otherwise sleeps until the holder's lease would expire; watching the Lease
        // lets it take over as soon as a leader that shuts down releases it.
        let mut released = std::pin::pin!(self.releases());
        loop {
            tokio::select! {
                result = self.manager.changed() => match result {
                    Ok(true) => {
                        info!(identity = %self.identity, "became the leader");
                        return;
                    }
                    Ok(false) => {}
                    Err(error) => {
                        warn!(%error, "leader election: cannot read or take the lease; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                // The manager trusts its cached view of the Lease until that expires. A new one
                // starts with none: its first `changed()` reads the Lease, and takes it if it
                // is still free, by an apply that conflicts with anyone who took it first.
                // (The manager's own `release()` must not serve for this: with a cached view
                // that has expired it clears the holder whoever holds it, and a standby that
                // saw the Lease free a moment before another candidate took it would then
                // unseat that candidate, and both would lead until its next renewal.)
                Some(()) = released.next() => {
                    match manager(&self.client, &self.election).await {
                        Ok(fresh) => self.manager = fresh,
                        Err(error) => warn!(%error, "leader election: cannot re-read the released lease"),
                    }
                }
            }
        }
    }

    /// Yields whenever the Lease is seen without a holder.
    fn releases(&self) -> impl Stream<Item = ()> + use<> {
        self.watch().filter_map(|lease| {
            let free =
                lease.is_ok_and(|lease| lease.spec.and_then(|spec| spec.holder_identity).is_none());
            future::ready(free.then_some(()))
        })
    }

    /// The Lease as it changes (every renewal changes it).
    fn watch(&self) -> impl Stream<Item = Result<LeaseObject, watcher::Error>> + use<> {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.lease_name));
        watcher(self.leases.clone(), config)
            .default_backoff()
            .applied_objects()
    }

    /// Keeps renewing while this instance leads; returns why leadership ended.
    pub async fn held(&self) -> String {
        loop {
            match self.manager.changed().await {
                Ok(true) => {}
                Ok(false) => return "another instance holds the lease".to_owned(),
                Err(error) => return format!("cannot renew the lease: {error}"),
            }
        }
    }

    /// Gives the lease up so that a standby takes over at once rather than after expiry.
    /// One retry: at shutdown the release can meet a pooled connection that just closed
    /// (`SendRequest`), and a lost release costs the standby the whole lease duration.
    pub async fn release(&self) {
        for attempt in 1..=2 {
            match self.manager.release().await {
                Ok(()) => {
                    info!(identity = %self.identity, "released the lease");
                    return;
                }
                Err(error) if attempt == 1 => {
                    warn!(%error, "could not release the lease; trying once more");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => warn!(%error, "could not release the lease; it expires on its own"),
            }
        }
    }
}

/// A lease manager for `election` that has not read the Lease yet (it creates it if missing).
async fn manager(client: &Client, election: &Election) -> Result<LeaseManager, LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), &election.lease_name)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_duration.as_secs())
        .with_grace(election.renew_margin.as_secs())
        .build()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election(duration: u64, margin_ms: u64) -> Election {
        Election {
            lease_name: "redis-operator-leader".to_owned(),
            namespace: "redis-operator-system".to_owned(),
            identity: "a".to_owned(),
            lease_duration: Duration::from_secs(duration),
            renew_margin: Duration::from_millis(margin_ms),
        }
    }

    #[test]
    fn margins_must_fit_inside_the_lease() {
        assert!(election(15, 5000).validate().is_ok());
        assert!(election(15, 0).validate().is_err());
        assert!(election(15, 15000).validate().is_err());
        assert!(election(15, 20000).validate().is_err());
        assert!(election(15, 1500).validate().is_err(), "whole seconds only");
    }

    fn lease(holder: &str, renewed: Timestamp) -> LeaseObject {
        LeaseObject {
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    renewed,
                )),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_tenure_lasts_as_long_as_the_lease_it_saw_less_half_the_margin() {
        let election = election(15, 2000);
        let now = Timestamp::now();
        let seconds = |s: i64| now - k8s_openapi::jiff::SignedDuration::from_secs(s);
        let tenure = Tenure::bounded();
        assert!(!tenure.holds(), "no Lease seen yet");
        tenure.saw(&lease("a", seconds(1)), &election, now);
        assert!(tenure.holds(), "renewed a second ago: 13 s left");
        tenure.saw(&lease("a", seconds(14)), &election, now);
        assert!(
            !tenure.holds(),
            "renewed 14 s ago: within the last half margin"
        );
        tenure.saw(&lease("a", seconds(1)), &election, now);
        tenure.saw(&lease("b", now), &election, now);
        assert!(!tenure.holds(), "another holds it");
        tenure.renewed(&election);
        assert!(tenure.holds(), "just took it");
        assert!(Tenure::unbounded().holds(), "no election: always");
    }

    #[test]
    fn local_identity_is_per_process() {
        assert!(Election::local_identity().ends_with(&format!("-{}", std::process::id())));
    }
}
