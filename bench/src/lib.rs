//! # strata-bench: load generation and side-by-side comparisons
//!
//! This crate owns strata's macro-benchmarks: a load generator that drives any
//! S3 endpoint (SigV4-signed, path-style) or any OpenStack Swift cluster (v1.0
//! auth, then the object API) with the same workload, and the scripts around
//! it (`bench/compare.sh`) that run strata and a rival on one machine and keep
//! the results as dated runs under `bench/runs/`. Micro-benchmarks of single
//! functions belong with criterion in the crate they measure, not here.
//!
//! A run is a sequence of phases ([`Operation`]: put, get, head, list,
//! delete), each a fixed number of workers with one request in flight each,
//! for a fixed duration, over one key space ([`workload::KeySpace`]) that the
//! phases share: PUT writes fresh keys, GET/HEAD/LIST read them round-robin,
//! DELETE removes them oldest first. A read phase with nothing to read first
//! fills `--objects` keys, untimed. Each phase ends in one [`PhaseReport`]:
//! ops/s, MB/s, p50/p99 latency from exact samples, errors.
//!
//! Principal types: [`BenchArgs`] (the command line, also embeddable as a
//! `strata bench` subcommand), [`Target`] (S3 or Swift, turning a
//! protocol-neutral [`ObjectRequest`] into a ready `http::Request`),
//! [`PatternBody`] (request bodies streamed from one shared 2 MiB block).
//!
//! ## Key design decision: cheap, honest clients
//!
//! The generator shares the machine with the server under test, so every
//! client-side cost is taken from the server. Bodies are never materialised
//! (a 1 GiB PUT streams reference-counted slices of one block, a 1 GiB GET is
//! counted frame by frame and dropped), payloads are sent `UNSIGNED-PAYLOAD`
//! so the client never hashes them, connections are kept alive in a hyper pool
//! sized to the concurrency, and the latency clock starts after signing.
//! Every GET is checked for its full length, and any non-2xx answer is an
//! error, not an operation.
//!
//! ## What this crate must not depend on
//!
//! None of strata's server crates (gateway, auth, store, pool): the bench
//! talks HTTP only, like any client, so that it measures strata and its rivals
//! through the same door and keeps compiling whatever the server's internals
//! become.

pub mod body;
pub mod latency;
pub mod report;
pub mod s3;
pub mod swift;
pub mod target;
pub mod units;
pub mod workload;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

pub use body::{PatternBody, PatternSource};
pub use report::PhaseReport;
pub use target::{ObjectRequest, Target};
pub use workload::Operation;

use crate::s3::S3Target;
use crate::swift::SwiftTarget;
use crate::target::{HttpClient, exchange, http_client};
use crate::workload::{KeyOrder, KeySpace, Phase, run_phase};

/// Command line of the load generator.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// S3 endpoint, path-style, e.g. http://127.0.0.1:8080
    #[arg(long, required_unless_present = "swift_auth")]
    pub endpoint: Option<String>,

    /// S3 access key id
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub access_key: Option<String>,

    /// S3 secret access key
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// S3 region to sign for
    #[arg(long, default_value = "us-east-1")]
    pub region: String,

    /// Swift v1.0 auth URL, e.g. http://127.0.0.1:8080/auth/v1.0; selects Swift
    #[arg(
        long,
        env = "ST_AUTH",
        hide_env_values = true,
        conflicts_with = "endpoint"
    )]
    pub swift_auth: Option<String>,

    /// Swift user, e.g. test:tester
    #[arg(long, env = "ST_USER", hide_env_values = true, requires = "swift_auth")]
    pub swift_user: Option<String>,

    /// Swift key
    #[arg(long, env = "ST_KEY", hide_env_values = true, requires = "swift_auth")]
    pub swift_key: Option<String>,

    /// Bucket (S3) or container (Swift) to work in; created unless --no-create-bucket
    #[arg(long, default_value = "strata-bench")]
    pub bucket: String,

    /// Do not create the bucket/container before the first phase
    #[arg(long)]
    pub no_create_bucket: bool,

    /// Phases to run, in order, comma-separated: put,get,head,list,delete
    #[arg(long = "op", alias = "ops", value_delimiter = ',', required = true)]
    pub ops: Vec<Operation>,

    /// Object size: 4KiB, 1MiB, 1GiB, 4096, 10MB …
    #[arg(long, default_value = "4KiB", value_parser = units::parse_size)]
    pub size: u64,

    /// Workers, each with one request in flight on its own keep-alive connection
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub concurrency: u64,

    /// How long each phase issues requests: 10s, 500ms, 2m
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    pub duration: Duration,

    /// Keys written by the untimed fill before a get/head/list/delete phase
    /// when no earlier put phase of this run wrote any
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub objects: u64,

    /// Key prefix; default strata-bench/<unix-time>-<pid>/ so runs do not collide
    #[arg(long)]
    pub prefix: Option<String>,

    /// Keys per LIST page (S3 max-keys, Swift limit)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub list_limit: u32,

    /// Give up on a single request after this long (counted as an error)
    #[arg(long, default_value = "120s", value_parser = units::parse_duration)]
    pub request_timeout: Duration,

    /// Name of the target in reports (default: s3 or swift)
    #[arg(long)]
    pub label: Option<String>,

    /// Print one JSON object per phase on stdout (human lines go to stderr)
    #[arg(long)]
    pub json: bool,
}

