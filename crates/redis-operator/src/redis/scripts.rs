//! The pod side of the role protocol: what each pod's shell runs without the operator, built
//! from the protocol's constants. Every script bounds `redis-cli` with `timeout`: when the
//! kubelet's probe timeout kills only `sh`, a hung `redis-cli` keeps the pipe open and the
//! runtime waits for it, so a Redis that stopped answering would fail its probe once every
//! 35 s instead of every period, and stay ready.
//!
//! In a pod with auth, the scripts log in as the `probe` user with the password the pod made
//! at start ([`start`]), passed in `REDISCLI_AUTH`: no password is ever on a command line.

use super::REDIS_PORT;
use crate::auth::{self, AUTH_DIR, PROBE_USER, PasswordSecret, RUN_DIR, TLS_DIR};

/// Whether the pod's Redis asks for a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    None,
    /// As the `probe` user; over TLS (checked against the Secret's CA) with `tls`.
    Probe {
        tls: bool,
    },
}

/// The pod's own Redis, asked with a 2 s bound.
fn ask(login: Login, command: &str) -> String {
    match login {
        Login::None => format!("timeout 2 redis-cli -p {REDIS_PORT} {command}"),
        Login::Probe { tls } => {
            let tls = if tls {
                format!(" --tls --cacert {TLS_DIR}/ca.crt")
            } else {
                String::new()
            };
            format!(
                "REDISCLI_AUTH=$(cat {RUN_DIR}/{PROBE_USER}) \
                 timeout 2 redis-cli{tls} --user {PROBE_USER} -p {REDIS_PORT} {command}"
            )
        }
    }
}

/// Readiness: exit 0 when this Redis serves as a primary or is a replica linked to one. A pod
/// the operator has not given a role yet is a replica of nothing and stays unready.
pub fn readiness(login: Login) -> String {
    format!(
        "info=$({}) || exit 1; \
         case \"$info\" in *role:master*|*master_link_status:up*) exit 0;; esac; exit 1",
        ask(login, "info replication")
    )
}

/// Startup: exit 0 once Redis answers commands: while it loads its data from disk it answers
/// `LOADING`, and the liveness probe waits.
pub fn startup(login: Login) -> String {
    format!("{} | grep -q PONG", ask(login, "ping"))
}

/// The longest a primary with replicas waits, before it stops, for the operator to hand its
/// role over (one question a second).
pub const PRE_STOP_WAIT_SECONDS: u32 = 20;

/// preStop: a primary that has replicas waits (up to [`PRE_STOP_WAIT_SECONDS`]) for the
/// operator to hand its role to one of them (the operator sees the pod terminating and hands
/// over while its Redis still answers), so that it stops as a replica: writes move to the new
/// primary with nothing lost. A replica, a primary without replicas, or a Redis that does not
/// answer stops at once.
pub fn pre_stop(login: Login) -> String {
    format!(
        "i=0; while [ $i -lt {PRE_STOP_WAIT_SECONDS} ]; do \
         info=$({}) || exit 0; \
         case \"$info\" in *role:master*) ;; *) exit 0;; esac; \
         case \"$info\" in *connected_slaves:0*) exit 0;; esac; \
         sleep 1; i=$((i+1)); done",
        ask(login, "info replication")
    )
}

/// Rotation of the `default` password, run before each readiness probe of a pod with auth:
/// when the mounted Secret holds a password whose SHA-256 is not the one Redis took last
/// (`current`, in the run directory), Redis accepts it besides that one (`ACL SETUSER default
/// resetpass #<new> #<current>`); `previous_seconds` later, only the new one. A missing or empty
/// password changes nothing. The pod does it because only the pod reads the Secret; a probe
/// that fails here only tries again at the next one, and readiness is decided as before.
pub fn rotate(login: Login, previous_seconds: u32) -> String {
    let set = ask(login, "acl setuser default resetpass");
    format!(
        "r={RUN_DIR}; f={AUTH_DIR}/password; now=$(date +%s); \
         new=$( [ -s $f ] && sha256sum < $f | cut -c1-64 ); cur=$(cat $r/current); \
         if [ -n \"$new\" ] && [ \"$new\" != \"$cur\" ]; then \
         {set} \"#$new\" \"#$cur\" | grep -q OK && echo $now > $r/since && echo $new > $r/current; \
         elif [ -s $r/since ] && [ $((now - $(cat $r/since))) -ge {previous_seconds} ]; then \
         {set} \"#$cur\" | grep -q OK && rm $r/since; fi; "
    )
}

