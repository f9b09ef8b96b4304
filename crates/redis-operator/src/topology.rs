//! Who is primary and who follows it, when to fail over or hand over, and which pod a roll
//! replaces next: a pure function of what the pods and their Redis report.
//!
//! The operator is the only one that gives roles. A pod's Redis starts as a replica of
//! [`UNASSIGNED_HOST`]:[`UNASSIGNED_PORT`], where nothing listens: it refuses writes, and it
//! refuses to be a sync source (Redis answers a replica's SYNC with NOMASTERLINK while its own
//! link is down), until the operator makes it the primary (`REPLICAOF NO ONE`) or points it at
//! the primary (`REPLICAOF <primary IP> 6379`). The role label on the pod then routes traffic:
//! the `<name>-primary` Service selects `role=primary`, `<name>-replicas` selects `role=replica`.

use std::cmp::Reverse;
use std::fmt;
use std::time::Duration;

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
        Ok(Replication {
            role,
            offset,
            keys,
            handing_over,
        })
    }

    fn is_primary(&self) -> bool {
        self.role == RedisRole::Primary
    }

    /// Whether this Redis has anything to lose: a write stream applied, or keys reloaded.
    pub fn holds_data(&self) -> bool {
        self.offset > 0 || self.keys > 0
    }

    /// Whether this Redis follows `address` (whatever the state of its link).
    fn follows(&self, address: &str) -> bool {
        matches!(&self.role, RedisRole::Replica { host, port, .. }
            if host == address && i32::from(*port) == REDIS_PORT)
    }

    /// A replica with its link up and no sync under way: it has everything but the last
    /// moment's writes.
    fn in_sync(&self) -> bool {
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

/// What the operator could learn from one pod's Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The pod has no IP yet: nothing to ask (nothing has run in it either).
    NoAddress,
    /// It has an IP but its Redis did not answer (or answered with an error): why, and for
    /// how long it has not answered without a break.
    Silent {
        why: String,
        for_: Duration,
    },
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
    /// Being deleted, or finished for good: it gets no role, and is not a candidate.
    pub terminating: bool,
    pub label: Option<Role>,
    /// What the pod was made for (`build::pod_config_of`).
    pub config: Option<String>,
    /// It lost the primary role moments ago: until the Service's routing has followed the
    /// label, new connections for the primary still reach it, so its pod is not removed.
    pub settling: bool,
    pub seen: Seen,
}

impl Member {
    fn replication(&self) -> Option<&Replication> {
        match &self.seen {
            Seen::Answered(replication) => Some(replication),
            _ => None,
        }
    }

    fn offset(&self) -> i64 {
        self.replication().map_or(0, |r| r.offset)
    }
}

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

/// A label to set (`Some`) or remove (`None`) on a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relabel {
    pub pod: String,
    pub role: Option<Role>,
}

/// Why the primary changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// There was none: a new cluster, an adopted one, a label removed by hand.
    Elected,
    /// The primary's pod is being deleted (or evicted, or finished).
    PrimaryLeaving,
    /// The primary's Redis did not answer for the failover delay.
    PrimaryNotAnswering,
    /// The primary's Redis restarted without its data while a replica holds data.
    PrimaryRestartedEmpty,
    /// A planned handover (an image roll, a scale-down) completed.
    Switchover,
}

impl Reason {
    /// The `reason` label of `redis_operator_failovers_total`; None for a first election,
    /// which replaces no primary.
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            Reason::Elected => None,
            Reason::PrimaryLeaving => Some("primary_deleted"),
            Reason::PrimaryNotAnswering => Some("primary_not_answering"),
            Reason::PrimaryRestartedEmpty => Some("primary_restarted_empty"),
            Reason::Switchover => Some("switchover"),
        }
    }

    /// A primary replaced because it failed (not a first election, not a planned handover):
    /// timed from the first sign of trouble, and a warning.
    pub fn is_failover(self) -> bool {
        !matches!(self, Reason::Elected | Reason::Switchover)
    }

    /// For the `PrimaryAvailable` condition's reason.
    pub fn condition_reason(self) -> &'static str {
        match self {
            Reason::Elected => "Elected",
            Reason::Switchover => "SwitchedOver",
            _ => "FailedOver",
        }
    }
}

