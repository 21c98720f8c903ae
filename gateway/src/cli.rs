//! Command line: `strata serve` and its flags (flags override the
//! environment, which overrides the config file, which overrides the
//! defaults), and the admin commands `strata account|user|key`, which talk
//! to a running gateway's admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::admin_client::AdminClient;
use crate::config::{Config, ConfigOverrides, DoorKind};

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
    Serve(Box<ServeArgs>),
    /// Manage accounts (through a running gateway).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Manage the users of an account (through a running gateway).
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Rotate user keys or the token signing key (through a running gateway).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Map host names to accounts and containers (through a running gateway).
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Mount an account (or one container) as a folder, through FUSE.
    Mount(MountArgs),
    /// Edit a ring builder file and write the ring (as swift-ring-builder).
    Ring {
        #[command(subcommand)]
        command: crate::ring_cli::RingCommand,
    },
    /// Run a storage node: extents for the partitions the ring gives it.
    Node(crate::cluster_cli::NodeArgs),
    /// The health of a cluster: every node, its data and its replication.
    Status(crate::cluster_cli::StatusArgs),
    /// The members of a replicated metadata service: show, add, remove.
    Metadata(crate::cluster_cli::MetadataArgs),
}

#[derive(Debug, clap::Args)]
struct MountArgs {
    /// The gateway, `http://HOST:PORT` or `https://HOST[:PORT]`, followed
    /// by `/CONTAINER` to mount only that container.
    url: String,
    /// An existing, empty directory.
    mountpoint: PathBuf,
    /// Who to log in as, `account:user` (python-swiftclient's variable).
    #[arg(long, env = "ST_USER")]
    user: Option<String>,
    /// A TOML file with `user` and `key`, instead of --user and ST_KEY.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Where files being written wait until they are uploaded.
    #[arg(long, env = "STRATA_MOUNT_SPOOL")]
    spool: Option<PathBuf>,
    /// Files above this many MiB are uploaded in segments of this size (a
    /// Static Large Object). Up to it a file is one object, which S3
    /// clients read too; the default is the largest object the server
    /// takes (its /info's max_file_size), and so is the most.
    #[arg(long)]
    segment_mib: Option<u64>,
    /// Seconds listings and attributes are trusted before asking again.
    #[arg(long, default_value_t = 2.0)]
    listing_ttl: f64,
    /// Let other local users use the folder.
    #[arg(long)]
    allow_other: bool,
    /// Over HTTPS, also trust the CA certificates in this PEM file (the
    /// system's are trusted).
    #[arg(long)]
    cacert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum DomainCommand {
    /// Serve ACCOUNT[/CONTAINER] at http://HOST/ (without a container, the
    /// first path segment names it).
    Add { host: String, target: String },
    /// List the custom domains.
    List,
    /// Remove a custom domain.
    Rm { host: String },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Create an account.
    Create { name: String },
    /// List accounts with their usage.
    List,
    /// Delete an account; refused while it holds containers unless --purge.
    Delete {
        name: String,
        /// Delete its containers and objects too.
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; prints its Swift key and S3 key pair (shown only once).
    Create {
        account: String,
        user: String,
        /// reader, writer, admin (account admin) or reseller-admin.
        #[arg(long, default_value = "writer")]
        role: String,
    },
    /// List the users of an account.
    List { account: String },
    /// Delete a user.
    Delete { account: String, user: String },
    /// Revoke every token issued to a user.
    Revoke { account: String, user: String },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Give a user a new Swift key and S3 key pair; the old ones and its tokens stop working.
    Rotate { account: String, user: String },
    /// Sign new tokens with a new key; tokens signed by the old one verify for --overlap seconds.
    RotateSigning {
        #[arg(long, default_value_t = 86400)]
        overlap: u64,
    },
}

/// How the admin commands reach the gateway.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Base URL of a gateway serving the auth door.
    #[arg(
        long,
        env = "STRATA_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Reseller admin to log in as, `account:user`.
    #[arg(
        long,
        env = "STRATA_ADMIN_USER",
        default_value = "admin:admin",
        global = true
    )]
    admin_user: String,
    /// Over HTTPS, also trust the CA certificates in this PEM file (the
    /// system's are trusted).
    #[arg(long, env = "STRATA_CACERT", global = true)]
    cacert: Option<PathBuf>,
    /// Their Swift key; by default the root secret of --data.
    #[arg(long, env = "STRATA_ADMIN_KEY", global = true, hide_env_values = true)]
    admin_key: Option<String>,
    /// Data directory whose root credentials to use when no key is given.
    #[arg(
        long,
        env = "STRATA_DATA",
        default_value = "strata-data",
        global = true
    )]
    data: PathBuf,
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
    /// Swift domain_remap: serve `container.account.DOMAIN/key`.
    #[arg(long, env = "STRATA_STORAGE_DOMAIN")]
    storage_domain: Option<String>,
    /// Serve only these doors (comma-separated): `--only auth` runs an auth node.
    #[arg(long, env = "STRATA_ONLY", value_delimiter = ',')]
    only: Option<Vec<DoorKind>>,
    /// Open the FTP door on `HOST:PORT` (port 0 picks a free one).
    #[arg(long, env = "STRATA_FTP_LISTEN")]
    ftp_listen: Option<String>,
    /// Ports for FTP passive data connections, `FIRST-LAST`.
    #[arg(long, env = "STRATA_FTP_PASSIVE_PORTS")]
    ftp_passive_ports: Option<String>,
    /// The address PASV replies name, an IPv4 address or a DNS name, for a
    /// gateway behind NAT (default: the control connection's own).
    #[arg(long, env = "STRATA_FTP_PASSIVE_HOST")]
    ftp_passive_host: Option<String>,
    /// PEM certificate chain for explicit FTPS (`AUTH TLS`).
    #[arg(long, env = "STRATA_FTP_TLS_CERT")]
    ftp_tls_cert: Option<PathBuf>,
    /// PEM private key of --ftp-tls-cert.
    #[arg(long, env = "STRATA_FTP_TLS_KEY")]
    ftp_tls_key: Option<PathBuf>,
    /// Refuse FTP sessions that do not switch to TLS.
    #[arg(long, env = "STRATA_FTP_REQUIRE_TLS")]
    ftp_require_tls: bool,
    /// Keep extents on the storage nodes of this ring file instead of in --data.
    #[arg(long, env = "STRATA_RING")]
    ring: Option<PathBuf>,
    /// File holding the cluster secret (with --ring).
    #[arg(long, env = "STRATA_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Take buckets, objects and accounts from the gateway at `HOST:PORT`
    /// (the metadata service, with the same ring and secret) instead of
    /// holding them in --data: several gateways over one cluster.
    /// Several comma-separated addresses name the members of a replicated
    /// metadata service, each optionally with its member id: `ID=HOST:PORT`.
    #[arg(long, env = "STRATA_METADATA")]
    metadata: Option<String>,
    /// Be member N of the replicated metadata service (its id in
    /// --metadata: `ID=HOST:PORT` entries, or without ids its position from
    /// 1): keep a replica of the metadata in --data.
    #[arg(long, env = "STRATA_METADATA_MEMBER")]
    metadata_member: Option<u64>,
    /// With --metadata-member: this member joins a running group (it is
    /// added with `strata metadata add`) rather than founding one.
    #[arg(long, env = "STRATA_METADATA_JOIN", requires = "metadata_member")]
    metadata_join: bool,
    /// PEM certificate chain: the listener also speaks TLS (HTTPS) with it,
    /// on the same port as plain HTTP.
    #[arg(long, env = "STRATA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STRATA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A directory of HOST.pem files (chain and key; `_.example.com.pem`
    /// for `*.example.com`) presented to clients asking for HOST over TLS
    /// (SNI); reread every few seconds.
    #[arg(long, env = "STRATA_TLS_CERT_DIR")]
    tls_cert_dir: Option<PathBuf>,
    /// PEM file of the cluster's CA: members speak TLS to each other and
    /// present certificates it signed (with --ring).
    #[arg(long, env = "STRATA_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Account { command, admin } => run_admin(admin, Admin::Account(command)),
        Command::User { command, admin } => run_admin(admin, Admin::User(command)),
        Command::Key { command, admin } => run_admin(admin, Admin::Key(command)),
        Command::Domain { command, admin } => run_admin(admin, Admin::Domain(command)),
        Command::Mount(args) => mount(args),
        Command::Ring { command } => crate::ring_cli::run(command),
        Command::Node(args) => crate::cluster_cli::node(args),
        Command::Status(args) => crate::cluster_cli::status(args),
        Command::Metadata(args) => crate::cluster_cli::metadata(args),
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
        only: args.only,
        storage_domain: args.storage_domain,
        ftp_listen: args.ftp_listen,
        ftp_passive_ports: args.ftp_passive_ports,
        ftp_passive_host: args.ftp_passive_host,
        ftp_tls_cert: args.ftp_tls_cert,
        ftp_tls_key: args.ftp_tls_key,
        ftp_require_tls: args.ftp_require_tls,
        ring: args.ring,
        cluster_secret_file: args.cluster_secret_file,
        metadata: args.metadata,
        metadata_member: args.metadata_member,
        metadata_join: args.metadata_join,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        tls_cert_dir: args.tls_cert_dir,
        cluster_tls_ca: args.cluster_tls_ca,
    };
    let config = Config::load(args.config.as_deref(), overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata")
        .build()?;
    runtime.block_on(crate::server::run(config))
}

