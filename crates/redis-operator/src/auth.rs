//! Who may use a cluster's Redis, in one place: whether a cluster has auth ([`auth`], pure),
//! the Redis users every pod with auth starts with ([`acl`]), and the passwords the operator
//! holds ([`Credentials`]).
//!
//! Four users, each with its own password:
//! - `default`, the applications': its password is in a Secret that only the pods read (a
//!   volume the kubelet fills); Redis gets its SHA-256, never the password.
//! - `operator`: only the commands the operator sends. Its password is derived from the
//!   operator's key and the cluster's uid ([`Credentials::of_cluster`]): the operator reads no
//!   Secret of a cluster, and the pods get the password's SHA-256 in their template.
//! - `replica`: what a replica needs of its primary. Derived likewise; the operator gives it
//!   to each Redis at run time (`CONFIG SET masteruser/masterauth`, with its role).
//! - `probe`: `PING` and `INFO`, for the pod's own probes and preStop hook, and `ACL SETUSER`
//!   to take a new `default` password (`redis::scripts::rotate`). Its password is made by each
//!   pod at start, in memory, and never leaves the pod.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use rediscluster_crd::{
    DEFAULT_PASSWORD_KEY, DEFAULT_PREVIOUS_PASSWORD_SECONDS, RedisCluster, RedisClusterSpec,
    generated_secret_name,
};
use ring::rand::SecureRandom;
use serde::Serialize;

/// The pod volume of the password Secret, and the emptyDir (in memory) where a pod with auth
/// keeps its ACL file and its probe password.
pub const AUTH_VOLUME: &str = "auth";
pub const RUN_VOLUME: &str = "run";
/// Where the password Secret is mounted (its key as `password`), and the pod's run directory.
pub const AUTH_DIR: &str = "/etc/redis/auth";
pub const RUN_DIR: &str = "/run/redis";
/// The volume of the TLS Secret (`spec.tls`), and where it is mounted.
pub const TLS_VOLUME: &str = "tls";
pub const TLS_DIR: &str = "/etc/redis/tls";

pub const OPERATOR_USER: &str = "operator";
pub const REPLICA_USER: &str = "replica";
pub const PROBE_USER: &str = "probe";

/// What each user may run. The operator's: `INFO` and `CONFIG GET` to observe, `REPLICAOF`,
/// `CONFIG SET` (the fence, the replication credentials) and `CLIENT KILL/PAUSE/UNPAUSE` (the
/// handover) to act, and `ACL GETUSER` to see which passwords each pod accepts (their
/// SHA-256) while one is rotated. Names only commands every Redis from 6.2 knows: one unknown
/// to the image's Redis would stop it from starting.
pub const OPERATOR_COMMANDS: &str = "-@all +ping +info +config|get +config|set +replicaof \
                                     +client|kill +client|pause +client|unpause +acl|getuser";
/// What a replica sends its primary.
pub const REPLICA_COMMANDS: &str = "-@all +psync +replconf +ping";
/// The pod's own scripts: the probes, the rotation of the `default` password
/// (`scripts::rotate`) and the reload of a renewed certificate (`CONFIG SET`), which only the
/// pod can do: only it reads the Secrets.
pub const PROBE_COMMANDS: &str = "-@all +ping +info +acl|setuser +config|set";

/// The Secret that holds a cluster's `default` password, and whether the operator makes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PasswordSecret {
    pub name: String,
    pub key: String,
    /// How long a pod still accepts the previous password after it took a new one.
    pub previous_seconds: u32,
    #[serde(skip)]
    pub generated: bool,
}

/// Whether a cluster's Redis asks for passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No: the spec opts out, or the cluster was made before the operator knew auth and its
    /// spec does not ask for it (its applications connect without a password).
    Off,
    On(PasswordSecret),
}

impl Auth {
    pub fn secret(&self) -> Option<&PasswordSecret> {
        match self {
            Auth::Off => None,
            Auth::On(secret) => Some(secret),
        }
    }
}

