use k8s_openapi::api::core::v1::Volume;
use rediscluster_crd::Auth as AuthSpec;

use super::*;
use crate::fixtures::{NAME, cluster, redis_pod, statefulset, sts_status};
use crate::redis::scripts;

fn with_auth_volume(mut spec: PodSpec) -> PodSpec {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: AUTH_VOLUME.to_owned(),
        ..Volume::default()
    });
    spec
}

fn generated() -> Auth {
    Auth::On(PasswordSecret {
        name: format!("{NAME}-auth"),
        key: "password".to_owned(),
        previous_seconds: 600,
        generated: true,
    })
}

/// A new cluster gets auth; one already running without it keeps running without it until
/// its spec asks; the spec's opt-out and its own Secret are taken as they are.
#[test]
fn auth_is_on_for_new_clusters_and_off_for_those_made_without_it() {
    let plain = cluster(3, "redis:7.0");
    let made_without = statefulset(&plain, sts_status(3, 3));
    let mut made_with = made_without.clone();
    let template = &mut made_with.spec.as_mut().unwrap().template;
    template.spec = template.spec.take().map(with_auth_volume);
    let old_pod = redis_pod(0, true, None);
    let mut new_pod = old_pod.clone();
    new_pod.spec = Some(with_auth_volume(new_pod.spec.take().unwrap_or_default()));
    let spec = |auth: AuthSpec| {
        let mut cluster = plain.clone();
        cluster.spec.auth = Some(auth);
        cluster
    };
    let opted_out = spec(AuthSpec {
        insecure_allow_unauthenticated: Some(true),
        secret_name: Some("ignored".to_owned()),
        ..AuthSpec::default()
    });
    let own_secret = spec(AuthSpec {
        secret_name: Some("app-redis".to_owned()),
        key: Some("pw".to_owned()),
        ..AuthSpec::default()
    });
    let asked = spec(AuthSpec::default());
    let theirs = Auth::On(PasswordSecret {
        name: "app-redis".to_owned(),
        key: "pw".to_owned(),
        previous_seconds: 600,
        generated: false,
    });
    type Case<'a> = (
        &'a str,
        &'a RedisCluster,
        Option<&'a StatefulSet>,
        Vec<&'a Pod>,
        Auth,
    );
    let cases: [Case; 8] = [
        ("new", &plain, None, vec![], generated()),
        (
            "ours with auth",
            &plain,
            Some(&made_with),
            vec![],
            generated(),
        ),
        (
            "made without",
            &plain,
            Some(&made_without),
            vec![],
            Auth::Off,
        ),
        (
            "its StatefulSet being recreated",
            &plain,
            None,
            vec![&old_pod],
            Auth::Off,
        ),
        (
            "recreated, made with",
            &plain,
            None,
            vec![&new_pod],
            generated(),
        ),
        (
            "asked for",
            &asked,
            Some(&made_without),
            vec![],
            generated(),
        ),
        (
            "own Secret",
            &own_secret,
            Some(&made_without),
            vec![],
            theirs,
        ),
        ("opted out", &opted_out, Some(&made_with), vec![], Auth::Off),
    ];
    for (case, cluster, sts, pods, expected) in cases {
        assert_eq!(auth(cluster, sts, pods), expected, "{case}");
    }
}

#[test]
fn each_cluster_and_user_has_its_own_password_and_none_is_shown() {
    let key = Credentials::from_key(b"key");
    let one = key.of_cluster("uid-1");
    assert_eq!(one, key.of_cluster("uid-1"), "derived, not stored");
    let other = key.of_cluster("uid-2");
    let another_key = Credentials::from_key(b"other").of_cluster("uid-1");
    assert_ne!(one.operator, one.replica);
    assert_ne!(one.operator, other.operator);
    assert_ne!(one.operator, another_key.operator);
    assert_eq!(one.operator.expose().len(), 64);
    assert!(!format!("{one:?}").contains(one.operator.expose()));
    assert_eq!(
        Password("abc".to_owned()).sha256(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_ne!(Password::random().unwrap(), Password::random().unwrap());
}

/// Runs the start script with its directories moved to a temporary one and `echo` in place of
/// Redis; returns whether it ran Redis, what it printed and left as its termination message,
/// and the ACL file it wrote.
fn start(password: Option<&str>) -> (bool, String, String) {
    start_with(password, None)
}

/// [`start`], for a pod with TLS whose Secret holds `tls_files`.
fn start_with(password: Option<&str>, tls_files: Option<&[&str]>) -> (bool, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "start-{}-{}-{}",
        std::process::id(),
        password.is_some(),
        tls_files.map_or(0, <[_]>::len)
    ));
    let tls_dir = dir.join("tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    for file in tls_files.unwrap_or_default() {
        std::fs::write(tls_dir.join(file), "pem").unwrap();
    }
    let (secret_dir, run_dir) = (dir.join("auth"), dir.join("run"));
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::create_dir_all(&run_dir).unwrap();
    if let Some(password) = password {
        std::fs::write(secret_dir.join("password"), password).unwrap();
    }
    let secret = PasswordSecret {
        name: "cache-auth".to_owned(),
        key: "password".to_owned(),
        previous_seconds: 600,
        generated: true,
    };
    let script = scripts::start(
        &secret,
        "op-hash",
        "replica-hash",
        tls_files.map(|_| "certs"),
    )
    .replace(TLS_DIR, tls_dir.to_str().unwrap())
    .replace(AUTH_DIR, secret_dir.to_str().unwrap())
    .replace(RUN_DIR, run_dir.to_str().unwrap())
    .replace(
        "/dev/termination-log",
        dir.join("termination").to_str().unwrap(),
    );
    let output = std::process::Command::new("sh")
        .args([
            "-c",
            &script,
            "redis-start",
            "echo",
            "redis-server",
            "--dir",
            "/data",
        ])
        .output()
        .unwrap();
    let acl = std::fs::read_to_string(run_dir.join("users.acl")).unwrap_or_default();
    let said = std::fs::read_to_string(dir.join("termination")).unwrap_or_default();
    std::fs::remove_dir_all(&dir).unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), printed + &said, acl)
}