/// The reload of a renewed certificate, run before each readiness probe of a pod with TLS:
/// when the mounted `tls.crt` is not the one Redis loaded (`cert` in the run directory), Redis
/// loads the certificate and key again by `CONFIG SET` of their paths. Redis reloads only on
/// a changed value, so the paths alternate between the Secret's two names for the same files
/// (`tls.crt` and `..data/tls.crt`), which the kubelet swaps at once.
pub fn reload_certificate() -> String {
    let set = ask(Login::Probe { tls: true }, "config set");
    format!(
        "r={RUN_DIR}; c=$(sha256sum < {TLS_DIR}/tls.crt | cut -c1-64); \
         if [ -n \"$c\" ] && [ \"$c\" != \"$(cat $r/cert)\" ]; then \
         d={TLS_DIR}/; [ \"$(cat $r/tls-dir)\" = {TLS_DIR}/ ] && d={TLS_DIR}/..data/; \
         {set} tls-cert-file ${{d}}tls.crt tls-key-file ${{d}}tls.key tls-ca-cert-file ${{d}}ca.crt \
         | grep -q OK && echo $c > $r/cert && echo $d > $r/tls-dir; fi; "
    )
}

/// The command of a pod with auth, which runs Redis (its arguments follow) with an ACL file it
/// writes first, in memory: the SHA-256 of the `default` password (from the mounted Secret), a
/// `probe` password of its own (random, kept in the run directory for the other scripts), and
/// the SHA-256 of the operator's and replicas' passwords (`operator`, `replica`), given here.
/// Without a password it exits at once and says why (the pod's last termination message,
/// which the cluster's status shows): running Redis open would be worse.
pub fn start(secret: &PasswordSecret, operator: &str, replica: &str, tls: Option<&str>) -> String {
    let acl = auth::acl("$d", "$p", operator, replica);
    // With TLS, the certificate, key and CA must be there too; the one loaded is noted for
    // `reload_certificate`.
    let tls = tls.map_or_else(String::new, |name| {
        format!(
            "for t in tls.crt tls.key ca.crt; do if [ ! -s {TLS_DIR}/$t ]; then \
             echo \"no $t: Secret {name} is missing, or has no key $t\" \
             | tee /dev/termination-log >&2; exit 1; fi; done; \
             sha256sum < {TLS_DIR}/tls.crt | cut -c1-64 > {RUN_DIR}/cert; \
             echo {TLS_DIR}/ > {RUN_DIR}/tls-dir; "
        )
    });
    format!(
        "set -e; umask 077; f={AUTH_DIR}/password; \
         if [ ! -s $f ]; then \
         echo \"no password: Secret {name} is missing, or has no key {key}, or it is empty\" \
         | tee /dev/termination-log >&2; exit 1; fi; {tls}\
         head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {RUN_DIR}/{PROBE_USER}; \
         d=$(sha256sum < $f | cut -c1-64); echo $d > {RUN_DIR}/current; \
         p=$(sha256sum < {RUN_DIR}/{PROBE_USER} | cut -c1-64); \
         printf '%s' \"{acl}\" > {RUN_DIR}/users.acl; \
         exec \"$@\" --aclfile {RUN_DIR}/users.acl",
        name = secret.name,
        key = secret.key,
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
            readiness(Login::None),
            "info=$(timeout 2 redis-cli -p 6379 info replication) || exit 1; \
             case \"$info\" in *role:master*|*master_link_status:up*) exit 0;; esac; exit 1"
        );
        assert_eq!(
            startup(Login::None),
            "timeout 2 redis-cli -p 6379 ping | grep -q PONG"
        );
        assert_eq!(
            pre_stop(Login::None),
            "i=0; while [ $i -lt 20 ]; do \
             info=$(timeout 2 redis-cli -p 6379 info replication) || exit 0; \
             case \"$info\" in *role:master*) ;; *) exit 0;; esac; \
             case \"$info\" in *connected_slaves:0*) exit 0;; esac; \
             sleep 1; i=$((i+1)); done"
        );
    }
}
