//! The Redis side of the role protocol, in one place: the port, the unassigned start, the
//! commands the operator sends ([`Command`]), what it reads back ([`info`]), how it reaches a
//! pod ([`client`]) and the scripts the pods run on their own ([`scripts`]).
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

/// Something to tell one Redis.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// `REPLICAOF NO ONE`.
    Promote,
    /// `REPLICAOF <host> 6379`.
    Follow { host: String },
    /// To the primary: pause writes, wait until the replica `to` (at `host`) has every one of
    /// them, make it the primary (`REPLICAOF NO ONE`), follow it (`REPLICAOF <host> 6379`),
    /// resume. Redis's own `FAILOVER` does the same but waits for the replica's next
    /// once-a-second acknowledgement, pausing writes up to a second longer.
    HandOver { to: String, host: String },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Promote => f.write_str("REPLICAOF NO ONE"),
            Command::Follow { host } => write!(f, "REPLICAOF {host} {REDIS_PORT}"),
            Command::HandOver { to, host } => write!(f, "HAND OVER TO {to} ({host})"),
        }
    }
}