/// A change of primary this plan makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub from: Option<String>,
    pub to: String,
    pub reason: Reason,
    /// How long the old primary had been known to be in trouble when this was decided (its
    /// silence); zero when the evidence was immediate.
    pub trouble: Duration,
}

impl Change {
    /// What happened, for an event and the condition.
    pub fn describe(&self) -> String {
        let from = self.from.as_deref().unwrap_or("none");
        match self.reason {
            Reason::Elected => format!("pod {} is the primary", self.to),
            Reason::PrimaryLeaving => {
                format!(
                    "pod {} is the primary: the pod of {from} was deleted",
                    self.to
                )
            }
            Reason::PrimaryNotAnswering => format!(
                "pod {} is the primary: {from} did not answer for {:.1}s",
                self.to,
                self.trouble.as_secs_f64()
            ),
            Reason::PrimaryRestartedEmpty => format!(
                "pod {} is the primary: {from} restarted without its data",
                self.to
            ),
            Reason::Switchover => format!("pod {} took over the primary role from {from}", self.to),
        }
    }
}

/// Why no primary serves writes now (the `PrimaryAvailable` condition is False).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// No pod was ever made primary, and none can be yet.
    NoPrimaryYet,
    /// The primary's Redis does not answer; the failover delay has not passed.
    PrimaryNotAnswering,
    /// Too few pods answer to tell a dead primary from one the operator cannot reach.
    NoQuorum,
    /// No pod that answers can take over without losing data.
    NoCandidate,
    /// The leaving primary's last writes are still reaching the replica that takes over.
    PrimaryLeaving,
    /// A Redis `FAILOVER` (someone else's: the operator hands over with its own steps) is under
    /// way on the primary.
    SwitchingOver,
}

impl Outage {
    pub fn condition_reason(self) -> &'static str {
        match self {
            Outage::NoPrimaryYet => "NoPrimaryYet",
            Outage::PrimaryNotAnswering => "PrimaryNotAnswering",
            Outage::NoQuorum => "NoQuorum",
            Outage::NoCandidate => "NoCandidate",
            Outage::PrimaryLeaving => "PrimaryLeaving",
            Outage::SwitchingOver => "SwitchingOver",
        }
    }
}

/// What decides besides the members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Pods the StatefulSet keeps (ordinals `0..kept`); pods above are on their way out.
    pub kept: i32,
    /// Pods the spec asks for: a primary at or above this ordinal hands over before its pod
    /// goes.
    pub desired: i32,
    /// How long the primary's Redis may stay silent before a replica is promoted.
    pub failover_after: Duration,
    /// The pod config the spec asks for (`build::pod_config`): pods made for another are
    /// replaced one at a time, the primary last, after a handover.
    pub config: Option<String>,
    /// Replace outdated pods from the lowest ordinal up, the primary in its turn. The
    /// StatefulSet controller creates no pod past a lower one that lacks the claims of its
    /// template (it tries, and fails, to add them to the running pod), so when storage is
    /// added, pods made before it must go in ordinal order.
    pub in_ordinal_order: bool,
}

/// What to do, in this order: `demote` (labels that take the primary role from a Redis that
/// may take writes, so that no two pods that take writes carry it at any moment), then
/// `commands`, then `relabel`, then `retire`, then `delete`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The pod that is (or, after the commands, will be) the primary.
    pub primary: Option<String>,
    pub demote: Vec<Relabel>,
    pub commands: Vec<(String, Command)>,
    pub relabel: Vec<Relabel>,
    /// Labels that take the primary role from a pod whose Redis is already a read-only
    /// replica, removed once the new primary is labelled.
    pub retire: Vec<Relabel>,
    /// A pod of an outdated config to delete, for the StatefulSet to recreate from the
    /// current spec: a roll, one pod at a time.
    pub delete: Option<String>,
    /// The primary changes.
    pub change: Option<Change>,
    /// Why no primary serves writes.
    pub outage: Option<Outage>,
    /// The primary is in trouble or changing hands: look again within a second, not at the
    /// probe interval.
    pub urgent: bool,
    /// Pods of the cluster that are ready in their role now.
    pub in_role: i32,
    /// Pods the StatefulSet keeps that were made for the spec's config.
    pub updated: i32,
    /// Why not every pod is ready in its role, for the status (the first reason).
    pub waiting: Option<String>,
}

