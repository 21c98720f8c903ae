//! `strata-bench`: the load generator's command line. Everything else is in
//! the library, so that `strata bench` can embed the same [`BenchArgs`].

use clap::Parser;
use strata_bench::BenchArgs;

/// Drive an S3 or Swift endpoint with put/get/head/list/delete phases and
/// report ops/s, MB/s, p50/p99 latency and errors per phase.
#[derive(Debug, Parser)]
#[command(name = "strata-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let reports = strata_bench::run(cli.bench).await?;
    let errors: u64 = reports.iter().map(|report| report.errors).sum();
    if errors > 0 {
        eprintln!("{errors} requests failed");
    }
    Ok(())
}
