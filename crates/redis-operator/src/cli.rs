//! The command line: `run` the operator, or `generate-crd`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::context::Settings;
use crate::controller::{self, RunConfig};
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
    Run(RunArgs),
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
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl From<RunArgs> for RunConfig {
    fn from(args: RunArgs) -> Self {
        RunConfig {
            namespace: args.namespace,
            kubeconfig: args.kubeconfig,
            context: args.context,
            concurrency: args.concurrency,
            settings: Settings {
                failure_grace: args.failure_grace_period,
                resync_interval: args.resync_interval,
            },
        }
    }
}

/// Runs a parsed command line; errors are printed as one line and give a non-zero exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::GenerateCrd { output } => generate_crd(output.as_ref()),
        Command::Run(args) => {
            telemetry::init(args.log_format);
            controller::run(args.into())
                .await
                .map_err(|e| e.to_string())
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
        let config = RunConfig::from(args);
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.settings.resync_interval, Duration::from_secs(600));
        assert_eq!(config.settings.failure_grace, Duration::from_secs(120));
        assert_eq!(config.namespace, None);
    }

    #[test]
    fn zero_concurrency_is_refused() {
        assert!(Cli::try_parse_from(["redis-operator", "run", "--concurrency", "0"]).is_err());
    }
}