/// The cluster's auth: the spec's; with no `spec.auth`, on (with a generated Secret) unless the
/// cluster already runs without it: its StatefulSet, or else any of its `pods`, made without
/// auth. A schema default could not tell the two apart: the API server applies it to stored
/// objects too.
pub fn auth<'a>(
    cluster: &RedisCluster,
    statefulset: Option<&StatefulSet>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Auth {
    let name = cluster.name_any();
    let previous_seconds = cluster
        .spec
        .auth
        .as_ref()
        .and_then(|auth| u32::try_from(auth.previous_password_seconds?).ok())
        .unwrap_or(DEFAULT_PREVIOUS_PASSWORD_SECONDS);
    let generated = || {
        Auth::On(PasswordSecret {
            name: generated_secret_name(&name),
            key: DEFAULT_PASSWORD_KEY.to_owned(),
            previous_seconds,
            generated: true,
        })
    };
    let Some(spec) = &cluster.spec.auth else {
        // Asking for TLS is asking for auth too.
        let made_without = cluster.spec.tls.is_none()
            && match statefulset {
                Some(sts) => !statefulset_has_auth(sts),
                None => pods.into_iter().any(|pod| !pod_has_auth(pod)),
            };
        return if made_without { Auth::Off } else { generated() };
    };
    if spec.insecure_allow_unauthenticated == Some(true) {
        return Auth::Off;
    }
    match &spec.secret_name {
        Some(secret) => Auth::On(PasswordSecret {
            name: secret.clone(),
            key: spec
                .key
                .clone()
                .unwrap_or_else(|| DEFAULT_PASSWORD_KEY.to_owned()),
            previous_seconds,
            generated: false,
        }),
        None => generated(),
    }
}

/// Whether a pod spec has the volume `name` (the auth or the TLS volume).
fn has_volume(spec: Option<&PodSpec>, name: &str) -> bool {
    spec.into_iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .any(|volume| volume.name == name)
}

/// Whether a StatefulSet's pods are made with auth.
pub fn statefulset_has_auth(statefulset: &StatefulSet) -> bool {
    let template = statefulset
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    has_volume(template, AUTH_VOLUME)
}

/// Whether a pod's Redis asks for passwords (it was made with auth).
pub fn pod_has_auth(pod: &Pod) -> bool {
    has_volume(pod.spec.as_ref(), AUTH_VOLUME)
}

/// Whether a pod's Redis serves TLS (it was made with `spec.tls`).
pub fn pod_has_tls(pod: &Pod) -> bool {
    has_volume(pod.spec.as_ref(), TLS_VOLUME)
}

/// The TLS Secret the pods are made with: the spec's, with auth on (TLS needs it).
pub fn tls_secret<'a>(
    spec: &'a RedisClusterSpec,
    auth: Option<&PasswordSecret>,
) -> Option<&'a str> {
    auth.and(spec.tls.as_ref())
        .map(|tls| tls.secret_name.as_str())
}

/// The name a pod's certificate must carry: `<pod>.<cluster>.<namespace>.svc`, its DNS name
/// under the cluster's headless Service.
pub fn pod_dns_name(pod: &Pod) -> String {
    let cluster = pod
        .labels()
        .get(crate::names::INSTANCE_LABEL)
        .cloned()
        .unwrap_or_default();
    let namespace = pod.namespace().unwrap_or_default();
    format!("{}.{cluster}.{namespace}.svc", pod.name_any())
}

/// A password: shown nowhere (its `Debug` says only that it is one).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

impl Password {
    /// The password itself, for a login or a `CONFIG SET masterauth`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256 in hex, the form Redis's ACL takes (`#<hash>`) for users it only checks.
    pub fn sha256(&self) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes()).as_ref())
    }

    /// A new random password: 256 bits, in hex.
    pub fn random() -> Result<Password, String> {
        let mut bytes = [0_u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| "no randomness from the system".to_owned())?;
        Ok(Password(hex(&bytes)))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operator's key, from which the passwords of every cluster's `operator` and `replica`
/// users are derived: nothing per cluster is stored, and every instance of the operator (under
/// leader election) derives the same.
pub struct Credentials(ring::hmac::Key);

/// One cluster's operator-held passwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCredentials {
    pub operator: Password,
    pub replica: Password,
}

