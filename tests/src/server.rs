//! One `strata serve` child process and the client commands pointed at it.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use tempfile::TempDir;

use crate::tools::{HttpResponse, Signing, ToolOutput, run_tool};

/// Access key of the root user every test server is started with.
pub const ROOT_ACCESS_KEY: &str = "STRATAE2EROOTACCESS0";
/// Secret of the root user. It contains `/` and `+` on purpose, like real AWS
/// secrets do, so that config-file and environment quoting gets exercised.
pub const ROOT_SECRET_KEY: &str = "e2e/Root+Secret/0123456789abcdefghijklmnopq";
/// Region the server runs in and every client signs for.
pub const REGION: &str = "us-east-1";
/// Name of the rclone remote configured through `RCLONE_CONFIG_STRATA_*`.
pub const RCLONE_REMOTE: &str = "strata";

/// How long the server gets to print its `listening on` line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Server::serve_until_exit`] waits for a refused configuration
/// to end the process.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop (SIGTERM) may take before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Upper bound for one external client command; a hung request must fail the
/// test rather than hang CI.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines of server log shown when a `Server` is dropped (visible only for
/// failing tests, whose output the test runner keeps).
const LOG_TAIL_LINES: usize = 80;

/// A user the Swift clients (and, with its S3 keys, the S3 ones) act as.
#[derive(Debug, Clone)]
pub struct SwiftUser {
    pub account: String,
    pub user: String,
    /// The Swift key (`X-Auth-Key`, the Keystone password).
    pub key: String,
    pub access_key: String,
    pub secret_key: String,
}

impl SwiftUser {
    /// The root user `admin:admin`, whose Swift key is the root S3 secret.
    pub fn root() -> SwiftUser {
        SwiftUser {
            account: "admin".into(),
            user: "admin".into(),
            key: ROOT_SECRET_KEY.into(),
            access_key: ROOT_ACCESS_KEY.into(),
            secret_key: ROOT_SECRET_KEY.into(),
        }
    }

    /// `account:user`, the v1.0 login.
    pub fn login(&self) -> String {
        format!("{}:{}", self.account, self.user)
    }

    /// The `KEY=value` lines `strata user create` and `strata key rotate` print.
    pub fn from_cli_output(account: &str, user: &str, text: &str) -> Result<SwiftUser> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
                .with_context(|| format!("no {name}= line"))
        };
        Ok(SwiftUser {
            account: account.into(),
            user: user.into(),
            key: field("SWIFT_KEY")?,
            access_key: field("AWS_ACCESS_KEY_ID")?,
            secret_key: field("AWS_SECRET_ACCESS_KEY")?,
        })
    }
}

/// A running `strata serve` with a private data directory.
///
/// Dropping it kills the child. The port changes on every (re)start, so
/// always ask for [`Server::endpoint`] after a restart; the client helpers do.
pub struct Server {
    binary: PathBuf,
    data_dir: TempDir,
    scratch: TempDir,
    log_path: PathBuf,
    child: Option<Child>,
    stdout_pump: Option<JoinHandle<()>>,
    endpoint: String,
    port: u16,
    /// `ftp://127.0.0.1:PORT` of the FTP door.
    ftp_endpoint: String,
    n_starts: u32,
    /// Extra `strata serve` arguments (a `--config` file).
    extra_args: Vec<String>,
    /// What `--listen` is given: a free port by default, a fixed address
    /// for a server others must name before it starts.
    listen: String,
}

impl Server {
    /// Starts `strata serve --listen 127.0.0.1:0 --data <tempdir>` with the
    /// test root credentials and waits until it prints `listening on …` and
    /// answers `GET /health` with 200.
    pub fn start() -> Result<Server> {
        Self::start_with_config("")
    }

    /// Like [`Server::start`], with `toml` as the config file (empty: none).
    pub fn start_with_config(toml: &str) -> Result<Server> {
        Self::start_with_config_and_args(toml, &[])
    }

    /// Like [`Server::start`], with `args` added to the usual `strata serve`
    /// flags (`--ftp-tls-cert FILE`, …); they are kept for restarts.
    pub fn start_with_args(args: &[&str]) -> Result<Server> {
        Self::start_with_config_and_args("", args)
    }

    /// Like [`Server::start`], with a config file and extra flags.
    pub fn start_with_config_and_args(toml: &str, args: &[&str]) -> Result<Server> {
        Self::start_listening_on("127.0.0.1:0", toml, args)
    }