/// Who the primary is after this look.
enum Choice<'a> {
    /// The labelled primary stays (promoted again if its Redis restarted with its data).
    Keep(&'a Member),
    Change {
        to: &'a Member,
        from: Option<&'a Member>,
        reason: Reason,
        trouble: Duration,
    },
    /// The primary, on its way out, hands over to `to` first.
    HandOver { from: &'a Member, to: &'a Member },
    /// Nothing changes now.
    Hold {
        primary: Option<&'a Member>,
        outage: Outage,
        urgent: bool,
    },
}

/// Decides roles, failovers, handovers and the next pod of a roll. A pure function of what the
/// pods and their Redis report, so a decision never rests on the operator's memory: one that
/// restarts halfway through a failover or a handover finishes it from what Redis says.
///
/// - The pod labelled primary stays primary while its Redis answers as one. If it restarted
///   (it comes back unassigned), it is promoted again when it reloaded data, and replaced by
///   the replica with the most data when it came back empty: an empty Redis is never a source.
/// - If it follows a pod whose Redis is primary, a handover completed: that pod is primary.
/// - If its pod is being deleted, it hands over to the replica with the highest offset while
///   its Redis still answers as primary (writes paused until that replica has them all); once
///   that Redis is gone, the replica is promoted.
/// - If its Redis is silent for `failover_after`, the replica with the highest offset is
///   promoted, provided a majority of the cluster's pods answer: otherwise the operator could
///   be the one cut off, and promoting would make two primaries.
/// - With no labelled primary, the pod whose Redis holds the most data is chosen. While no pod
///   that answered holds data, no choice is made until every pod answers.
/// - Every other answering pod follows the primary's IP.
/// - Once every pod is ready in its role: pods of an outdated config are deleted one at a
///   time, replicas first; the primary hands over ([`Command::HandOver`]) to an in-sync,
///   updated replica before its own pod is replaced, and before a scale-down removes its
///   ordinal.
pub fn decide(members: &[Member], policy: &Policy) -> Plan {
    let mut active: Vec<&Member> = members
        .iter()
        .filter(|m| !m.terminating && m.ordinal < policy.kept)
        .collect();
    active.sort_by_key(|m| m.ordinal);
    let mut plan = Plan {
        updated: active.iter().filter(|m| !is_outdated(m, policy)).count() as i32,
        ..Plan::default()
    };
    let mut reasons: Vec<String> = Vec::new();

    let (primary, change) = match choose(&active, members, policy, &mut reasons) {
        Choice::Keep(primary) => (primary, None),
        Choice::Change {
            to,
            from,
            reason,
            trouble,
        } => (
            to,
            Some(Change {
                from: from.map(|m| m.name.clone()),
                to: to.name.clone(),
                reason,
                trouble,
            }),
        ),
        Choice::HandOver { from, to } => {
            if let Some(host) = to.address.clone() {
                plan.commands.push((
                    from.name.clone(),
                    Command::HandOver {
                        to: to.name.clone(),
                        host,
                    },
                ));
            }
            plan.outage = Some(Outage::PrimaryLeaving);
            plan.urgent = true;
            plan.waiting = reasons.into_iter().next();
            return plan;
        }
        Choice::Hold {
            primary,
            outage,
            urgent,
        } => {
            plan.primary = primary.map(|m| m.name.clone());
            plan.outage = Some(outage);
            plan.urgent = urgent;
            replace_broken(members, &active, primary, policy, &mut plan, &mut reasons);
            plan.waiting = reasons.into_iter().next();
            return plan;
        }
    };
    let Some(primary_address) = primary.address.as_deref() else {
        // Unreachable: only a pod with an address answers.
        return plan;
    };
    plan.primary = Some(primary.name.clone());
    plan.urgent = change.as_ref().is_some_and(|c| c.reason != Reason::Elected);
    plan.change = change;
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
    // Every other pod labelled primary loses the label, leaving ones included: answering, it
    // becomes a replica; silent or on its way out, it keeps no role. One whose Redis may take
    // writes (silent, or a primary) loses it before the new primary gets it. One whose Redis
    // is already a read-only replica (a completed handover) loses it just after: removing it
    // first would leave the primary Service without an endpoint for a moment, which kube-proxy
    // (at most one sync a second) can stretch into a second of connections that hang.
    let mut others: Vec<&Member> = members.iter().filter(|m| m.name != primary.name).collect();
    others.sort_by_key(|m| m.ordinal);
    for member in others.iter().filter(|m| m.label == Some(Role::Primary)) {
        let stays = !member.terminating && member.ordinal < policy.kept;
        let relabel = Relabel {
            pod: member.name.clone(),
            role: member
                .replication()
                .filter(|_| stays)
                .map(|_| Role::Replica),
        };
        let read_only = member.replication().is_some_and(|r| !r.is_primary());
        if read_only && primary.label != Some(Role::Primary) {
            plan.retire.push(relabel);
        } else {
            plan.demote.push(relabel);
        }
    }

    for member in active.iter().filter(|m| m.name != primary.name) {
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
    let present: Vec<i32> = active.iter().map(|m| m.ordinal).collect();
    if let Some(missing) = (0..policy.kept).find(|o| !present.contains(o)) {
        reasons.push(format!("pod with ordinal {missing} does not exist yet"));
    }
    let settled = reasons.is_empty()
        && plan.commands.is_empty()
        && plan.relabel.is_empty()
        && plan.demote.is_empty()
        && plan.retire.is_empty();
    next_step(
        members,
        &active,
        primary,
        policy,
        settled,
        &mut plan,
        &mut reasons,
    );
    plan.waiting = reasons.into_iter().next();
    plan
}

/// Who is primary: the labelled one, its successor, or nobody for now.
fn choose<'a>(
    active: &[&'a Member],
    all: &'a [Member],
    policy: &Policy,
    reasons: &mut Vec<String>,
) -> Choice<'a> {
    let labelled: Vec<&Member> = active
        .iter()
        .copied()
        .filter(|m| m.label == Some(Role::Primary))
        .collect();
    let answering = labelled
        .iter()
        .copied()
        .filter_map(|m| Some((m, m.replication()?)))
        .max_by_key(|(m, redis)| (redis.is_primary(), redis.offset, Reverse(m.ordinal)));
    if let Some((current, redis)) = answering {
        if redis.handing_over {
            reasons.push(format!(
                "the primary {} is handing its role over to a replica",
                current.name
            ));
            return Choice::Hold {
                primary: Some(current),
                outage: Outage::SwitchingOver,
                urgent: true,
            };
        }
        if redis.is_primary() {
            return Choice::Keep(current);
        }
        // It follows a pod whose Redis is primary: a handover completed (perhaps ordered by
        // an earlier run of the operator). That pod has every write the old one acknowledged.
        let successor = active.iter().copied().find(|m| {
            m.name != current.name
                && m.replication().is_some_and(Replication::is_primary)
                && m.address.as_deref().is_some_and(|a| redis.follows(a))
        });
        if let Some(successor) = successor {
            return Choice::Change {
                to: successor,
                from: Some(current),
                reason: Reason::Switchover,
                trouble: Duration::ZERO,
            };
        }
        // Its Redis restarted and came back unassigned. With the data of its append-only file
        // it holds every write it acknowledged: promoted again. Empty, it must not become the
        // source that replicas resync from while one of them holds data.
        if !redis.holds_data()
            && let Some(next) = best_source(active, Some(current))
            && next.replication().is_some_and(Replication::holds_data)
        {
            return Choice::Change {
                to: next,
                from: Some(current),
                reason: Reason::PrimaryRestartedEmpty,
                trouble: Duration::ZERO,
            };
        }
        return Choice::Keep(current);
    }

    if let Some(silent) = labelled.first().copied() {
        let silent_for = match &silent.seen {
            Seen::Silent { for_, .. } => *for_,
            _ => Duration::ZERO,
        };
        let said = silence(&silent.seen);
        if silent_for < policy.failover_after {
            reasons.push(format!(
                "the primary {} {said}; a replica takes over if it stays silent for {}s",
                silent.name,
                policy.failover_after.as_secs_f64()
            ));
            return Choice::Hold {
                primary: None,
                outage: Outage::PrimaryNotAnswering,
                urgent: true,
            };
        }
        let answering = active.iter().filter(|m| m.replication().is_some()).count();
        let pods = usize::try_from(policy.kept).unwrap_or(0);
        if answering * 2 <= pods {
            reasons.push(format!(
                "the primary {} {said}, and only {answering} of {pods} pods answer: without a \
                 majority a dead primary cannot be told from one the operator cannot reach, so \
                 none is promoted",
                silent.name
            ));
            return Choice::Hold {
                primary: None,
                outage: Outage::NoQuorum,
                // It may last: looked at again at the probe interval, not four times a second.
                urgent: false,
            };
        }
        return match successor(active, silent, reasons) {
            Some(next) => Choice::Change {
                to: next,
                from: Some(silent),
                reason: Reason::PrimaryNotAnswering,
                trouble: silent_for,
            },
            None => Choice::Hold {
                primary: None,
                outage: Outage::NoCandidate,
                // It may last: looked at again at the probe interval, not four times a second.
                urgent: false,
            },
        };
    }

    // None labelled among the pods that stay. One on its way out?
    let leaving = all
        .iter()
        .filter(|m| m.label == Some(Role::Primary) && !active.iter().any(|a| a.name == m.name))
        .max_by_key(|m| (m.replication().is_some(), m.offset()));
    if let Some(leaving) = leaving {
        let Some(next) = successor(active, leaving, reasons) else {
            return Choice::Hold {
                primary: None,
                outage: Outage::NoCandidate,
                // It may last: looked at again at the probe interval, not four times a second.
                urgent: false,
            };
        };
        // Still answering as primary (its pod was deleted a moment ago, and it may still take
        // writes until its SIGTERM arrives): it hands over like a planned switchover, writes
        // paused until the successor has all of them. Promoting at once would drop the writes
        // it acknowledged last.
        if leaving.replication().is_some_and(Replication::is_primary) && next.address.is_some() {
            reasons.push(format!(
                "the leaving primary {} hands its last writes over to {}",
                leaving.name, next.name
            ));
            return Choice::HandOver {
                from: leaving,
                to: next,
            };
        }
        return Choice::Change {
            to: next,
            from: Some(leaving),
            reason: Reason::PrimaryLeaving,
            trouble: Duration::ZERO,
        };
    }

    // Nobody was ever made primary here (or the label was removed by hand).
    match elect(active, reasons) {
        Some(elected) => Choice::Change {
            to: elected,
            from: None,
            reason: Reason::Elected,
            trouble: Duration::ZERO,
        },
        None => Choice::Hold {
            primary: None,
            outage: Outage::NoPrimaryYet,
            urgent: false,
        },
    }
}

