use std::process::ExitCode;

use clap::Parser;
use redis_operator::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    redis_operator::cli::run(Cli::parse()).await
}