/// Runs every phase of `args` in order, printing one report per phase.
pub async fn run(args: BenchArgs) -> anyhow::Result<Vec<PhaseReport>> {
    let concurrency =
        usize::try_from(args.concurrency).context("concurrency does not fit in memory")?;
    let client = http_client(concurrency);
    let target = Arc::new(connect(&client, &args).await?);
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| target.protocol().to_owned());
    let prefix = match &args.prefix {
        Some(prefix) => prefix.clone(),
        None => default_prefix(),
    };
    let source = PatternSource::new();

    if !args.no_create_bucket {
        create_bucket(&client, &target, &source, &args.bucket).await?;
    }

    let mut keys = KeySpace::default();
    let mut reports = Vec::with_capacity(args.ops.len());
    for &op in &args.ops {
        if op != Operation::Put && keys.is_empty() {
            let filled = fill(&client, &target, &source, &args, &prefix, keys.end).await?;
            keys.end += filled;
        }
        let order = match op {
            Operation::Put => KeyOrder::Once {
                start: keys.end,
                end: None,
            },
            Operation::Get | Operation::Head => KeyOrder::Cycle {
                start: keys.first,
                len: keys.len(),
            },
            Operation::List => KeyOrder::Cycle {
                start: 0,
                len: keys.len().div_ceil(u64::from(args.list_limit)),
            },
            Operation::Delete => KeyOrder::Once {
                start: keys.first,
                end: Some(keys.end),
            },
        };
        let outcome = run_phase(Phase {
            client: client.clone(),
            target: Arc::clone(&target),
            source: source.clone(),
            op,
            prefix: prefix.clone(),
            size: args.size,
            list_limit: args.list_limit,
            keys,
            order,
            concurrency,
            deadline: Some(Instant::now() + args.duration),
            request_timeout: args.request_timeout,
        })
        .await?;
        match op {
            Operation::Put => keys.end += outcome.tickets_taken,
            Operation::Delete => keys.first += outcome.tickets_taken,
            Operation::Get | Operation::Head | Operation::List => {}
        }
        let report = PhaseReport::new(
            &label,
            op,
            args.size,
            concurrency,
            outcome.elapsed,
            outcome.stats,
        );
        if args.json {
            eprintln!("{}", report.human_line());
            println!(
                "{}",
                serde_json::to_string(&report).context("report does not serialise")?
            );
        } else {
            println!("{}", report.human_line());
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Builds the target the flags describe; for Swift, authenticates first.
async fn connect(client: &HttpClient, args: &BenchArgs) -> anyhow::Result<Target> {
    // An empty ST_AUTH in the environment means "not Swift".
    let swift_auth = args.swift_auth.as_deref().filter(|url| !url.is_empty());
    if let Some(auth_url) = swift_auth {
        let user = args
            .swift_user
            .as_deref()
            .context("--swift-user is required with --swift-auth")?;
        let key = args
            .swift_key
            .as_deref()
            .context("--swift-key is required with --swift-auth")?;
        let target = SwiftTarget::authenticate(client, auth_url, user, key, &args.bucket).await?;
        swift::check_account(client, &target).await?;
        return Ok(Target::Swift(target));
    }
    let endpoint = args
        .endpoint
        .as_deref()
        .context("either --endpoint or --swift-auth is required")?;
    let access_key = args
        .access_key
        .as_deref()
        .context("--access-key (or AWS_ACCESS_KEY_ID) is required with --endpoint")?;
    let secret_key = args
        .secret_key
        .as_deref()
        .context("--secret-key (or AWS_SECRET_ACCESS_KEY) is required with --endpoint")?;
    let target = S3Target::new(endpoint, &args.bucket, &args.region, access_key, secret_key)?;
    Ok(Target::S3(target))
}

/// Creates the bucket or container. An existing one is fine: S3 answers 409
/// (`BucketAlreadyOwnedByYou`), Swift 202.
async fn create_bucket(
    client: &HttpClient,
    target: &Target,
    source: &PatternSource,
    bucket: &str,
) -> anyhow::Result<()> {
    let request = target.build(ObjectRequest::CreateBucket, source)?;
    let answer = exchange(client, request)
        .await
        .with_context(|| format!("creating bucket {bucket:?}"))?;
    if answer.status.is_success() || answer.status == http::StatusCode::CONFLICT {
        return Ok(());
    }
    bail!(
        "creating bucket {bucket:?} answered {} (use --no-create-bucket if it exists and creation is not allowed)",
        answer.status
    )
}

/// Writes `--objects` keys from index `start`, untimed, so that a read phase
/// has something to read. Returns how many keys it wrote.
async fn fill(
    client: &HttpClient,
    target: &Arc<Target>,
    source: &PatternSource,
    args: &BenchArgs,
    prefix: &str,
    start: u64,
) -> anyhow::Result<u64> {
    let concurrency = usize::try_from(args.concurrency).context("concurrency too large")?;
    let outcome = run_phase(Phase {
        client: client.clone(),
        target: Arc::clone(target),
        source: source.clone(),
        op: Operation::Put,
        prefix: prefix.to_owned(),
        size: args.size,
        list_limit: args.list_limit,
        keys: KeySpace::default(),
        order: KeyOrder::Once {
            start,
            end: Some(start + args.objects),
        },
        concurrency,
        deadline: None,
        request_timeout: args.request_timeout,
    })
    .await?;
    eprintln!(
        "fill: {} objects of {} in {:.2}s, {} errors",
        outcome.stats.ops,
        units::format_size(args.size),
        outcome.elapsed.as_secs_f64(),
        outcome.stats.errors,
    );
    if outcome.stats.ops == 0 {
        bail!(
            "fill wrote no object: {}",
            outcome
                .stats
                .first_error
                .unwrap_or_else(|| "no request was sent".to_owned())
        );
    }
    Ok(outcome.tickets_taken)
}

fn default_prefix() -> String {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .unwrap_or_default();
    format!("strata-bench/{unix_secs}-{}/", std::process::id())
}
