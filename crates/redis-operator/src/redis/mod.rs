//! The Redis side of the role protocol, in one place: the port, the unassigned start, the
//! commands the operator sends ([`Command`]), what it reads back ([`info`]), how it reaches a
//! pod ([`client`], over a [`serial`] connection) and the scripts the pods run on their own
//! ([`scripts`]).
//!
//! The operator is the only one that gives roles. A pod's Redis starts as a replica of
//! [`UNASSIGNED_HOST`]:[`UNASSIGNED_PORT`], where nothing listens: it refuses writes, and it
//! refuses to be a sync source (Redis answers a replica's SYNC with NOMASTERLINK while its own
//! link is down), until the operator makes it the primary (`REPLICAOF NO ONE`) or points it at
//! the primary (`REPLICAOF <primary IP> 6379`). The role label on the pod then routes traffic
//! (`topology::Role`).

use std::fmt;

pub mod client;
pub mod info;
pub mod scripts;
mod serial;

pub const REDIS_PORT: u16 = 6379;
/// The name of the container port, which Services and probes refer to.
pub const REDIS_PORT_NAME: &str = "redis";

/// The master a pod's Redis is told to follow until the operator gives it a role: the pod's own
/// loopback, on a port nothing listens on.
pub const UNASSIGNED_HOST: &str = "127.0.0.1";
pub const UNASSIGNED_PORT: u16 = 1;

/// The longest a planned handover pauses writes on the primary (`CLIENT PAUSE ... WRITE`): if
/// the chosen replica has not caught up well within it, the handover is abandoned and writes
/// resume on the old primary.
pub const HANDOVER_PAUSE_MS: u64 = 2000;

/// How often a primary pings its replicas (`repl-ping-replica-period`): every second, so that
/// a replica's `master_last_io_seconds_ago` says within a second or two whether it still hears
/// from its primary, idle or not (Redis's default, 10 s, would let a dead primary look alive
/// for that long). The replicas are the operator's witnesses (`topology::decide`).
pub const PING_PERIOD_SECONDS: u32 = 1;

/// The settings the operator keeps on every Redis at run time (`CONFIG SET`, no restart): the
/// write fence and the ping period. Replicas keep the primary's fence, which Redis applies only
/// to a primary, so that one promoted is fenced from its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Settings {
    /// `min-replicas-to-write`: a primary with fewer replicas that acknowledged within
    /// `max_lag` refuses writes (`NOREPLICAS`); 0 turns the fence off.
    pub min_replicas: u32,
    /// `min-replicas-max-lag`, in seconds.
    pub max_lag: u32,
    /// `repl-ping-replica-period`, in seconds.
    pub ping_period: u32,
    /// Whether this Redis logs in to its primary as the `replica` user (`masteruser`, with
    /// `masterauth`): with the cluster's auth on.
    pub replication_auth: bool,
}

impl Settings {
    /// Reads the replies to `CONFIG GET` of `min-replicas-*`, `repl-ping-replica-period` and
    /// `masteruser` (name, value, name, value...); None if one of the first three is missing.
    pub fn parse(pairs: &[String]) -> Option<Settings> {
        let text = |name: &str| {
            pairs
                .chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1))
        };
        let value = |name: &str| text(name)?.parse().ok();
        Some(Settings {
            min_replicas: value("min-replicas-to-write")?,
            max_lag: value("min-replicas-max-lag")?,
            ping_period: value("repl-ping-replica-period")?,
            // Redis before 6 has no `masteruser`: no replication auth.
            replication_auth: text("masteruser").is_some_and(|u| u == crate::auth::REPLICA_USER),
        })
    }
}

/// Something to tell one Redis.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// `REPLICAOF NO ONE`.
    Promote,
    /// `REPLICAOF <host> 6379`.
    Follow { host: String },
    /// To a Redis that is a primary: `REPLICAOF <host> 6379`, then `CLIENT KILL TYPE normal`,
    /// so that pooled connections, which would otherwise get `READONLY` until they happen to
    /// reconnect, reconnect at once and reach the new primary through the Service.
    Demote { host: String },
    /// `CLIENT KILL TYPE normal` alone, to a replica that was the primary moments ago: a
    /// client that reconnected through the primary Service before its routing followed the
    /// label reached it again, and would get `READONLY` for as long as that connection lasts.
    Disconnect,
    /// `CONFIG SET` of the [`Settings`].
    Configure(Settings),
    /// `CONFIG SET` of each of the spec's live directives (name, value), then the pod's
    /// `LIVE_CONFIG_ANNOTATION` set to `annotation`, which says which run of Redis has them.
    SetConfig {
        directives: Vec<(String, String)>,
        annotation: String,
    },
    /// To the primary: pause writes, wait until the replica `to` (at `host`) has every one of
    /// them, demote the primary (it follows `to`, and refuses writes from then on), check that
    /// `to` still has every write the old primary took (one that slipped in after the pause
    /// ran out aborts the handover: the old primary is made primary again), promote `to`,
    /// disconnect the old primary's clients, resume. Redis's own `FAILOVER` does the same but
    /// waits for the replica's next once-a-second acknowledgement, pausing writes up to a
    /// second longer.
    HandOver { to: String, host: String },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Promote => f.write_str("REPLICAOF NO ONE"),
            Command::Follow { host } => write!(f, "REPLICAOF {host} {REDIS_PORT}"),
            Command::Demote { host } => {
                write!(f, "REPLICAOF {host} {REDIS_PORT} + CLIENT KILL TYPE normal")
            }
            Command::Disconnect => f.write_str("CLIENT KILL TYPE normal"),
            Command::Configure(s) => write!(
                f,
                "CONFIG SET min-replicas-to-write {} min-replicas-max-lag {} \
                 repl-ping-replica-period {} masteruser {}",
                s.min_replicas,
                s.max_lag,
                s.ping_period,
                if s.replication_auth {
                    "replica"
                } else {
                    "\"\""
                }
            ),
            Command::HandOver { to, host } => write!(f, "HAND OVER TO {to} ({host})"),
            Command::SetConfig { directives, .. } => {
                let names: Vec<&str> = directives.iter().map(|(name, _)| name.as_str()).collect();
                write!(f, "CONFIG SET {}", names.join(" "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn settings_are_read_from_config_get_and_replication_auth_from_masteruser() {
        let fence = ["min-replicas-to-write", "1", "min-replicas-max-lag", "3"];
        let ping = ["repl-ping-replica-period", "1"];
        let read = |user: &[&str]| Settings::parse(&pairs(&[&fence[..], &ping, user].concat()));
        let expected = |replication_auth| Settings {
            min_replicas: 1,
            max_lag: 3,
            ping_period: 1,
            replication_auth,
        };
        assert_eq!(read(&["masteruser", "replica"]), Some(expected(true)));
        assert_eq!(read(&["masteruser", ""]), Some(expected(false)));
        // Redis 5 has no masteruser: it answers CONFIG GET with nothing.
        assert_eq!(read(&[]), Some(expected(false)));
        assert_eq!(Settings::parse(&pairs(&fence)), None);
    }

    #[test]
    fn the_passwords_of_an_acl_getuser_reply_are_its_hashes() {
        use ::redis::Value;
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            text("flags"),
            Value::Array(vec![text("on")]),
            text("passwords"),
            Value::Array(vec![text("b1"), text("a0")]),
            text("commands"),
            text("+@all"),
        ]);
        assert_eq!(info::acl_passwords(&reply), ["b1", "a0"]);
        assert!(info::acl_passwords(&Value::Nil).is_empty());
    }
}