    /// Starts a server on `listen` (`HOST:PORT`), which it keeps across
    /// restarts.
    pub fn start_listening_on(listen: &str, toml: &str, args: &[&str]) -> Result<Server> {
        let binary = strata_binary()?;
        let data_dir = tempfile::Builder::new()
            .prefix("strata-e2e-data-")
            .tempdir()
            .context("creating the server data directory")?;
        let scratch = tempfile::Builder::new()
            .prefix("strata-e2e-scratch-")
            .tempdir()
            .context("creating the scratch directory")?;
        let log_path = scratch.path().join("strata.log");
        let mut server = Server {
            binary,
            data_dir,
            scratch,
            log_path,
            child: None,
            stdout_pump: None,
            endpoint: String::new(),
            port: 0,
            ftp_endpoint: String::new(),
            n_starts: 0,
            extra_args: Vec::new(),
            listen: listen.to_owned(),
        };
        if !toml.is_empty() {
            let path = server.scratch.path().join("strata.toml");
            fs::write(&path, toml).context("writing the server config")?;
            server.extra_args = vec!["--config".into(), path.display().to_string()];
        }
        server
            .extra_args
            .extend(args.iter().map(|arg| arg.to_string()));
        server.write_static_client_configs()?;
        server.spawn()?;
        Ok(server)
    }

    /// Runs `strata serve` with the usual flags plus `args` on a fresh data
    /// directory and waits for it to exit, for configurations that must be
    /// refused at start; does not check the exit status. A server that
    /// starts anyway is killed after [`REFUSAL_TIMEOUT`] and reported as an
    /// error.
    pub fn serve_until_exit(args: &[&str]) -> Result<ToolOutput> {
        let binary = strata_binary()?;
        let data_dir = tempfile::Builder::new()
            .prefix("strata-e2e-refused-")
            .tempdir()
            .context("creating the server data directory")?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(data_dir.path())
            .arg("--region")
            .arg(REGION)
            .arg("--ftp-listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("STRATA_ROOT_ACCESS_KEY", ROOT_ACCESS_KEY)
            .env("STRATA_ROOT_SECRET_KEY", ROOT_SECRET_KEY)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        run_tool(&mut command, REFUSAL_TIMEOUT)
            .context("strata serve was expected to refuse its configuration and exit")
    }

    /// `http://127.0.0.1:PORT` of the running server.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Port of the running server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the config file of a server started with one; the next
    /// [`Server::restart`] reads it.
    pub fn rewrite_config(&self, toml: &str) -> Result<()> {
        let path = self.scratch.path().join("strata.toml");
        ensure!(
            path.exists(),
            "this server was started without a config file"
        );
        fs::write(&path, toml).context("rewriting the server config")
    }

    /// The text of `GET /metrics`.
    pub fn metrics(&self) -> Result<String> {
        let response = self.http("GET", "/metrics", Signing::Anonymous, None, &[])?;
        response.expect_status(200)?;
        Ok(response.body_text())
    }

    /// The value of one series of `/metrics`, named as it is written there
    /// (`strata_cluster_nodes{state="up"}`).
    pub fn metric(&self, series: &str) -> Result<u64> {
        let metrics = self.metrics()?;
        metric_in(&metrics, series).with_context(|| format!("no {series} in /metrics:\n{metrics}"))
    }

    /// `ftp://127.0.0.1:PORT` of the running server's FTP door (every test
    /// server opens one on a free port).
    pub fn ftp_endpoint(&self) -> &str {
        &self.ftp_endpoint
    }

    /// The data directory, which survives restarts.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// A fresh directory for the test's local files, removed with the server.
    pub fn work_dir(&self, name: &str) -> Result<PathBuf> {
        let path = self.scratch.path().join("work").join(name);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// Whether the child process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server if it runs (SIGTERM, then SIGKILL after 15 s) and
    /// starts it again on the same data directory. The port changes.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_gracefully()?;
        self.spawn()
    }

    /// Kills the server with SIGKILL (no chance to flush or clean up) and
    /// waits for it to be gone. Use [`Server::restart`] to bring it back.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("kill9: strata is not running")?;
        // `Child::kill` is SIGKILL on Unix.
        child.kill().context("sending SIGKILL to strata")?;
        let status = child.wait().context("reaping strata after SIGKILL")?;
        self.join_stdout_pump();
        self.append_log(&format!(
            "=== harness: SIGKILL sent, strata ended with {status} ==="
        ));
        Ok(())
    }

    /// Status code of `GET path` without authentication.
    pub fn get_status(&self, path: &str) -> Result<u16> {
        http_get_status(&self.endpoint, path)
    }

    /// Fails unless `GET /health` answers 200: call it after every abusive
    /// request to prove the server survived it.
    pub fn assert_healthy(&mut self) -> Result<()> {
        if !self.is_running() {
            bail!(
                "strata is no longer running; log tail:\n{}",
                self.log_tail(LOG_TAIL_LINES)
            );
        }
        let status = self
            .get_status("/health")
            .context("GET /health after the previous request")?;
        if status != 200 {
            bail!("GET /health answered {status}, expected 200");
        }
        Ok(())
    }