/// Credentials from a file, or `--user`/`ST_USER` and `ST_KEY`: a key is
/// never taken from the command line, where `ps` would show it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MountCredentials {
    user: String,
    key: String,
}

fn mount(args: MountArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let credentials = match &args.credentials {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => MountCredentials {
            user: args
                .user
                .clone()
                .context("no user: pass --user or set ST_USER")?,
            key: std::env::var("ST_KEY").context("no key: set ST_KEY or pass --credentials")?,
        },
    };
    if !args.listing_ttl.is_finite() || args.listing_ttl < 0.0 {
        anyhow::bail!("--listing-ttl must be a number of seconds");
    }
    strata_mount::run(strata_mount::MountArgs {
        url: args.url,
        mountpoint: args.mountpoint,
        login: credentials.user,
        key: credentials.key,
        spool_dir: args
            .spool
            .unwrap_or_else(|| std::env::temp_dir().join("strata-mount-spool")),
        segment_size: args.segment_mib.map(|mib| mib.max(1) * 1024 * 1024),
        listing_ttl: std::time::Duration::from_secs_f64(args.listing_ttl),
        allow_other: args.allow_other,
        ca_file: args.cacert,
    })
}

enum Admin {
    Account(AccountCommand),
    User(UserCommand),
    Key(KeyCommand),
    Domain(DomainCommand),
}

