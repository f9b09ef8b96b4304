//! What the operator remembers of each cluster between reconciles, in one place behind one
//! lock. No role decision depends on it for safety: a restarted operator starts with nothing,
//! which only delays a measurement, a retry or a deletion. What a decision may read of it goes
//! through `topology::Policy` (a handover held back, pods still settling).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;
use crate::topology::{Change, HANDOVER_RETRY, Outage, ROUTING_FOLLOW};

/// Every cluster's memory, by cluster uid.
#[derive(Default)]
pub struct Memory(Mutex<HashMap<String, ClusterMemory>>);

impl Memory {
    /// Runs `f` on the cluster's memory, forgetting clusters that have nothing left worth
    /// keeping (so that clusters that are gone are forgotten).
    pub fn recall<T>(&self, cluster_uid: &str, f: impl FnOnce(&mut ClusterMemory) -> T) -> T {
        let mut clusters = lock(&self.0);
        clusters.retain(|uid, memory| uid == cluster_uid || !memory.is_empty());
        f(clusters.entry(cluster_uid.to_owned()).or_default())
    }
}

/// How long a change of primary is remembered: the cached status shows it well before.
const REMEMBER_CHANGE: Duration = Duration::from_secs(60);

/// How long a status that only refines the one last written (counts, messages, a first
/// primary) may wait before it is written: a cluster on its way up moves a count at each pod
/// event, and writing each would cost the API server a write per event and per cluster.
/// Anything a client acts on is written at once (`status::when_to_write`).
pub const DETAIL_HOLD: Duration = Duration::from_secs(5);

/// How soon a claim whose growth the API server refused is asked again: the refusal is about
/// its StorageClass, which changes rarely, and every look would otherwise repeat it.
pub const RESIZE_RETRY: Duration = Duration::from_secs(300);

/// What is remembered of one cluster.
#[derive(Default)]
pub struct ClusterMemory {
    /// When the primary was first seen in trouble (silent, leaving, no quorum...).
    trouble_since: Option<Instant>,
    /// The last change of primary this operator made, and when.
    last_change: Option<(Change, Instant)>,
    /// When a handover last failed.
    handover_failed: Option<Instant>,
    /// Pods (by uid) that lost the primary role lately, and when.
    demoted: HashMap<String, Instant>,
    /// Claims whose growth the API server refused lately.
    pub refusals: Refusals,
    /// When this process last wrote the cluster's status.
    pub status_written: Option<Instant>,
}

impl ClusterMemory {
    /// Nothing left worth keeping.
    fn is_empty(&self) -> bool {
        self.trouble_since.is_none()
            && self
                .last_change
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= REMEMBER_CHANGE)
            && !self.handover_failed_lately()
            && self
                .demoted
                .values()
                .all(|at| at.elapsed() >= ROUTING_FOLLOW)
            && self.refusals.is_empty()
            && self
                .status_written
                .is_none_or(|at| at.elapsed() >= DETAIL_HOLD)
    }

    /// Whether a handover failed less than [`HANDOVER_RETRY`] ago.
    pub fn handover_failed_lately(&self) -> bool {
        self.handover_failed
            .is_some_and(|at| at.elapsed() < HANDOVER_RETRY)
    }

    /// Notes the outcome of this look's handover, if there was one. A change of primary is a
    /// new situation: a handover that failed before it does not hold back the next one.
    pub fn note_handover(&mut self, failed: bool, primary_changed: bool) {
        if failed {
            self.handover_failed = Some(Instant::now());
        } else if primary_changed {
            self.handover_failed = None;
        }
    }

    /// Notes whether the primary is in trouble (`outage`), and returns when the trouble began
    /// if `change` replaces it after a failure (forgetting it then, or when the trouble is
    /// over).
    pub fn note_trouble(
        &mut self,
        outage: Option<Outage>,
        change: Option<&Change>,
    ) -> Option<Instant> {
        let in_trouble = matches!(
            outage,
            Some(
                Outage::PrimaryNotAnswering
                    | Outage::PrimaryUnreachable
                    | Outage::NoQuorum
                    | Outage::NoCandidate
                    | Outage::PrimaryLeaving
            )
        );
        if in_trouble {
            self.trouble_since.get_or_insert_with(Instant::now);
            return None;
        }
        let began = self.trouble_since.take();
        began.filter(|_| change.is_some_and(|c| c.reason.is_failover()))
    }

    /// The change that made `primary` (this look's `change`, or the last one remembered if it
    /// made the same primary), and whether this look's is new. A reconcile that still sees the
    /// old labels in the cache decides the same change again (its patches change nothing): it
    /// is counted and told once.
    pub fn note_change(
        &mut self,
        change: Option<&Change>,
        primary: Option<&str>,
    ) -> (Option<Change>, bool) {
        match (change, primary) {
            (Some(change), Some(_)) => {
                let repeated = self.last_change.as_ref().is_some_and(|(last, _)| {
                    (&last.from, &last.to, last.reason) == (&change.from, &change.to, change.reason)
                });
                self.last_change = Some((change.clone(), Instant::now()));
                (Some(change.clone()), !repeated)
            }
            (_, primary) => {
                let remembered = self
                    .last_change
                    .as_ref()
                    .map(|(change, _)| change)
                    .filter(|change| Some(change.to.as_str()) == primary);
                (remembered.cloned(), false)
            }
        }
    }

    /// The pods (by uid) that lost the primary role less than [`ROUTING_FOLLOW`] ago, and how
    /// long ago.
    pub fn demoted(&self) -> HashMap<String, Duration> {
        self.demoted
            .iter()
            .map(|(uid, at)| (uid.clone(), at.elapsed()))
            .filter(|(_, ago)| *ago < ROUTING_FOLLOW)
            .collect()
    }

    /// Remembers the pods (by uid) that just lost the primary role.
    pub fn note_demoted(&mut self, uids: impl IntoIterator<Item = String>) {
        self.demoted.retain(|_, at| at.elapsed() < ROUTING_FOLLOW);
        let now = Instant::now();
        self.demoted.extend(uids.into_iter().map(|uid| (uid, now)));
    }
}

/// Refused resizes, by claim uid: the size asked for, the API server's answer, and when.
#[derive(Default)]
pub struct Refusals(HashMap<String, (String, String, Instant)>);

impl Refusals {
    /// The refusal of growing this claim to `size`, if one is recent.
    pub fn recent(&self, uid: &str, size: &str) -> Option<String> {
        self.0
            .get(uid)
            .filter(|(asked, _, at)| asked == size && at.elapsed() < RESIZE_RETRY)
            .map(|(_, message, _)| message.clone())
    }

    /// Records the API server's answer to growing this claim: a refusal's message, or `None`.
    pub fn record(&mut self, uid: &str, size: &str, message: Option<String>) {
        // Past the retry delay a refusal is asked again anyway: claims since deleted go too.
        self.0.retain(|_, (_, _, at)| at.elapsed() < RESIZE_RETRY);
        match message {
            Some(message) => {
                self.0
                    .insert(uid.to_owned(), (size.to_owned(), message, Instant::now()));
            }
            None => {
                self.0.remove(uid);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0
            .values()
            .all(|(_, _, at)| at.elapsed() >= RESIZE_RETRY)
    }
}