    /// The last `n_lines` lines the server wrote to stdout and stderr.
    pub fn log_tail(&self, n_lines: usize) -> String {
        let text = fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n_lines)..].join("\n")
    }

    /// `aws --endpoint-url <endpoint> --output json <args>`; does not check
    /// the exit status.
    pub fn aws(&self, args: &[&str]) -> Result<ToolOutput> {
        run_tool(&mut self.aws_command(args), TOOL_TIMEOUT)
    }

    /// The command [`Server::aws`] runs, for tests that need to give it a
    /// stdin or run it in the background.
    pub fn aws_command(&self, args: &[&str]) -> Command {
        self.aws_command_at(&self.endpoint, args)
    }

    /// [`Server::aws_command`] against another URL of this server (its
    /// `https://` one, say).
    pub fn aws_command_at(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut command = Command::new("aws");
        command
            .arg("--endpoint-url")
            .arg(endpoint)
            .arg("--output")
            .arg("json")
            .args(args);
        self.apply_client_env(&mut command);
        command
    }

    /// Runs the aws CLI and requires exit status 0.
    pub fn aws_ok(&self, args: &[&str]) -> Result<ToolOutput> {
        self.aws(args)?.expect_success()
    }

    /// `aws s3api put-bucket-acl --bucket BUCKET --acl ACL`, required to
    /// succeed.
    pub fn set_bucket_acl(&self, bucket: &str, acl: &str) -> Result<()> {
        let args = ["s3api", "put-bucket-acl", "--bucket", bucket, "--acl", acl];
        self.aws_ok(&args).map(drop)
    }

    /// Runs the aws CLI, requires success and parses its JSON output
    /// (`Value::Null` when the command printed nothing).
    pub fn aws_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        self.aws_ok(args)?.json()
    }

    /// Runs the aws CLI and requires it to fail with S3 error `code` (the CLI
    /// prints `An error occurred (CODE) when calling …`). Returns stderr.
    pub fn aws_error(&self, args: &[&str], code: &str) -> Result<String> {
        let output = self.aws(args)?.expect_failure()?;
        let stderr = output.stderr_text();
        if !stderr.contains(&format!("({code})")) {
            bail!("expected S3 error {code}\n{output}");
        }
        Ok(stderr)
    }

    /// `python3 tests/py/<script> <args>` with the endpoint in
    /// `STRATA_ENDPOINT` and the credentials in the standard `AWS_*`
    /// variables; does not check the exit status.
    pub fn python(&self, script: &str, args: &[&str]) -> Result<ToolOutput> {
        let mut command = self.python_command(script, args);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// Runs a python script and requires exit status 0.
    pub fn python_ok(&self, script: &str, args: &[&str]) -> Result<ToolOutput> {
        self.python(script, args)?.expect_success()
    }

    /// `/usr/bin/python3 tests/py/<script> <args>`: the system interpreter,
    /// where Debian's python3-swiftclient is installed; does not check the
    /// exit status.
    pub fn system_python(&self, script: &str, args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new("/usr/bin/python3");
        command.arg(python_scripts_dir().join(script)).args(args);
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// The command [`Server::python`] runs, for tests that need to spawn it
    /// and read its output while it runs.
    pub fn python_command(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new("python3");
        command.arg(python_scripts_dir().join(script)).args(args);
        self.apply_client_env(&mut command);
        command
    }

    /// `s3cmd -c <generated .s3cfg> <args>`; does not check the exit status.
    pub fn s3cmd(&self, args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new("s3cmd");
        command
            .arg("-c")
            .arg(self.s3cmd_config_path())
            .arg("--no-progress")
            .args(args);
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// Runs s3cmd and requires exit status 0.
    pub fn s3cmd_ok(&self, args: &[&str]) -> Result<ToolOutput> {
        self.s3cmd(args)?.expect_success()
    }

    /// `rclone --config <empty file> <args>` with the remote
    /// [`RCLONE_REMOTE`] (`strata:`) defined through `RCLONE_CONFIG_STRATA_*`
    /// variables; does not check the exit status.
    pub fn rclone(&self, args: &[&str]) -> Result<ToolOutput> {
        run_tool(&mut self.rclone_s3_command(args), TOOL_TIMEOUT)
    }

    /// The command [`Server::rclone`] runs, for rclone processes a test
    /// keeps running itself (`rclone mount`).
    pub fn rclone_s3_command(&self, args: &[&str]) -> Command {
        let mut command = self.rclone_command(args);
        let remote = RCLONE_REMOTE.to_uppercase();
        let option = |name: &str| format!("RCLONE_CONFIG_{remote}_{name}");
        command
            .env(option("TYPE"), "s3")
            .env(option("PROVIDER"), "Other")
            .env(option("ENV_AUTH"), "false")
            .env(option("ACCESS_KEY_ID"), ROOT_ACCESS_KEY)
            .env(option("SECRET_ACCESS_KEY"), ROOT_SECRET_KEY)
            .env(option("REGION"), REGION)
            .env(option("ENDPOINT"), &self.endpoint)
            .env(option("FORCE_PATH_STYLE"), "true");
        command
    }

    /// `program` with the client environment every helper here uses (no
    /// `AWS_*`, proxy or client settings from the machine), for clients
    /// without a helper of their own, such as s3fs.
    pub fn client_command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        self.apply_client_env(&mut command);
        command
    }

    /// rclone with an empty config file, one attempt per request, and the
    /// client environment.
    fn rclone_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("rclone");
        command
            .arg("--config")
            .arg(self.rclone_config_path())
            .args(["--retries", "1", "--low-level-retries", "2"])
            .args(args);
        self.apply_client_env(&mut command);
        command
    }

    /// Runs rclone and requires exit status 0.
    pub fn rclone_ok(&self, args: &[&str]) -> Result<ToolOutput> {
        self.rclone(args)?.expect_success()
    }

    /// `swift -A <endpoint>/auth/v1.0 -U account:user -K key <args>`
    /// (python-swiftclient with v1.0 auth); does not check the exit status.
    pub fn swift(&self, who: &SwiftUser, args: &[&str]) -> Result<ToolOutput> {
        let auth_url = format!("{}/auth/v1.0", self.endpoint);
        let login = who.login();
        self.run_swift(&["-A", &auth_url, "-U", &login, "-K", &who.key], args)
    }

    fn run_swift(&self, auth: &[&str], args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new("swift");
        command.args(auth).args(args);
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// Runs the swift CLI (v1.0 auth) and requires exit status 0.
    pub fn swift_ok(&self, who: &SwiftUser, args: &[&str]) -> Result<ToolOutput> {
        self.swift(who, args)?.expect_success()
    }

    /// The swift CLI with Keystone v3 password authentication (project =
    /// account); does not check the exit status.
    pub fn swift_v3(&self, who: &SwiftUser, args: &[&str]) -> Result<ToolOutput> {
        let auth_url = format!("{}/v3", self.endpoint);
        #[rustfmt::skip]
        let auth = [
            "--auth-version", "3", "--os-auth-url", &auth_url,
            "--os-username", &who.user, "--os-password", &who.key,
            "--os-project-name", &who.account,
            "--os-user-domain-name", "Default", "--os-project-domain-name", "Default",
        ];
        self.run_swift(&auth, args)
    }

    /// `rclone --config <empty file> <args>` with the remote `sw:`, rclone's
    /// swift backend logged in as `who` (v1.0 auth, or Keystone v3 with
    /// `v3`); does not check the exit status.
    pub fn rclone_swift(&self, who: &SwiftUser, v3: bool, args: &[&str]) -> Result<ToolOutput> {
        let mut command = self.rclone_command(args);
        command
            .env("RCLONE_CONFIG_SW_TYPE", "swift")
            .env(
                "RCLONE_CONFIG_SW_USER",
                if v3 { who.user.clone() } else { who.login() },
            )
            .env("RCLONE_CONFIG_SW_KEY", &who.key);
        if v3 {
            command
                .env("RCLONE_CONFIG_SW_AUTH", format!("{}/v3", self.endpoint))
                .env("RCLONE_CONFIG_SW_AUTH_VERSION", "3")
                .env("RCLONE_CONFIG_SW_TENANT", &who.account)
                .env("RCLONE_CONFIG_SW_DOMAIN", "Default")
                .env("RCLONE_CONFIG_SW_TENANT_DOMAIN", "Default");
        } else {
            command.env(
                "RCLONE_CONFIG_SW_AUTH",
                format!("{}/auth/v1.0", self.endpoint),
            );
        }
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// Runs rclone's swift backend and requires exit status 0.
    pub fn rclone_swift_ok(&self, who: &SwiftUser, v3: bool, args: &[&str]) -> Result<ToolOutput> {
        self.rclone_swift(who, v3, args)?.expect_success()
    }

    /// The `strata` binary this server runs, for tests that start other
    /// subcommands themselves (`strata mount`).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `strata <args>` (the admin commands) pointed at this server, as the
    /// root reseller admin unless `args` name another `--admin-key`; does
    /// not check the exit status.
    pub fn strata(&self, args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new(&self.binary);
        command.args(args).args(["--url", &self.endpoint]);
        if !args.contains(&"--admin-key") {
            command.args(["--admin-key", ROOT_SECRET_KEY]);
        }
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// Runs a `strata` admin command and requires exit status 0.
    pub fn strata_ok(&self, args: &[&str]) -> Result<ToolOutput> {
        self.strata(args)?.expect_success()
    }

    /// Creates `account` if it does not exist yet and a user in it with
    /// `role`, through the CLI, and returns the keys it printed.
    pub fn create_user(&self, account: &str, user: &str, role: &str) -> Result<SwiftUser> {
        let created = self.strata(&["account", "create", account])?;
        if !created.success() && !created.stderr_text().contains("409") {
            bail!("creating account {account}\n{created}");
        }
        let output = self.strata_ok(&["user", "create", account, user, "--role", role])?;
        SwiftUser::from_cli_output(account, user, &output.stdout_text())
            .with_context(|| format!("parsing the keys of {account}:{user}\n{output}"))
    }

    /// A token and storage URL for `who`, from `/auth/v1.0`.
    pub fn swift_token(&self, who: &SwiftUser) -> Result<(String, String)> {
        let response = self.http(
            "GET",
            "/auth/v1.0",
            Signing::Anonymous,
            None,
            &[("X-Auth-User", &who.login()), ("X-Auth-Key", &who.key)],
        )?;
        response.expect_status(200)?;
        let header = |name: &str| {
            response
                .header(name)
                .map(str::to_owned)
                .with_context(|| format!("no {name}\n{response}"))
        };
        Ok((header("x-auth-token")?, header("x-storage-url")?))
    }

    /// Runs an lftp script against the FTP door as `login` (`account:user`)
    /// with `password`; does not check the exit status. lftp gives up after
    /// one try and ten seconds, so a refusal fails fast instead of retrying.
    pub fn lftp(&self, login: &str, password: &str, script: &str) -> Result<ToolOutput> {
        self.lftp_with("", login, password, script)
    }

    /// [`Server::lftp`] with `settings` (`set …; set …`) applied after the
    /// defaults and before `open`, such as `set ftp:ssl-force true` for
    /// FTPS (the defaults keep lftp in plain text).
    pub fn lftp_with(
        &self,
        settings: &str,
        login: &str,
        password: &str,
        script: &str,
    ) -> Result<ToolOutput> {
        let defaults = "set net:max-retries 1; set net:timeout 10; \
                        set net:reconnect-interval-base 1; set ftp:passive-mode on; \
                        set ftp:ssl-allow no; set cmd:fail-exit yes; set xfer:clobber on";
        let settings = if settings.trim().is_empty() {
            defaults.to_owned()
        } else {
            format!("{defaults}; {settings}")
        };
        let open = format!(
            "open -u '{},{}' {}",
            login.replace('\'', ""),
            password.replace('\'', ""),
            self.ftp_endpoint
        );
        let mut command = Command::new("lftp");
        command.args(["-c", &format!("{settings}; {open}; {script}")]);
        command.current_dir(self.scratch.path());
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// [`Server::lftp`] that requires exit status 0.
    pub fn lftp_ok(&self, login: &str, password: &str, script: &str) -> Result<ToolOutput> {
        self.lftp(login, password, script)?.expect_success()
    }

    /// A Swift request as `who`, with a token from `/auth/v1.0` (`path`
    /// starts with `/v1/AUTH_…`).
    pub fn swift_as(
        &self,
        who: &SwiftUser,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        let (token, _) = self.swift_token(who)?;
        let mut all = vec![("X-Auth-Token", token.as_str())];
        all.extend_from_slice(headers);
        self.http(method, path, Signing::Anonymous, body, &all)
    }

    /// [`Server::swift_as`] the root user `admin:admin`.
    pub fn swift_as_root(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        self.swift_as(&SwiftUser::root(), method, path, body, headers)
    }

    /// `curl <args>` with the client environment; does not check the exit
    /// status. Most tests want [`Server::http`] instead.
    pub fn curl(&self, args: &[&str]) -> Result<ToolOutput> {
        let mut command = Command::new("curl");
        command.args(args);
        self.apply_client_env(&mut command);
        run_tool(&mut command, TOOL_TIMEOUT)
    }

    /// The first anonymous GET of `path` that the edge answers from its
    /// cache (`X-Cache: HIT`), within 10 s. A fill keeps its copy only if no
    /// purge or resync came while it read (a gateway just started resyncs
    /// once), and a request in between joins the fill (a MISS).
    pub fn until_hit(&self, path: &str) -> Result<HttpResponse> {
        for _ in 0..100 {
            let response = self.http("GET", path, Signing::Anonymous, None, &[])?;
            response.expect_status(200)?;
            if response.header("x-cache") == Some("HIT") {
                return Ok(response);
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("{path} never became a cache HIT")
    }

    /// Sends one HTTP request with curl and returns status, headers and
    /// body. `path_and_query` is sent byte for byte (`--path-as-is`).
    ///
    /// Signed requests use curl's own `--aws-sigv4`, a third SigV4
    /// implementation next to botocore's and Go's. curl 7.88 neither sorts
    /// query parameters nor appends `=` to bare ones when it signs, so write
    /// queries sorted and as `?delete=`, not `?delete`.
    pub fn http(
        &self,
        method: &str,
        path_and_query: &str,
        signing: Signing,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        static N_REQUESTS: AtomicU64 = AtomicU64::new(0);
        let request_idx = N_REQUESTS.fetch_add(1, Ordering::Relaxed);
        let dir = self.scratch.path().join("curl");
        fs::create_dir_all(&dir)?;
        let body_out = dir.join(format!("response-{request_idx}.body"));
        let headers_out = dir.join(format!("response-{request_idx}.headers"));
        let body_in = dir.join(format!("request-{request_idx}.body"));

        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--path-as-is".into(),
            "--max-time".into(),
            "120".into(),
            // `--head` for HEAD: with `-X HEAD` curl waits for the body that
            // Content-Length announces.
            if method == "HEAD" {
                "--head".into()
            } else {
                "-X".into()
            },
            if method == "HEAD" {
                "-sS".into()
            } else {
                method.into()
            },
            "-o".into(),
            body_out.display().to_string(),
            "-D".into(),
            headers_out.display().to_string(),
            "-w".into(),
            "%{http_code}".into(),
        ];
        let payload = body.unwrap_or_default();
        if let Some(body) = body {
            fs::write(&body_in, body)?;
            args.push("--data-binary".into());
            args.push(format!("@{}", body_in.display()));
        }
        let credentials = match signing {
            Signing::Anonymous => None,
            Signing::Root => Some((ROOT_ACCESS_KEY.to_string(), ROOT_SECRET_KEY.to_string())),
            Signing::Keys {
                access_key,
                secret_key,
            } => Some((access_key, secret_key)),
        };
        if let Some((access_key, secret_key)) = credentials {
            args.push("--aws-sigv4".into());
            args.push(format!("aws:amz:{REGION}:s3"));
            args.push("--user".into());
            args.push(format!("{access_key}:{secret_key}"));
            args.push("-H".into());
            args.push(format!(
                "x-amz-content-sha256: {}",
                crate::fixtures::sha256_hex(payload)
            ));
        }
        for (name, value) in headers {
            args.push("-H".into());
            args.push(format!("{name}: {value}"));
        }
        let has_content_type = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_content_type {
            // curl would send application/x-www-form-urlencoded.
            args.push("-H".into());
            args.push("Content-Type: application/octet-stream".into());
        }
        args.push(format!("{}{path_and_query}", self.endpoint));

        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.curl(&arg_refs)?.expect_success()?;
        let status_text = output.stdout_text();
        let status: u16 = status_text
            .trim()
            .parse()
            .with_context(|| format!("curl printed no status code\n{output}"))?;
        let raw_headers = fs::read(&headers_out).unwrap_or_default();
        let body = fs::read(&body_out).unwrap_or_default();
        Ok(HttpResponse {
            status,
            headers: parse_last_header_block(&String::from_utf8_lossy(&raw_headers)),
            body,
            request: format!("{method} {path_and_query}"),
        })
    }

    fn spawn(&mut self) -> Result<()> {
        self.n_starts += 1;
        self.append_log(&format!("=== harness: start #{} ===", self.n_starts));
        let log_for_stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening the server log")?;
        let log_for_stdout = log_for_stderr.try_clone()?;

        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(&self.listen)
            .arg("--data")
            .arg(self.data_dir.path())
            .arg("--region")
            .arg(REGION)
            .arg("--ftp-listen")
            .arg("127.0.0.1:0")
            .args(&self.extra_args)
            .env("STRATA_ROOT_ACCESS_KEY", ROOT_ACCESS_KEY)
            .env("STRATA_ROOT_SECRET_KEY", ROOT_SECRET_KEY)
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_for_stderr));
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("strata's stdout was not captured")?;
        let (endpoint_tx, endpoint_rx) = mpsc::channel();
        self.child = Some(child);
        self.stdout_pump = Some(thread::spawn(move || {
            pump_stdout(stdout, log_for_stdout, endpoint_tx)
        }));

        let deadline = Instant::now() + READY_TIMEOUT;
        let (endpoint, ftp_endpoint) = match endpoint_rx.recv_timeout(READY_TIMEOUT) {
            Ok(announced) => announced,
            Err(RecvTimeoutError::Timeout) => bail!(
                "strata did not print `listening on http://…` within {READY_TIMEOUT:?}; log tail:\n{}",
                self.log_tail(LOG_TAIL_LINES)
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.as_mut().map(|child| child.wait());
                bail!(
                    "strata closed stdout without printing `listening on http://…` (exit: {status:?}); log tail:\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                )
            }
        };
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u16>().ok())
            .with_context(|| format!("no port in the announced endpoint {endpoint:?}"))?;
        self.endpoint = endpoint;
        self.port = port;
        self.ftp_endpoint = ftp_endpoint.unwrap_or_default();
        self.write_s3cmd_config()?;

        loop {
            let problem = match self.get_status("/health") {
                Ok(200) => return Ok(()),
                Ok(status) => format!("GET /health answered {status}"),
                Err(error) => format!("GET /health failed: {error:#}"),
            };
            if Instant::now() > deadline || !self.is_running() {
                bail!(
                    "strata announced {} but is not healthy: {problem}; log tail:\n{}",
                    self.endpoint,
                    self.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_gracefully(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            let pid = child.id().to_string();
            let term_sent = Command::new("kill")
                .args(["-TERM", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| status.success())
                .unwrap_or(false);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait()? {
                    self.append_log(&format!("=== harness: strata stopped with {status} ==="));
                    break;
                }
                if !term_sent || Instant::now() > deadline {
                    child.kill().context("sending SIGKILL to strata")?;
                    let status = child.wait()?;
                    self.append_log(&format!(
                        "=== harness: strata ignored SIGTERM for {STOP_TIMEOUT:?}, SIGKILLed ({status}) ==="
                    ));
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        self.join_stdout_pump();
        Ok(())
    }

    fn join_stdout_pump(&mut self) {
        if let Some(pump) = self.stdout_pump.take() {
            // The pump ends at EOF, which the dead child guarantees.
            let _ = pump.join();
        }
    }

    fn append_log(&self, line: &str) {
        if let Ok(mut log) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(log, "{line}");
        }
    }

    /// Environment shared by every client: the machine's AWS and proxy
    /// settings are removed so nothing but the test server is reachable and
    /// no local profile changes what a client sends.
    fn apply_client_env(&self, command: &mut Command) {
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy().to_ascii_uppercase();
            let leaks = name_text.starts_with("AWS_")
                || name_text.starts_with("OS_")
                || name_text.starts_with("ST_")
                || name_text.starts_with("STRATA_")
                || name_text.starts_with("BOTO_")
                || name_text.starts_with("RCLONE_")
                || name_text.starts_with("S3CMD")
                || name_text.ends_with("_PROXY");
            if leaks {
                command.env_remove(&name);
            }
        }
        let config_dir = self.scratch.path().join("client-config");
        command
            .env("AWS_ACCESS_KEY_ID", ROOT_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", ROOT_SECRET_KEY)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", config_dir.join("aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                config_dir.join("aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "")
            // One attempt: a retried 500 or reset connection would hide
            // exactly the server bugs these tests exist to find.
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_RETRY_MODE", "standard")
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("STRATA_ENDPOINT", &self.endpoint)
            .env("STRATA_REGION", REGION)
            .stdin(Stdio::null());
    }

    fn write_static_client_configs(&self) -> Result<()> {
        let config_dir = self.scratch.path().join("client-config");
        fs::create_dir_all(&config_dir)?;
        fs::write(
            config_dir.join("aws-config"),
            format!("[default]\nregion = {REGION}\ns3 =\n    addressing_style = path\n"),
        )?;
        // Credentials come from the environment; the file exists only so
        // that ~/.aws/credentials is never read.
        fs::write(config_dir.join("aws-credentials"), "")?;
        fs::write(self.rclone_config_path(), "")?;
        Ok(())
    }

    fn write_s3cmd_config(&self) -> Result<()> {
        let host = format!("127.0.0.1:{}", self.port);
        // `host_bucket` without `%(bucket)s` makes s3cmd use path style.
        // bucket_location us-east-1 makes `mb` send no
        // CreateBucketConfiguration and sign for us-east-1; with s3cmd's
        // default `US` it signs `mb` for a region literally named "US".
        let config = format!(
            "[default]\n\
             access_key = {ROOT_ACCESS_KEY}\n\
             secret_key = {ROOT_SECRET_KEY}\n\
             host_base = {host}\n\
             host_bucket = {host}\n\
             bucket_location = {REGION}\n\
             use_https = False\n\
             signature_v2 = False\n\
             check_ssl_certificate = False\n\
             proxy_host =\n\
             max_retries = 1\n\
             progress_meter = False\n"
        );
        fs::write(self.s3cmd_config_path(), config).context("writing .s3cfg")
    }

    fn s3cmd_config_path(&self) -> PathBuf {
        self.scratch.path().join("client-config").join("s3cfg")
    }

    fn rclone_config_path(&self) -> PathBuf {
        self.scratch
            .path()
            .join("client-config")
            .join("rclone.conf")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stdout_pump();
        // Test runners show this only for failing tests.
        eprintln!(
            "---- strata log tail ({}) ----\n{}\n---- end of strata log ----",
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }
}

/// The value of the series `series` (as written in `/metrics`) in the
/// metrics text `metrics`, read once for several series that must be of
/// one moment.
pub fn metric_in(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<u64>().ok())
}

/// Status code of an unauthenticated `GET path` against `endpoint`
/// (`http://host:port`), spoken over a plain TCP socket.
pub fn http_get_status(endpoint: &str, path: &str) -> Result<u16> {
    let (head, _) = raw_request(endpoint, "GET", path, "Connection: close\r\n")?;
    let status_line = head.first().map(String::as_str).unwrap_or_default();
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("malformed HTTP status line {status_line:?}"))
}

/// Sends `method path` over a new plain TCP connection to `endpoint`
/// (`http://host:port`) with `Host` and the `extra_headers` lines (each
/// ending in CRLF) and no body, and reads the response head: for tests that
/// must see exactly what goes over the wire. Returns the head (see
/// [`read_response_head`]) and the connection, positioned at the body.
pub fn raw_request(
    endpoint: &str,
    method: &str,
    path: &str,
    extra_headers: &str,
) -> Result<(Vec<String>, BufReader<TcpStream>)> {
    let authority = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("endpoint {endpoint:?} is not http://"))?;
    let address = authority
        .to_socket_addrs()?
        .next()
        .with_context(|| format!("{authority} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let head = read_response_head(&mut reader)?;
    Ok((head, reader))
}

/// Reads one HTTP/1 response head from `reader`: the status line, then the
/// headers, each lower-cased and without its line end. For tests that speak
/// raw HTTP to see exactly what goes over the wire.
pub fn read_response_head(reader: &mut impl BufRead) -> Result<Vec<String>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        ensure!(
            reader.read_line(&mut line)? > 0,
            "connection closed in the response head: {head:?}"
        );
        if line == "\r\n" {
            return Ok(head);
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
}

/// Copies the server's stdout into the log and reports the endpoint from the
/// first `listening on http://…` line, with the FTP door's `listening on
/// ftp://…` if it was announced before it.
fn pump_stdout(stdout: ChildStdout, mut log: File, endpoint_tx: Sender<(String, Option<String>)>) {
    let mut reader = BufReader::new(stdout);
    let mut announced = false;
    let mut ftp = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let _ = log.write_all(&line);
        if !announced {
            let text = strip_ansi(&String::from_utf8_lossy(&line));
            match parse_listening_line(&text) {
                Some(url) if url.starts_with("ftp://") => ftp = Some(url),
                Some(url) => {
                    announced = true;
                    let _ = endpoint_tx.send((url, ftp.take()));
                }
                None => {}
            }
        }
    }
}

/// The `http://` or `ftp://` URL of a `listening on …` line.
fn parse_listening_line(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let url: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '.' | '[' | ']'))
        .collect();
    let url = url.trim_end_matches(['/', '.']).to_string();
    (url.starts_with("http://") || url.starts_with("ftp://")).then_some(url)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_last_header_block(raw: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for line in raw.lines() {
        if line.starts_with("HTTP/") {
            // A new response (after `100 Continue`) starts a new block.
            headers.clear();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    headers
}

fn python_scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

/// Locates the `strata` binary: `STRATA_BIN` if set, otherwise
/// `target/<profile>/strata` next to the running test executable
/// (`target/<profile>/deps/e2e-…`), rebuilt once per test process.
///
/// The rebuild is needed because `cargo test --workspace` (and nextest) build
/// a bin target only for the integration tests of its own package, so
/// `target/<profile>/strata` may be missing or, worse, stale. CI sets
/// `STRATA_BIN` after an explicit `cargo build --bin strata`.
pub(crate) fn strata_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_or_build_strata().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|message| anyhow!(message))
}

fn locate_or_build_strata() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STRATA_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("STRATA_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let test_exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = test_exe
        .parent()
        .filter(|deps| deps.file_name() == Some(OsStr::new("deps")))
        .and_then(Path::parent)
        .with_context(|| {
            format!(
                "{} is not in target/<profile>/deps; set STRATA_BIN",
                test_exe.display()
            )
        })?;
    let target_dir = profile_dir
        .parent()
        .context("the profile directory has no parent")?;
    let binary = profile_dir.join(format!("strata{}", std::env::consts::EXE_SUFFIX));

    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "strata-gateway",
            "--bin",
            "strata",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
        None => bail!("unreadable profile directory {}", profile_dir.display()),
    }
    let build_result = run_tool(&mut build, Duration::from_secs(1800));
    match build_result {
        Ok(output) if output.success() => {}
        Ok(output) => bail!("building the strata binary failed\n{output}"),
        Err(error) if binary.is_file() => {
            eprintln!(
                "warning: could not run cargo to refresh {} ({error:#}); using it as is",
                binary.display()
            );
        }
        Err(error) => return Err(error.context("building the strata binary (or set STRATA_BIN)")),
    }
    if !binary.is_file() {
        bail!(
            "cargo built strata but {} does not exist; set STRATA_BIN",
            binary.display()
        );
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<&str>) {
        assert_eq!(
            parse_listening_line(&strip_ansi(line)).as_deref(),
            expected,
            "{line:?}"
        );
    }

    #[test]
    fn listening_line() {
        check(
            "listening on http://127.0.0.1:43123",
            Some("http://127.0.0.1:43123"),
        );
        check(
            "2026-01-01T00:00:00Z  INFO strata: listening on http://127.0.0.1:80/ (s3)",
            Some("http://127.0.0.1:80"),
        );
        check(
            "\u{1b}[32m INFO\u{1b}[0m listening on \u{1b}[1mhttp://127.0.0.1:9\u{1b}[0m",
            Some("http://127.0.0.1:9"),
        );
        check(
            "ftp listening on ftp://127.0.0.1:2121",
            Some("ftp://127.0.0.1:2121"),
        );
        check("starting strata", None);
        check("listening on unix:/tmp/sock", None);
    }

    #[test]
    fn last_header_block_wins() {
        let headers = parse_last_header_block(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nX-Amz-Request-Id: abc\r\nContent-Type: application/xml\r\n\r\n",
        );
        assert_eq!(
            headers,
            vec![
                ("x-amz-request-id".to_string(), "abc".to_string()),
                ("content-type".to_string(), "application/xml".to_string())
            ]
        );
    }
}
