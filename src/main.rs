//! The `gridwatch` command line: a thin layer over the library's stages.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use gridwatch::config::{Config, ConfigError};
use gridwatch::run::{RunOptions, StopHandle};

#[derive(Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Automatic discovery of street problems from city camera feeds"
)]
struct Cli {
    /// Log format on stderr; levels come from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: cameras → detection → scenarios → cases → dispatch.
    Run {
        /// Key-area configuration (TOML); without it, the embedded default (sample streams).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Seconds to keep delivering after the sources end.
        #[arg(long, default_value_t = gridwatch::run::DEFAULT_DRAIN_TIMEOUT_SECONDS)]
        drain_timeout_seconds: f64,
    },
    /// Validate a configuration and report every problem with file, line and field.
    Check {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the reference dispatch receiver.
    DispatchServer {
        #[arg(long, default_value = "127.0.0.1:8765")]
        listen: String,
        #[arg(long, default_value = "var/receiver.sqlite")]
        database: PathBuf,
        /// Require this bearer token on every API request.
        #[arg(long, env = "GRIDWATCH_RECEIVER_TOKEN")]
        token: Option<String>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match config {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gridwatch::telemetry::init_logging(matches!(cli.log_format, LogFormat::Json));
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { config } => match load(config.as_ref()) {
            Ok(c) => {
                gridwatch::run::check_runtime(&c).context("model check")?;
                println!(
                    "{}: ok ({} units, {} groups, {} cameras)",
                    c.source_name,
                    c.units.len(),
                    c.groups.len(),
                    c.cameras.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Run {
            config,
            drain_timeout_seconds,
        } => {
            let config = load(config.as_ref())?;
            gridwatch::telemetry::prometheus();
            let options = RunOptions {
                drain_timeout: std::time::Duration::from_secs_f64(drain_timeout_seconds.max(0.0)),
            };
            let summary = gridwatch::run::run(config, options, StopHandle::default())?;
            println!(
                "cases stored: {}, delivered: {}, pending in outbox: {}, dead letters: {}",
                summary.cases_stored,
                summary.outbox.delivered,
                summary.outbox.pending,
                summary.outbox.dead
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::DispatchServer {
            listen,
            database,
            token,
        } => {
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async {
                let receiver = gridwatch::dispatch::server::Receiver::bind(&listen, &database, token).await?;
                let addr = receiver.local_addr();
                tracing::info!(url = %format!("http://{addr}/"), api = %format!("http://{addr}{}", gridwatch::dispatch::server::CASES_PATH), "dispatch receiver listening");
                receiver
                    .serve(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
