//! Who is primary and who follows it: a pure function of what the pods and their Redis report.
//!
//! The operator is the only one that gives roles. A pod's Redis starts as a replica of
//! [`UNASSIGNED_HOST`]:[`UNASSIGNED_PORT`], where nothing listens: it refuses writes, and it
//! refuses to be a sync source (Redis answers a replica's SYNC with NOMASTERLINK while its own
//! link is down), until the operator makes it the primary (`REPLICAOF NO ONE`) or points it at
//! the primary (`REPLICAOF <primary IP> 6379`). The role label on the pod then routes traffic:
//! the `<name>-primary` Service selects `role=primary`, `<name>-replicas` selects `role=replica`.

use std::cmp::Reverse;
use std::fmt;

use crate::build::REDIS_PORT;

/// The master a pod's Redis is told to follow until the operator gives it a role: the pod's own
/// loopback, on a port nothing listens on.
pub const UNASSIGNED_HOST: &str = "127.0.0.1";
pub const UNASSIGNED_PORT: u16 = 1;

/// A pod's role, as its label says (`cache.example.com/role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            _ => None,
        }
    }
}

/// What one Redis says about its replication (`INFO replication`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    pub role: RedisRole,
    /// The replication offset (`master_repl_offset`): how much of a primary's write stream
    /// this Redis has applied; 0 for one that never had a replica or a primary.
    pub offset: i64,
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
    /// Parses the reply to `INFO replication`.
    pub fn parse(info: &str) -> Result<Replication, String> {
        let field = |name: &str| {
            info.lines().find_map(|line| {
                let (key, value) = line.trim_end().split_once(':')?;
                (key == name).then_some(value)
            })
        };
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
        Ok(Replication { role, offset })
    }

    fn is_primary(&self) -> bool {
        self.role == RedisRole::Primary
    }

    /// Whether this Redis follows `address` (whatever the state of its link).
    fn follows(&self, address: &str) -> bool {
        matches!(&self.role, RedisRole::Replica { host, port, .. }
            if host == address && i32::from(*port) == REDIS_PORT)
    }
}

/// What the operator could learn from one pod's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The pod has no IP yet: nothing to ask (nothing has run in it either).
    NoAddress,
    /// It has an IP but its Redis did not answer (or answered with an error): why.
    Silent(String),
    /// Its Redis container never started and waits in a state that needs someone to act
    /// (`ErrImagePull` and the like): it holds no data, and may never run.
    NeverStarted(String),
    Answered(Replication),
}

/// One pod of the cluster, as observed.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub ordinal: i32,
    pub address: Option<String>,
    /// The pod's containers are ready (its readiness probe passes).
    pub ready: bool,
    /// Being deleted: it gets no role changes.
    pub terminating: bool,
    pub label: Option<Role>,
    pub seen: Seen,
}

impl Member {
    fn replication(&self) -> Option<&Replication> {
        match &self.seen {
            Seen::Answered(replication) => Some(replication),
            _ => None,
        }
    }
}

/// Something to tell one Redis.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Command {
    /// `REPLICAOF NO ONE`.
    Promote,
    /// `REPLICAOF <host> 6379`.
    Follow { host: String },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Promote => f.write_str("REPLICAOF NO ONE"),
            Command::Follow { host } => write!(f, "REPLICAOF {host} {REDIS_PORT}"),
        }
    }
}

/// A label to set (`Some`) or remove (`None`) on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relabel {
    pub pod: String,
    pub role: Option<Role>,
}

/// What to do, in this order: `demote` (labels that take the primary role away, so that no
/// two pods carry it at any moment), then `commands`, then `relabel`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The pod that is (or, after the commands, will be) the primary.
    pub primary: Option<String>,
    pub demote: Vec<Relabel>,
    pub commands: Vec<(String, Command)>,
    pub relabel: Vec<Relabel>,
    /// Pods of the cluster that are ready in their role now.
    pub in_role: i32,
    /// Why not every pod is ready in its role, for the status (the first reason, by pod name).
    pub waiting: Option<String>,
}