/// The start script hands Redis an ACL file with the SHA-256 of the mounted password and of a
/// probe password of the pod's own, and the operator's and replicas' hashes; the password
/// itself is on no command line. Without a password, Redis does not start, and the reason is
/// the termination message.
#[test]
fn redis_starts_with_hashes_only_and_not_at_all_without_a_password() {
    let (ran, printed, acl) = start(Some("abc"));
    assert!(ran);
    assert!(
        printed.starts_with("redis-server --dir /data --aclfile "),
        "{printed}"
    );
    assert!(printed.trim_end().ends_with("/users.acl"), "{printed}");
    let lines: Vec<&str> = acl.lines().collect();
    assert_eq!(lines.len(), 4, "{acl}");
    assert_eq!(
        lines[0],
        "user default on #ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad ~* &* +@all"
    );
    assert!(lines[1].starts_with("user probe on #") && lines[1].ends_with(PROBE_COMMANDS));
    assert_eq!(
        lines[2],
        format!("user operator on #op-hash {OPERATOR_COMMANDS}")
    );
    assert_eq!(
        lines[3],
        format!("user replica on #replica-hash {REPLICA_COMMANDS}")
    );
    assert!(!acl.contains("abc\n") && !printed.contains("abc"));

    for missing in [None, Some("")] {
        let (ran, printed, acl) = start(missing);
        assert!(!ran && acl.is_empty(), "{missing:?}");
        assert!(
            printed.contains("no password: Secret cache-auth is missing, or has no key password"),
            "{printed}"
        );
    }
}

/// Every script a pod with auth runs logs in as `probe` with the password in `REDISCLI_AUTH`,
/// read from the pod's run directory: never on a command line (`-a`, `--pass`).
#[test]
fn probe_and_hook_scripts_put_no_password_on_a_command_line() {
    let login = scripts::Login::Probe { tls: false };
    for script in [
        scripts::readiness(login),
        scripts::startup(login),
        scripts::pre_stop(login),
    ] {
        assert!(
            script.contains("REDISCLI_AUTH=$(cat /run/redis/probe)")
                && script.contains("redis-cli --user probe "),
            "{script}"
        );
        assert!(
            !script.contains(" -a ") && !script.contains("--pass"),
            "{script}"
        );
    }
}

#[test]
fn the_condition_says_whether_every_pod_accepts_the_same_passwords() {
    let pods = |lists: &[&[&str]]| -> Vec<(String, Vec<String>)> {
        lists
            .iter()
            .enumerate()
            .map(|(i, hashes)| {
                let hashes = hashes.iter().map(|h| (*h).to_owned()).collect();
                (format!("cache-{i}"), hashes)
            })
            .collect()
    };
    type Case<'a> = (&'a [&'a [&'a str]], Option<(bool, &'a str)>);
    let cases: [Case; 8] = [
        (&[], None),
        (&[&["a"], &["a"], &["a"]], Some((true, "OnePassword"))),
        (&[&["b", "a"], &["a"], &["a"]], Some((false, "Rotating"))),
        (
            &[&["b", "a"], &["b", "a"], &["b", "a"]],
            Some((true, "BothPasswords")),
        ),
        (
            &[&["b"], &["b", "a"], &["b", "a"]],
            Some((true, "PreviousRetiring")),
        ),
        (&[&["b"], &["a"], &["a"]], Some((false, "Differ"))),
        (&[&[], &[], &[]], Some((false, "NoPassword"))),
        (&[&["a"], &[], &["a"]], Some((false, "NoPassword"))),
    ];
    for (lists, expected) in cases {
        let got = agreement(&pods(lists));
        assert_eq!(
            got.as_ref().map(|(status, reason, _)| (*status, *reason)),
            expected,
            "{lists:?}: {got:?}"
        );
    }
    let (_, _, message) = agreement(&pods(&[&["b", "a"], &["a"], &["a"]])).unwrap();
    assert_eq!(
        message,
        "pods cache-1, cache-2 do not accept the new password yet"
    );
}

/// With TLS, Redis does not start without the certificate, its key and the CA, and says which
/// is missing from which Secret.
#[test]
fn redis_with_tls_starts_only_with_certificate_key_and_ca() {
    let (ran, _, acl) = start_with(Some("abc"), Some(&["tls.crt", "tls.key", "ca.crt"]));
    assert!(ran && !acl.is_empty());
    let (ran, said, _) = start_with(Some("abc"), Some(&["tls.crt", "tls.key"]));
    assert!(!ran);
    assert!(
        said.contains("no ca.crt: Secret certs is missing, or has no key ca.crt"),
        "{said}"
    );
}

/// Asking for TLS is asking for auth: a cluster made without auth gets it with TLS.
#[test]
fn tls_turns_auth_on_for_a_cluster_made_without_it() {
    let mut plain = cluster(3, "redis:7.0");
    let made_without = statefulset(&plain, sts_status(3, 3));
    plain.spec.tls = Some(rediscluster_crd::Tls {
        secret_name: "certs".to_owned(),
    });
    assert_eq!(auth(&plain, Some(&made_without), []), generated());
}
