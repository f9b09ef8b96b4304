//! The pod side of the role protocol: what each pod's shell runs without the operator, built
//! from the protocol's constants. Every script bounds `redis-cli` with `timeout`: when the
//! kubelet's probe timeout kills only `sh`, a hung `redis-cli` keeps the pipe open and the
//! runtime waits for it, so a Redis that stopped answering would fail its probe once every
//! 35 s instead of every period, and stay ready.

use super::REDIS_PORT;

/// The pod's own Redis, asked with a 2 s bound.
fn ask(command: &str) -> String {
    format!("timeout 2 redis-cli -p {REDIS_PORT} {command}")
}

/// Readiness: exit 0 when this Redis serves as a primary or is a replica linked to one. A pod
/// the operator has not given a role yet is a replica of nothing and stays unready.
pub fn readiness() -> String {
    format!(
        "info=$({}) || exit 1; \
         case \"$info\" in *role:master*|*master_link_status:up*) exit 0;; esac; exit 1",
        ask("info replication")
    )
}

/// Startup: exit 0 once Redis answers commands: while it loads its data from disk it answers
/// `LOADING`, and the liveness probe waits.
pub fn startup() -> String {
    format!("{} | grep -q PONG", ask("ping"))
}

/// The longest a primary with replicas waits, before it stops, for the operator to hand its
/// role over (one question a second).
pub const PRE_STOP_WAIT_SECONDS: u32 = 20;

/// preStop: a primary that has replicas waits (up to [`PRE_STOP_WAIT_SECONDS`]) for the
/// operator to hand its role to one of them (the operator sees the pod terminating and hands
/// over while its Redis still answers), so that it stops as a replica: writes move to the new
/// primary with nothing lost. A replica, a primary without replicas, or a Redis that does not
/// answer stops at once.
pub fn pre_stop() -> String {
    format!(
        "i=0; while [ $i -lt {PRE_STOP_WAIT_SECONDS} ]; do \
         info=$({}) || exit 0; \
         case \"$info\" in *role:master*) ;; *) exit 0;; esac; \
         case \"$info\" in *connected_slaves:0*) exit 0;; esac; \
         sleep 1; i=$((i+1)); done",
        ask("info replication")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scripts are part of every pod template: a change of their text re-applies every
    /// StatefulSet, so they say exactly what they said when they were literals.
    #[test]
    fn scripts_read_as_the_pods_run_them() {
        assert_eq!(
            readiness(),
            "info=$(timeout 2 redis-cli -p 6379 info replication) || exit 1; \
             case \"$info\" in *role:master*|*master_link_status:up*) exit 0;; esac; exit 1"
        );
        assert_eq!(startup(), "timeout 2 redis-cli -p 6379 ping | grep -q PONG");
        assert_eq!(
            pre_stop(),
            "i=0; while [ $i -lt 20 ]; do \
             info=$(timeout 2 redis-cli -p 6379 info replication) || exit 0; \
             case \"$info\" in *role:master*) ;; *) exit 0;; esac; \
             case \"$info\" in *connected_slaves:0*) exit 0;; esac; \
             sleep 1; i=$((i+1)); done"
        );
    }
}