impl Credentials {
    pub fn from_key(key: &[u8]) -> Self {
        Credentials(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// The passwords of the cluster with this uid: HMAC-SHA256 of the user and the uid. A
    /// cluster made again under the same name has another uid, and other passwords.
    pub fn of_cluster(&self, uid: &str) -> ClusterCredentials {
        let derive = |user: &str| {
            Password(hex(ring::hmac::sign(
                &self.0,
                format!("{user}/{uid}").as_bytes(),
            )
            .as_ref()))
        };
        ClusterCredentials {
            operator: derive(OPERATOR_USER),
            replica: derive(REPLICA_USER),
        }
    }
}

/// The key of the Secret that holds the operator's key.
const KEY_FIELD: &str = "key";

/// Reads the operator's key from the Secret `name` in `namespace`, making it (256 random bits)
/// if there is none. Two instances starting at once: the second's create fails, and it reads
/// the first's.
pub async fn load_credentials(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Credentials, String> {
    let api = Api::<Secret>::namespaced(client, namespace);
    let read = |secret: Secret| -> Result<Credentials, String> {
        let key = secret
            .data
            .and_then(|mut data| data.remove(KEY_FIELD))
            .ok_or(format!("Secret {namespace}/{name} has no {KEY_FIELD:?}"))?;
        Ok(Credentials::from_key(&key.0))
    };
    let failed = |e: kube::Error| format!("Secret {namespace}/{name}: {e}");
    if let Some(secret) = api.get_opt(name).await.map_err(failed)? {
        return read(secret);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some([(KEY_FIELD.to_owned(), Password::random()?.0)].into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => read(created),
        Err(kube::Error::Api(e)) if e.code == 409 => read(api.get(name).await.map_err(failed)?),
        Err(e) => Err(failed(e)),
    }
}

/// The lines of the ACL file a pod with auth starts Redis with, given the SHA-256 of each
/// user's password (the pod's start script fills in `default`'s and `probe`'s).
pub fn acl(default: &str, probe: &str, operator: &str, replica: &str) -> String {
    [
        ("default", default, "~* &* +@all"),
        (PROBE_USER, probe, PROBE_COMMANDS),
        (OPERATOR_USER, operator, OPERATOR_COMMANDS),
        (REPLICA_USER, replica, REPLICA_COMMANDS),
    ]
    .map(|(user, hash, commands)| format!("user {user} on #{hash} {commands}\n"))
    .concat()
}

/// What the pods that answered say of the passwords they accept, as the `PasswordsAgree`
/// condition: (status, reason, message). `pods` are (name, SHA-256 of each password its
/// `default` user accepts, the one it took last first), in name order. None without any.
pub fn agreement(pods: &[(String, Vec<String>)]) -> Option<(bool, &'static str, String)> {
    let (_, first) = pods.first()?;
    let names = |pods: Vec<&(String, Vec<String>)>| {
        let names: Vec<&str> = pods.iter().map(|(name, _)| name.as_str()).collect();
        names.join(", ")
    };
    // The password some pod took last while it still accepts the one before.
    let newest = pods
        .iter()
        .find(|(_, hashes)| hashes.len() > 1)
        .map(|(_, hashes)| &hashes[0]);
    if let Some(newest) = newest {
        let behind: Vec<_> = pods.iter().filter(|(_, h)| !h.contains(newest)).collect();
        if !behind.is_empty() {
            let message = format!("pods {} do not accept the new password yet", names(behind));
            return Some((false, "Rotating", message));
        }
        let retired: Vec<_> = pods.iter().filter(|(_, h)| h.len() == 1).collect();
        if !retired.is_empty() {
            let message = format!(
                "every pod accepts the new password; pods {} no longer the previous one",
                names(retired)
            );
            return Some((true, "PreviousRetiring", message));
        }
        let message = "every pod accepts the new password, and the previous one until \
                       spec.auth.previousPasswordSeconds after it took the new one";
        return Some((true, "BothPasswords", message.to_owned()));
    }
    if pods.iter().all(|(_, hashes)| hashes == first) {
        return Some(match first.len() {
            0 => (
                false,
                "NoPassword",
                "no pod asks for a password yet".to_owned(),
            ),
            _ => (
                true,
                "OnePassword",
                "every pod accepts the same password".to_owned(),
            ),
        });
    }
    let without: Vec<_> = pods.iter().filter(|(_, h)| h.is_empty()).collect();
    if !without.is_empty() {
        let message = format!("pods {} ask for no password yet", names(without));
        return Some((false, "NoPassword", message));
    }
    let message = "pods accept different passwords: one restarted with a password the others \
                   have not taken yet";
    Some((false, "Differ", message.to_owned()))
}

#[cfg(test)]
mod tests;