fn run_admin(args: AdminArgs, command: Admin) -> anyhow::Result<()> {
    let key = match args.admin_key {
        Some(key) => key,
        None => crate::credentials::existing_root_secret(&args.data)?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client =
            AdminClient::login(&args.url, &args.admin_user, &key, args.cacert.as_deref()).await?;
        admin_command(&client, command).await
    })
}

async fn admin_command(client: &AdminClient, command: Admin) -> anyhow::Result<()> {
    let enc = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
    match command {
        Admin::Account(AccountCommand::Create { name }) => {
            client
                .call(Method::PUT, &format!("accounts/{}", enc(&name)))
                .await?;
            println!("created account {name}");
        }
        Admin::Account(AccountCommand::List) => {
            let accounts = client.call(Method::GET, "accounts").await?;
            println!(
                "{:<24} {:>6} {:>10} {:>10} {:>14}",
                "ACCOUNT", "USERS", "CONTAINERS", "OBJECTS", "BYTES"
            );
            for account in accounts.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:>6} {:>10} {:>10} {:>14}",
                    account["name"].as_str().unwrap_or(""),
                    account["users"],
                    account["containers"],
                    account["objects"],
                    account["bytes"]
                );
            }
        }
        Admin::Account(AccountCommand::Delete { name, purge }) => {
            let query = if purge { "?purge=true" } else { "" };
            client
                .call(Method::DELETE, &format!("accounts/{}{query}", enc(&name)))
                .await?;
            println!("deleted account {name}");
        }
        Admin::User(UserCommand::Create {
            account,
            user,
            role,
        }) => {
            let keys = client
                .call(
                    Method::PUT,
                    &format!(
                        "accounts/{}/users/{}?role={}",
                        enc(&account),
                        enc(&user),
                        enc(&role)
                    ),
                )
                .await?;
            print_keys("created", &keys);
        }
        Admin::User(UserCommand::List { account }) => {
            let users = client
                .call(Method::GET, &format!("accounts/{}/users", enc(&account)))
                .await?;
            println!("{:<24} {:<16} ACCESS KEYS", "USER", "ROLE");
            for user in users.as_array().into_iter().flatten() {
                let keys: Vec<&str> = user["access_keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|key| key.as_str())
                    .collect();
                println!(
                    "{:<24} {:<16} {}",
                    user["user"].as_str().unwrap_or(""),
                    user["role"].as_str().unwrap_or(""),
                    keys.join(",")
                );
            }
        }
        Admin::User(UserCommand::Delete { account, user }) => {
            client
                .call(
                    Method::DELETE,
                    &format!("accounts/{}/users/{}", enc(&account), enc(&user)),
                )
                .await?;
            println!("deleted user {account}:{user}");
        }
        Admin::User(UserCommand::Revoke { account, user }) => {
            client
                .call(
                    Method::POST,
                    &format!("accounts/{}/users/{}?op=revoke", enc(&account), enc(&user)),
                )
                .await?;
            println!("revoked the tokens of {account}:{user}");
        }
        Admin::Key(KeyCommand::Rotate { account, user }) => {
            let keys = client
                .call(
                    Method::POST,
                    &format!("accounts/{}/users/{}?op=rotate", enc(&account), enc(&user)),
                )
                .await?;
            print_keys("rotated the keys of", &keys);
        }
        Admin::Domain(DomainCommand::Add { host, target }) => {
            let (account, container) = match target.split_once('/') {
                Some((account, container)) => (account, Some(container)),
                None => (target.as_str(), None),
            };
            let mut path = format!("domains/{}?account={}", enc(&host), enc(account));
            if let Some(container) = container {
                path.push_str(&format!("&container={}", enc(container)));
            }
            let record = client.call(Method::PUT, &path).await?;
            println!(
                "{} serves {target}",
                record["host"].as_str().unwrap_or(&host)
            );
        }
        Admin::Domain(DomainCommand::List) => {
            let domains = client.call(Method::GET, "domains").await?;
            println!("{:<40} TARGET", "HOST");
            for domain in domains.as_array().into_iter().flatten() {
                let account = domain["account"].as_str().unwrap_or("");
                let target = match domain["container"].as_str() {
                    Some(container) => format!("{account}/{container}"),
                    None => account.to_owned(),
                };
                println!("{:<40} {target}", domain["host"].as_str().unwrap_or(""));
            }
        }
        Admin::Domain(DomainCommand::Rm { host }) => {
            client
                .call(Method::DELETE, &format!("domains/{}", enc(&host)))
                .await?;
            println!("removed domain {host}");
        }
        Admin::Key(KeyCommand::RotateSigning { overlap }) => {
            let answer = client
                .call(Method::POST, &format!("signing-key?overlap={overlap}"))
                .await?;
            println!(
                "token signing key {} in use; older keys verify for {overlap} s",
                answer["key_id"]
            );
        }
    }
    Ok(())
}

/// A user's secrets, shown once, in `KEY=value` lines a script can source.
fn print_keys(what: &str, keys: &serde_json::Value) {
    let field = |name: &str| keys[name].as_str().unwrap_or("").to_owned();
    println!(
        "{what} user {}:{} ({})",
        field("account"),
        field("user"),
        field("role")
    );
    println!("SWIFT_KEY={}", field("swift_key"));
    println!("AWS_ACCESS_KEY_ID={}", field("access_key"));
    println!("AWS_SECRET_ACCESS_KEY={}", field("secret_key"));
}

fn init_tracing() {
    // libunftp logs every FTP command at info, with its whole session state
    // in the span (warnings only), and fuser warns of every FUSE call it
    // answers "not implemented" for, xattrs and ioctls (errors only), unless
    // STRATA_LOG asks for more.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libunftp=warn,fuser=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
