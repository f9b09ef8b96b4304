//! The operator under test: a child process per test scoped to its namespace, or the one
//! deployed in the cluster (`E2E_MODE=in-cluster`, the kind flow).

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::TestResult;

/// Where the operator under test runs: `E2E_MODE=in-cluster` when it is deployed already (the
/// kind flow), otherwise (`local`) each test starts the binary itself.
pub fn in_cluster() -> bool {
    std::env::var("E2E_MODE").is_ok_and(|mode| mode == "in-cluster")
}

/// The namespace and label of the deployed operator (config/default).
const OPERATOR_NAMESPACE: &str = "redis-operator-system";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=redis-operator";

/// The operator for one test: a child process watching the test's namespace (killed when
/// dropped), or nothing to do when the operator is deployed in the cluster.
pub struct Operator {
    child: Option<Child>,
    /// Where a local operator logs.
    log: Option<PathBuf>,
}

impl Operator {
    pub fn start(namespace: &str) -> TestResult<Self> {
        if in_cluster() {
            return Ok(Self {
                child: None,
                log: None,
            });
        }
        Self::start_with(namespace, "operator", &[])
    }

    /// Stops the operator abruptly and brings up a fresh one: a killed and restarted process,
    /// or deleted operator pods that their Deployment replaces.
    pub fn restart(self, namespace: &str) -> TestResult<Self> {
        if self.child.is_none() {
            let deleted = Command::new("kubectl")
                .args([
                    "delete",
                    "pod",
                    "-n",
                    OPERATOR_NAMESPACE,
                    "-l",
                    OPERATOR_SELECTOR,
                ])
                .args(["--wait=false", "--grace-period=1"])
                .status()?;
            if !deleted.success() {
                return Err("could not delete the operator pods".into());
            }
            return Ok(self);
        }
        self.kill();
        Self::start(namespace)
    }

    /// Starts one more operator for `namespace` with extra flags; it logs to
    /// `$TMPDIR/<namespace>.<name>.log`. Without `--http-addr` it serves on a port the kernel
    /// picks when it binds ([`Operator::http_port`] reads it back): a port picked beforehand
    /// and released can be taken by any process's outgoing connection before the operator
    /// binds it.
    pub fn start_with(namespace: &str, name: &str, extra: &[&str]) -> TestResult<Self> {
        Self::start_with_env(namespace, name, extra, &[])
    }

    /// [`Operator::start_with`], with these environment variables set too.
    pub fn start_with_env(
        namespace: &str,
        name: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestResult<Self> {
        let binary = std::env::var_os("REDIS_OPERATOR_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/redis-operator"),
            PathBuf::from,
        );
        let log_path = std::env::temp_dir().join(format!("{namespace}.{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        // Several operators run at once; each takes a free port unless told otherwise.
        let default_http = if extra.contains(&"--http-addr") {
            &[][..]
        } else {
            &["--http-addr", "127.0.0.1:0"][..]
        };
        let deadline = format!("{}s", LOCAL_PROGRESS_DEADLINE.as_secs());
        let default_deadline = if extra.contains(&"--progress-deadline") {
            vec![]
        } else {
            vec!["--progress-deadline", deadline.as_str()]
        };
        let child = Command::new(&binary)
            .args([
                "run",
                "--namespace",
                namespace,
                "--failure-grace-period",
                &format!("{}s", LOCAL_FAILURE_GRACE.as_secs()),
            ])
            .args(default_http)
            .args(default_deadline)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (run `cargo build -p redis-operator`)",
                    binary.display()
                )
            })?;
        Ok(Self {
            child: Some(child),
            log: Some(log_path),
        })
    }

    /// A candidate for leadership in `namespace` (its Lease there), with a Lease of
    /// `lease_seconds` renewed 2 s before it expires, `extra` flags and `env`.
    pub fn candidate(
        namespace: &str,
        identity: &str,
        lease_seconds: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> TestResult<Self> {
        let lease = format!("{lease_seconds}s");
        let mut flags = vec![
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--leader-election-identity",
            identity,
            "--lease-duration",
            &lease,
            "--lease-renew-margin",
            "2s",
        ];
        flags.extend_from_slice(extra);
        Self::start_with_env(namespace, identity, &flags, env)
    }

    /// What a local operator has logged so far, without its colour codes.
    pub fn logged(&self) -> TestResult<String> {
        let log = self.log.as_ref().ok_or("no local operator process")?;
        Ok(without_colours(&std::fs::read_to_string(log)?))
    }

    /// The port a local operator serves `/healthz`, `/readyz` and `/metrics` on, as it logged
    /// once it had bound it; waits up to 30 s for the line.
    pub fn http_port(&mut self) -> TestResult<u16> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.logged()?;
            let bound = text
                .lines()
                .filter(|line| line.contains("serving /healthz"))
                .find_map(|line| line.split("bound=").nth(1)?.split_whitespace().next())
                .and_then(|address| address.trim_matches('"').rsplit_once(':'))
                .and_then(|(_, port)| port.parse().ok());
            if let Some(port) = bound {
                return Ok(port);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                return Err(
                    format!("the operator exited ({status}) before serving: {text}").into(),
                );
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("no port in the operator's log after 30 s: {text}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once, the way a node failure would.
    pub fn kill(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of a local operator.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM, as the kubelet does, and waits for the process to exit.
    pub fn terminate(mut self) -> TestResult<std::process::ExitStatus> {
        let child = self.child.as_mut().ok_or("no local operator process")?;
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        Ok(child.wait()?)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `--failure-grace-period` of the operator under test: what local mode passes, or the
/// default of the deployed operator (config/default sets none).
pub fn failure_grace() -> Duration {
    if in_cluster() {
        Duration::from_secs(120)
    } else {
        LOCAL_FAILURE_GRACE
    }
}

/// The grace period each local operator gets, short so that Failed comes within a test.
const LOCAL_FAILURE_GRACE: Duration = Duration::from_secs(10);

/// The `--progress-deadline` of the operator under test: what local mode passes, or the
/// default of the deployed operator.
pub fn progress_deadline() -> Duration {
    if in_cluster() {
        Duration::from_secs(600)
    } else {
        LOCAL_PROGRESS_DEADLINE
    }
}

/// The progress deadline each local operator gets unless the test says another: longer than
/// the grace period, as the default is, and short enough for a test.
const LOCAL_PROGRESS_DEADLINE: Duration = Duration::from_secs(20);

/// `text` without the terminal colour codes (`ESC [ ... m`) the operator's text log carries.
fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_dropped() {
        let line = "\u{1b}[2m2026\u{1b}[0m serving \u{1b}[3mbound\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:38121";
        assert_eq!(without_colours(line), "2026 serving bound=127.0.0.1:38121");
    }
}
