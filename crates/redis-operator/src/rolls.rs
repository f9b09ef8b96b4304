//! How many clusters replace their pods at once, across the operator: a roll of every cluster
//! at once (an image change of all of them) would make the machine's Redis sync and hand over
//! together, and stretch every handover's write pause. Clusters past the limit wait their turn,
//! their status saying so; a turn lasts until the cluster has no outdated pod left.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A turn not renewed for this long is taken back: its cluster was deleted, or another
/// operator leads now. A rolling cluster is looked at every probe interval (seconds).
pub const TURN_EXPIRES: Duration = Duration::from_secs(60);

/// The turns to roll, by cluster uid, and when each holder last asked.
pub struct RollTurns {
    /// 0: no limit.
    max: usize,
    holders: Mutex<HashMap<String, Instant>>,
}

impl RollTurns {
    pub fn new(max: usize) -> Self {
        RollTurns {
            max,
            holders: Mutex::default(),
        }
    }

    /// Whether the cluster `uid`, which has outdated pods (`rolling`) or not, may replace one
    /// now: it holds a turn, or takes a free one. A cluster with nothing to roll gives its
    /// turn back.
    pub fn admit(&self, uid: &str, rolling: bool, now: Instant) -> bool {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        admit(&mut holders, self.max, uid, rolling, now)
    }
}

fn admit(
    holders: &mut HashMap<String, Instant>,
    max: usize,
    uid: &str,
    rolling: bool,
    now: Instant,
) -> bool {
    holders.retain(|_, asked| now.saturating_duration_since(*asked) < TURN_EXPIRES);
    if !rolling {
        holders.remove(uid);
        return true;
    }
    if max == 0 || holders.contains_key(uid) || holders.len() < max {
        holders.insert(uid.to_owned(), now);
        return true;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_go_to_the_first_clusters_and_come_back_when_they_are_done_or_gone() {
        let mut holders = HashMap::new();
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let cases = [
            // (cluster, rolling, seconds, admitted, why)
            ("a", true, 0, true, "a free turn"),
            ("b", true, 0, true, "the second turn"),
            ("c", true, 1, false, "two turns, both taken"),
            ("a", true, 5, true, "a holder keeps its turn"),
            ("d", false, 5, true, "nothing to roll needs no turn"),
            ("b", false, 6, true, "b is done: its turn comes back"),
            ("c", true, 7, true, "and c takes it"),
            ("e", true, 8, false, "a and c hold both"),
            // c goes on asking; a stops (deleted) and its turn expires.
            ("c", true, 60, true, "c renews"),
            (
                "e",
                true,
                66,
                true,
                "a's turn expired a minute after it last asked",
            ),
        ];
        for (uid, rolling, seconds, admitted, why) in cases {
            assert_eq!(
                admit(&mut holders, 2, uid, rolling, at(seconds)),
                admitted,
                "{why}"
            );
        }
        // No limit: everyone rolls.
        let mut holders = HashMap::new();
        for uid in ["a", "b", "c"] {
            assert!(admit(&mut holders, 0, uid, true, start));
        }
    }
}
