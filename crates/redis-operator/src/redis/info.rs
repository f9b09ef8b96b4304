//! What the operator reads back from a pod's Redis: `INFO replication` and `INFO keyspace`,
//! asked in one round trip by [`super::client`].

use super::{REDIS_PORT, Settings};

/// What one Redis says about its replication (`INFO replication`) and its data
/// (`INFO keyspace`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    pub role: RedisRole,
    /// The replication offset (`master_repl_offset`): how much of a primary's write stream
    /// this Redis has applied; 0 for one that never had a replica or a primary.
    pub offset: i64,
    /// Keys over all databases. A Redis that restarted reloads its append-only file but starts
    /// a new offset at 0: its keys say whether it came back with data.
    pub keys: u64,
    /// `master_failover_state` is not `no-failover`: a `FAILOVER` is handing its role over.
    pub handing_over: bool,
    /// For a replica linked to its primary, how many seconds ago it last heard from it
    /// (`master_last_io_seconds_ago`): what it witnesses of a primary the operator cannot
    /// reach.
    pub heard_from_primary: Option<u64>,
    /// The settings the operator keeps (`CONFIG GET`), None where they could not be read.
    pub settings: Option<Settings>,
    /// The SHA-256 of each password its `default` user accepts (`ACL GETUSER default`), the
    /// one it took last first: two while a rotated password's predecessor still works.
    pub passwords: Vec<String>,
    /// This run of Redis (`run_id`): a restart makes a new one.
    pub run_id: String,
    /// What the metrics say of it (`INFO clients`, `memory`, `stats`, and a primary's
    /// replicas).
    pub stats: Stats,
}

/// The value of `name` in an `INFO` reply (`name:value` lines).
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim_end().split_once(':')?;
        (key == name).then_some(value)
    })
}

/// Figures of one Redis for the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub connected_clients: u64,
    pub used_memory: u64,
    /// 0: no limit.
    pub maxmemory: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
    /// Of a primary: each replica's address, the offset it acknowledged, and how many seconds
    /// ago it last did (`slaveN:ip=...,port=...,offset=...,lag=...`).
    pub replicas: Vec<ReplicaLink>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLink {
    pub ip: String,
    pub offset: i64,
    pub lag_seconds: u64,
}

impl Stats {
    fn parse(info: &str) -> Stats {
        let count = |name: &str| field(info, name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let replicas = info
            .lines()
            .filter(|line| line.starts_with("slave") && line.contains(":ip="))
            .filter_map(|line| {
                let (_, stats) = line.trim_end().split_once(':')?;
                let stat = |name: &str| {
                    stats
                        .split(',')
                        .find_map(|s| s.strip_prefix(name)?.strip_prefix('='))
                };
                Some(ReplicaLink {
                    ip: stat("ip")?.to_owned(),
                    offset: stat("offset")?.parse().ok()?,
                    lag_seconds: stat("lag").and_then(|l| l.parse().ok()).unwrap_or(0),
                })
            })
            .collect();
        Stats {
            connected_clients: count("connected_clients"),
            used_memory: count("used_memory"),
            maxmemory: count("maxmemory"),
            evicted_keys: count("evicted_keys"),
            expired_keys: count("expired_keys"),
            replicas,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisRole {
    Primary,
    Replica {
        host: String,
        port: u16,
        /// `master_link_status:up`: linked, the initial sync done.
        link_up: bool,
        /// `master_sync_in_progress:1`: a full sync is under way.
        syncing: bool,
    },
}

impl Replication {
    /// Parses the replies to `INFO replication` and `INFO keyspace` (in either order, or
    /// concatenated).
    pub fn parse(info: &str) -> Result<Replication, String> {
        let field = |name: &str| field(info, name);
        let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok());
        let role = match field("role") {
            Some("master") => RedisRole::Primary,
            Some("slave") => RedisRole::Replica {
                host: field("master_host").unwrap_or_default().to_owned(),
                port: field("master_port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_default(),
                link_up: field("master_link_status") == Some("up"),
                syncing: field("master_sync_in_progress") == Some("1"),
            },
            other => return Err(format!("INFO replication has no known role: {other:?}")),
        };
        // master_repl_offset, for a replica too: the stream it has applied. Its
        // slave_repl_offset is 1, not 0, before it ever had a primary.
        let offset = number("master_repl_offset").unwrap_or(0);
        // "db0:keys=3,expires=0,avg_ttl=0", one line per database that has keys.
        let keys = info
            .lines()
            .filter(|line| line.starts_with("db"))
            .filter_map(|line| {
                let (_, stats) = line.trim_end().split_once(':')?;
                stats
                    .split(',')
                    .find_map(|stat| stat.strip_prefix("keys="))?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        let handing_over = field("master_failover_state").is_some_and(|s| s != "no-failover");
        let heard_from_primary = match &role {
            RedisRole::Replica { link_up: true, .. } => {
                number("master_last_io_seconds_ago").and_then(|seconds| u64::try_from(seconds).ok())
            }
            _ => None,
        };
        Ok(Replication {
            role,
            offset,
            keys,
            handing_over,
            heard_from_primary,
            settings: None,
            passwords: Vec::new(),
            run_id: field("run_id").unwrap_or_default().to_owned(),
            stats: Stats::parse(info),
        })
    }

    pub fn is_primary(&self) -> bool {
        self.role == RedisRole::Primary
    }

    /// Whether this Redis has anything to lose: a write stream applied, or keys reloaded.
    pub fn holds_data(&self) -> bool {
        self.offset > 0 || self.keys > 0
    }

    /// Whether this Redis follows `address` (whatever the state of its link).
    pub fn follows(&self, address: &str) -> bool {
        matches!(&self.role, RedisRole::Replica { host, port, .. }
            if host == address && *port == REDIS_PORT)
    }

    /// A replica with its link up and no sync under way: it has everything but the last
    /// moment's writes.
    pub fn in_sync(&self) -> bool {
        matches!(
            self.role,
            RedisRole::Replica {
                link_up: true,
                syncing: false,
                ..
            }
        )
    }
}

/// The `passwords` of an `ACL GETUSER` reply (field, value, field, value...): their SHA-256.
pub fn acl_passwords(reply: &::redis::Value) -> Vec<String> {
    use ::redis::Value;
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let Value::Array(fields) = reply else {
        return Vec::new();
    };
    fields
        .chunks(2)
        .find(|pair| text(&pair[0]).as_deref() == Some("passwords"))
        .and_then(|pair| match pair.get(1)? {
            Value::Array(hashes) => Some(hashes.iter().filter_map(text).collect()),
            _ => None,
        })
        .unwrap_or_default()
}