/// Decides roles for a cluster that should have `replicas` pods (ordinals `0..replicas`; pods
/// above are on their way out and are left as they are).
///
/// - The pod labelled primary stays primary while its Redis answers (it is promoted again if
///   it restarted and came back unassigned). While it does not answer, nothing changes.
/// - With no labelled primary (a new cluster, an adopted one, a primary pod deleted), the pod
///   whose Redis holds the most of the write stream is chosen, the ready ones first and then
///   the lowest ordinal. While no pod that answered holds data, no choice is made until every
///   pod answers: choosing without one could make an empty Redis the source its data is
///   replaced from.
/// - Every other answering pod follows the primary's IP.
pub fn decide(members: &[Member], replicas: i32) -> Plan {
    let mut members: Vec<&Member> = members
        .iter()
        .filter(|m| !m.terminating && m.ordinal < replicas)
        .collect();
    members.sort_by_key(|m| m.ordinal);
    let mut plan = Plan::default();
    let mut reasons: Vec<String> = Vec::new();

    let labelled: Vec<&Member> = members
        .iter()
        .copied()
        .filter(|m| m.label == Some(Role::Primary))
        .collect();
    let answering_labelled = labelled
        .iter()
        .copied()
        .filter(|m| m.replication().is_some())
        .max_by_key(|m| {
            let replication = m.replication();
            (
                replication.is_some_and(Replication::is_primary),
                replication.map_or(0, |r| r.offset),
                Reverse(m.ordinal),
            )
        });
    let primary = if let Some(primary) = answering_labelled {
        Some(primary)
    } else if let Some(silent) = labelled.first() {
        reasons.push(format!(
            "the primary {} {}",
            silent.name,
            silence(&silent.seen)
        ));
        None
    } else {
        elect(&members, &mut reasons)
    };

    let Some(primary) = primary else {
        plan.waiting = reasons.into_iter().next();
        return plan;
    };
    let Some(primary_address) = primary.address.as_deref() else {
        // Unreachable: only a pod with an address answers.
        return plan;
    };
    plan.primary = Some(primary.name.clone());
    let primary_redis = primary.replication();
    if !primary_redis.is_some_and(Replication::is_primary) {
        plan.commands.push((primary.name.clone(), Command::Promote));
    } else if primary.ready {
        plan.in_role += 1;
    } else {
        reasons.push(format!("the primary {} is not ready", primary.name));
    }
    if primary.label != Some(Role::Primary) {
        plan.relabel.push(Relabel {
            pod: primary.name.clone(),
            role: Some(Role::Primary),
        });
    }

    for member in members.iter().filter(|m| m.name != primary.name) {
        if member.label == Some(Role::Primary) {
            // Silent or not, it must not keep the role beside the one chosen.
            let role = member.replication().map(|_| Role::Replica);
            plan.demote.push(Relabel {
                pod: member.name.clone(),
                role,
            });
        }
        let Some(replication) = member.replication() else {
            reasons.push(format!("pod {} {}", member.name, silence(&member.seen)));
            continue;
        };
        if !replication.follows(primary_address) {
            plan.commands.push((
                member.name.clone(),
                Command::Follow {
                    host: primary_address.to_owned(),
                },
            ));
            reasons.push(format!(
                "pod {} is being pointed at the primary",
                member.name
            ));
        } else if let RedisRole::Replica {
            link_up, syncing, ..
        } = &replication.role
        {
            if *syncing {
                reasons.push(format!("pod {} is syncing with the primary", member.name));
            } else if !link_up {
                reasons.push(format!("pod {} has no link to the primary", member.name));
            } else if !member.ready {
                reasons.push(format!("pod {} is not ready", member.name));
            } else {
                plan.in_role += 1;
            }
        }
        if member.label.is_none() {
            plan.relabel.push(Relabel {
                pod: member.name.clone(),
                role: Some(Role::Replica),
            });
        }
    }
    let present: Vec<i32> = members.iter().map(|m| m.ordinal).collect();
    if let Some(missing) = (0..replicas).find(|o| !present.contains(o)) {
        reasons.push(format!("pod with ordinal {missing} does not exist yet"));
    }
    plan.waiting = reasons.into_iter().next();
    plan
}

/// The pod to make primary when none is labelled, or None (with the reason) when it would be
/// a guess.
fn elect<'a>(members: &[&'a Member], reasons: &mut Vec<String>) -> Option<&'a Member> {
    let best = members
        .iter()
        .copied()
        .filter(|m| m.replication().is_some())
        .max_by_key(|m| {
            let offset = m.replication().map_or(0, |r| r.offset);
            (m.ready, offset, Reverse(m.ordinal))
        });
    let unanswered = members
        .iter()
        .find(|m| m.replication().is_none() && !matches!(m.seen, Seen::NeverStarted(_)));
    match (best, unanswered) {
        (None, _) => {
            let first = members.first().map_or_else(
                || "no pod exists yet".to_owned(),
                |m| format!("pod {} {}", m.name, silence(&m.seen)),
            );
            reasons.push(format!("no primary yet: {first}"));
            None
        }
        // Nobody that answered holds data: wait for the others, which may (and, in a new
        // cluster, so that the primary is pod 0 rather than whichever started first). A pod
        // whose container never started holds nothing and may never start: not waited for.
        (Some(best), Some(other)) if best.replication().is_some_and(|r| r.offset == 0) => {
            reasons.push(format!(
                "no primary yet: pod {} {}",
                other.name,
                silence(&other.seen)
            ));
            None
        }
        (Some(best), _) => Some(best),
    }
}

fn silence(seen: &Seen) -> String {
    match seen {
        Seen::NoAddress => "has no address yet".to_owned(),
        Seen::Silent(why) => format!("does not answer: {why}"),
        Seen::NeverStarted(why) => format!("never started: {why}"),
        Seen::Answered(_) => "answers".to_owned(),
    }
}

/// How many pods the StatefulSet keeps when the spec asks for `desired`: never fewer than it
/// takes to keep the pod labelled primary (the StatefulSet removes the highest ordinals first).
/// Returns the count and, when it is more than `desired`, the primary in the way.
pub fn pods_to_keep<'a>(
    members: impl IntoIterator<Item = &'a Member>,
    desired: i32,
) -> (i32, Option<&'a str>) {
    let in_the_way = members
        .into_iter()
        .filter(|m| !m.terminating && m.label == Some(Role::Primary) && m.ordinal >= desired)
        .max_by_key(|m| m.ordinal);
    match in_the_way {
        Some(primary) => (primary.ordinal + 1, Some(primary.name.as_str())),
        None => (desired, None),
    }
}

/// The ordinal of a StatefulSet pod, from its name `<statefulset>-<ordinal>`.
pub fn ordinal(pod_name: &str) -> Option<i32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests;