/// The answering pod other than `except` whose Redis holds the most data: the highest offset,
/// then any keys, then ready, then the lowest ordinal.
fn best_source<'a>(active: &[&'a Member], except: Option<&Member>) -> Option<&'a Member> {
    active
        .iter()
        .copied()
        .filter(|m| except.is_none_or(|e| e.name != m.name))
        .filter_map(|m| Some((m, m.replication()?)))
        .max_by_key(|(m, redis)| (redis.offset, redis.keys > 0, m.ready, Reverse(m.ordinal)))
        .map(|(m, _)| m)
}

/// The pod to promote in place of `old`, or None (with the reason) when every candidate is
/// empty while a pod that may hold data has not answered: promoting then could make an empty
/// Redis the source that pod's data is replaced from.
fn successor<'a>(
    active: &[&'a Member],
    old: &Member,
    reasons: &mut Vec<String>,
) -> Option<&'a Member> {
    let Some(best) = best_source(active, Some(old)) else {
        reasons.push(format!(
            "the primary {} is gone and no other pod answers",
            old.name
        ));
        return None;
    };
    if best.replication().is_some_and(Replication::holds_data) {
        return Some(best);
    }
    let may_hold_data = active
        .iter()
        .copied()
        .chain((!old.terminating).then_some(old))
        .find(|m| m.replication().is_none() && !matches!(m.seen, Seen::NeverStarted(_)));
    match may_hold_data {
        Some(other) => {
            reasons.push(format!(
                "no pod that answers holds data, and {} {}: none is promoted",
                other.name,
                silence(&other.seen)
            ));
            None
        }
        None => Some(best),
    }
}

