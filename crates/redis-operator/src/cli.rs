//! The command line: `run` the operator, or `generate-crd`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::context::Settings;
use crate::controller::{self, RunConfig};
use crate::leader::Election;
use crate::redis::client::Route;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "redis-operator",
    version,
    about = "Kubernetes operator for RedisCluster objects"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the current cluster.
    Run(Box<RunArgs>),
    /// Print the RedisCluster CRD as YAML.
    GenerateCrd {
        /// Write the CRD to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
    /// RedisClusters reconciled at once; one object is never reconciled twice at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// How often every RedisCluster is checked again when nothing changed (e.g. 30s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// How long a pod may be stuck (image pull, crash loop) before the cluster is Failed.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub failure_grace_period: Duration,
    /// How long a cluster on its way to Running may go without a pod being created, becoming
    /// ready or being updated before it is Failed (slow but healthy progress: a large image,
    /// a cluster autoscaler adding a node), like a Deployment's progressDeadlineSeconds.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub progress_deadline: Duration,
    /// How many clusters replace their pods at once (for a new image, resources, spec.pod...);
    /// the others wait their turn. 0: no limit.
    #[arg(long, default_value_t = 4)]
    pub max_concurrent_rolls: usize,
    /// How often each cluster's Redis is asked about replication, besides pod events.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub redis_probe_interval: Duration,
    /// How long a primary's Redis may go without answering before a replica is promoted in
    /// its place (a deleted primary pod is replaced at once).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub failover_after: Duration,
    /// How long a Redis may take to connect or answer before it counts as not answering.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// How to reach the pods' Redis (default: direct inside a cluster, port-forward through
    /// the API server outside one, where the pod network is often not routable).
    #[arg(long, value_enum)]
    pub redis_route: Option<Route>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Reconcile only while holding a Lease, so that several replicas can run.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the operator pod's own, from POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "redis-operator-leader")]
    pub leader_election_id: String,
    /// This instance's name in the election (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    pub leader_election_identity: Option<String>,
    /// How long a lease stays valid after its last renewal (whole seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long before expiry the leader renews; it stops reconciling if that renewal fails.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_renew_margin: Duration,
    /// The Secret that holds the operator's key, from which it derives the passwords of its own
    /// Redis user and of replication in every cluster; made with a random key if missing.
    /// Every instance must use the same one.
    #[arg(long, default_value = "redis-operator-credentials")]
    pub credentials_secret: String,
    /// Namespace of that Secret (default: the operator pod's own, from POD_NAMESPACE; else
    /// `default`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub credentials_namespace: String,
    /// PEM file of the CAs that the certificates of clusters with spec.tls are verified
    /// against (for each pod, its name `<pod>.<cluster>.<namespace>.svc`). Without it, the
    /// operator cannot reach a cluster with TLS, and says so in its status.
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
}

impl TryFrom<RunArgs> for RunConfig {
    type Error = String;

    fn try_from(args: RunArgs) -> Result<Self, String> {
        let election = if args.leader_elect {
            let namespace = args.leader_election_namespace.ok_or(
                "--leader-elect needs --leader-election-namespace (or POD_NAMESPACE from the downward API)",
            )?;
            let election = Election {
                lease_name: args.leader_election_id,
                namespace,
                identity: args
                    .leader_election_identity
                    .unwrap_or_else(Election::local_identity),
                lease_duration: args.lease_duration,
                renew_margin: args.lease_renew_margin,
            };
            election.validate()?;
            Some(election)
        } else {
            None
        };
        Ok(RunConfig {
            namespace: args.namespace,
            kubeconfig: args.kubeconfig,
            context: args.context,
            concurrency: args.concurrency,
            settings: Settings {
                failure_grace: args.failure_grace_period,
                progress_deadline: args.progress_deadline,
                max_concurrent_rolls: args.max_concurrent_rolls,
                resync_interval: args.resync_interval,
                redis_probe_interval: args.redis_probe_interval,
                failover_after: args.failover_after,
            },
            redis_route: args.redis_route.unwrap_or_else(|| {
                if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                    Route::Direct
                } else {
                    Route::PortForward
                }
            }),
            redis_timeout: args.redis_timeout,
            http_addr: args.http_addr,
            election,
            credentials_secret: (args.credentials_namespace, args.credentials_secret),
            tls_ca_file: args.tls_ca_file,
        })
    }
}

/// Runs a parsed command line; errors are printed as one line and give a non-zero exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::GenerateCrd { output } => generate_crd(output.as_ref()),
        Command::Run(args) => {
            telemetry::init(args.log_format);
            match RunConfig::try_from(*args) {
                Ok(config) => controller::run(config).await.map_err(|e| e.to_string()),
                Err(message) => Err(message),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn generate_crd(output: Option<&PathBuf>) -> Result<(), String> {
    let yaml = rediscluster_crd::crd_yaml().map_err(|e| format!("cannot render the CRD: {e}"))?;
    match output {
        Some(path) => {
            std::fs::write(path, yaml).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            print!("{yaml}");
            Ok(())
        }
    }
}

/// A duration as a whole number with a unit: `500ms`, `30s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. 30s, 10m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => {
            return Err(format!(
                "`{text}` has unknown unit `{unit}`; use ms, s, m or h"
            ));
        }
    };
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_parse_or_explain() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (text, expected) in ok {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for (text, hint) in [
            ("10", "no unit"),
            ("m", "whole number"),
            ("10d", "unknown unit"),
            ("0s", "longer than zero"),
            ("-1s", "whole number"),
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(hint), "{text}: {error}");
        }
    }

    #[test]
    fn cli_is_consistent_and_has_documented_defaults() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["redis-operator", "run"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        let config = RunConfig::try_from(*args).unwrap();
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(config.election.is_none());
        assert_eq!(config.settings.resync_interval, Duration::from_secs(600));
        assert_eq!(config.settings.failure_grace, Duration::from_secs(120));
        assert_eq!(config.settings.progress_deadline, Duration::from_secs(600));
        assert_eq!(config.settings.max_concurrent_rolls, 4);
        assert_eq!(config.settings.failover_after, Duration::from_secs(5));
        assert_eq!(config.namespace, None);
    }

    #[test]
    fn leader_election_needs_a_namespace_and_a_sane_margin() {
        let config = |extra: &[&str]| {
            let mut argv = vec!["redis-operator", "run", "--leader-elect"];
            argv.extend_from_slice(extra);
            let Command::Run(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("expected run")
            };
            RunConfig::try_from(*args)
        };
        let election = config(&[
            "--leader-election-namespace",
            "ops",
            "--leader-election-identity",
            "pod-a",
        ])
        .unwrap()
        .election
        .unwrap();
        assert_eq!(election.namespace, "ops");
        assert_eq!(election.identity, "pod-a");
        assert_eq!(election.lease_name, "redis-operator-leader");
        assert_eq!(election.lease_duration, Duration::from_secs(15));
        assert_eq!(election.renew_margin, Duration::from_secs(5));
        if std::env::var_os("POD_NAMESPACE").is_none() {
            let error = config(&[]).err().unwrap();
            assert!(error.contains("POD_NAMESPACE"), "{error}");
        }
        let error = config(&[
            "--leader-election-namespace",
            "ops",
            "--lease-renew-margin",
            "20s",
        ])
        .err()
        .unwrap();
        assert!(error.contains("below --lease-duration"), "{error}");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        assert!(Cli::try_parse_from(["redis-operator", "run", "--concurrency", "0"]).is_err());
    }
}
