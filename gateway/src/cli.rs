//! Command line: `strata serve` and its flags. Flags override the environment,
//! which overrides the config file, which overrides the defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigOverrides};

#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    about = "S3- and Swift-compatible object store with a caching edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway with the embedded store (one process, data in a local directory).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file; every flag has a key of the same name (`s3-domain` → `s3_domain`).
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on, `HOST:PORT` (port 0 picks a free one).
    #[arg(long, env = "STRATA_LISTEN")]
    listen: Option<String>,
    /// Data directory: metadata database, extents, root credentials.
    #[arg(long, env = "STRATA_DATA")]
    data: Option<PathBuf>,
    /// Region reported to S3 clients and expected in signatures.
    #[arg(long, env = "STRATA_REGION")]
    region: Option<String>,
    /// Root domain for virtual-hosted–style requests (`bucket.s3.example.com`).
    #[arg(long, env = "STRATA_S3_DOMAIN")]
    s3_domain: Option<String>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = ConfigOverrides {
        listen: args.listen,
        data: args.data,
        region: args.region,
        s3_domain: args.s3_domain,
    };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?;
    runtime.block_on(crate::server::run(config))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