/// The pod to make primary when none was, or None (with the reason) when it would be a guess.
fn elect<'a>(active: &[&'a Member], reasons: &mut Vec<String>) -> Option<&'a Member> {
    let best = best_source(active, None);
    let unanswered = active
        .iter()
        .find(|m| m.replication().is_none() && !matches!(m.seen, Seen::NeverStarted(_)));
    match (best, unanswered) {
        (None, _) => {
            let first = active.first().map_or_else(
                || "no pod exists yet".to_owned(),
                |m| format!("pod {} {}", m.name, silence(&m.seen)),
            );
            reasons.push(format!("no primary yet: {first}"));
            None
        }
        // Nobody that answered holds data: wait for the others, which may (and, in a new
        // cluster, so that the primary is pod 0 rather than whichever started first). A pod
        // whose container never started holds nothing and may never start: not waited for.
        (Some(best), Some(other)) if !best.replication().is_some_and(Replication::holds_data) => {
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

/// Whether the pod was made for a config other than the spec's.
fn is_outdated(member: &Member, policy: &Policy) -> bool {
    match (&member.config, &policy.config) {
        (Some(config), Some(desired)) => config != desired,
        _ => false,
    }
}

/// Ready, and its Redis a primary or a replica in sync.
fn is_in_role(member: &Member) -> bool {
    member.ready
        && member
            .replication()
            .is_some_and(|r| r.is_primary() || r.in_sync())
}

/// Deletes an outdated pod that serves nothing (not ready in a role, not the primary), whatever
/// else is going on: a pod stuck on an image that was since fixed waits for no one (the
/// StatefulSet, OnDelete, never replaces it). Returns true when the roll must wait: a pod was
/// deleted now, one is still terminating, or one lost the primary role moments ago.
fn replace_broken(
    members: &[Member],
    active: &[&Member],
    primary: Option<&Member>,
    policy: &Policy,
    plan: &mut Plan,
    reasons: &mut Vec<String>,
) -> bool {
    if members.iter().any(|m| m.terminating) {
        // One pod at a time: the last one deleted is not gone yet.
        return true;
    }
    if let Some(settling) = members.iter().find(|m| m.settling) {
        reasons.push(format!(
            "pod {} waits for traffic to move off it before it is replaced",
            settling.name
        ));
        plan.urgent = true;
        return true;
    }
    let is_primary =
        |m: &Member| primary.is_some_and(|p| p.name == m.name) || m.label == Some(Role::Primary);
    let broken = next_outdated(active, policy, |m| is_primary(m) || is_in_role(m));
    let Some(broken) = broken else {
        return false;
    };
    plan.delete = Some(broken.name.clone());
    reasons.push(format!(
        "pod {} is replaced with the current spec",
        broken.name
    ));
    true
}

/// The outdated pod whose turn it is, unless `passed_over`: the highest such pod; or, in
/// ordinal order, the lowest outdated pod (none, if it is passed over: no pod above it can
/// be recreated before it is).
fn next_outdated<'a>(
    active: &[&'a Member],
    policy: &Policy,
    passed_over: impl Fn(&Member) -> bool,
) -> Option<&'a Member> {
    let mut outdated = active.iter().copied().filter(|m| is_outdated(m, policy));
    if policy.in_ordinal_order {
        outdated.next().filter(|m| !passed_over(m))
    } else {
        outdated.filter(|m| !passed_over(m)).last()
    }
}

/// The next step of a roll or a scale-down, once the roles are settled: a pod to delete, or a
/// handover to start. Pods of an outdated config that are not ready in their role serve
/// nothing and go at once; the others one at a time, replicas before the primary.
fn next_step(
    members: &[Member],
    active: &[&Member],
    primary: &Member,
    policy: &Policy,
    settled: bool,
    plan: &mut Plan,
    reasons: &mut Vec<String>,
) {
    if replace_broken(members, active, Some(primary), policy, plan, reasons) {
        return;
    }
    let outdated = |m: &Member| is_outdated(m, policy);
    let in_role = |m: &Member| is_in_role(m);
    let replicas = active.iter().copied().filter(|m| m.name != primary.name);
    if !settled {
        return;
    }
    let scale_down = primary.ordinal >= policy.desired;
    if let Some(replica) = next_outdated(active, policy, |m| m.name == primary.name) {
        plan.delete = Some(replica.name.clone());
        reasons.push(format!(
            "pod {} is replaced with the current spec",
            replica.name
        ));
        return;
    }
    if !scale_down && !outdated(primary) {
        return;
    }
    // In ordinal order the primary's turn may come before any replica is updated: it hands
    // over to an outdated one then, an updated one where there is one.
    let target = replicas
        .filter(|m| {
            m.ordinal < policy.desired && (policy.in_ordinal_order || !outdated(m)) && in_role(m)
        })
        .max_by_key(|m| (!outdated(m), m.offset(), Reverse(m.ordinal)));
    match (target, &primary.address) {
        (Some(target), Some(_)) => {
            let Some(host) = target.address.clone() else {
                return;
            };
            plan.commands.push((
                primary.name.clone(),
                Command::HandOver {
                    to: target.name.clone(),
                    host,
                },
            ));
            plan.urgent = true;
            let why = if scale_down {
                "before the scale-down removes its pod"
            } else {
                "before its pod is replaced with the current spec"
            };
            reasons.push(format!(
                "the primary {} hands over to {} {why}",
                primary.name, target.name
            ));
        }
        // A single pod: nobody to hand over to. Replaced like any pod.
        _ if !scale_down && active.len() == 1 => {
            plan.delete = Some(primary.name.clone());
            reasons.push(format!(
                "pod {} is replaced with the current spec",
                primary.name
            ));
        }
        _ => reasons.push(format!(
            "the primary {} waits for an updated replica below ordinal {} in sync to take over",
            primary.name, policy.desired
        )),
    }
}

fn silence(seen: &Seen) -> String {
    match seen {
        Seen::NoAddress => "has no address yet".to_owned(),
        Seen::Silent { why, .. } => format!("does not answer: {why}"),
        Seen::NeverStarted(why) => format!("never started: {why}"),
        Seen::Answered(_) => "answers".to_owned(),
    }
}

/// How many pods the StatefulSet keeps when the spec asks for `desired`: never fewer than it
/// takes to keep the pod labelled primary (the StatefulSet removes the highest ordinals
/// first), until the primary has handed over to a pod that stays and traffic has left it.
pub fn pods_to_keep<'a>(members: impl IntoIterator<Item = &'a Member>, desired: i32) -> i32 {
    members
        .into_iter()
        .filter(|m| !m.terminating && (m.label == Some(Role::Primary) || m.settling))
        .filter(|m| m.ordinal >= desired)
        .map(|m| m.ordinal + 1)
        .max()
        .unwrap_or(desired)
}

/// The ordinal of a StatefulSet pod, from its name `<statefulset>-<ordinal>`.
pub fn ordinal(pod_name: &str) -> Option<i32> {
    pod_name.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests;
