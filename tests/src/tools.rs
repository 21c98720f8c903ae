//! Running external clients and judging what they did.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Most of a tool's output shown in a failure message; S3 XML errors and
/// Python tracebacks fit, 20 MiB of binary does not.
const SHOWN_OUTPUT_BYTES: usize = 8 * 1024;

/// The captured result of one external command.
pub struct ToolOutput {
    /// The command line, for failure messages.
    pub command_line: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ToolOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Fails, showing the whole exchange, unless the exit status is 0.
    pub fn expect_success(self) -> Result<ToolOutput> {
        if !self.success() {
            bail!("command failed\n{self}");
        }
        Ok(self)
    }

    /// Fails, showing the whole exchange, if the exit status is 0.
    pub fn expect_failure(self) -> Result<ToolOutput> {
        if self.success() {
            bail!("command succeeded but was expected to fail\n{self}");
        }
        Ok(self)
    }

    /// Stdout parsed as JSON; `Value::Null` for empty output, which is what
    /// the aws CLI prints for operations with an empty response.
    pub fn json(&self) -> Result<serde_json::Value> {
        let text = self.stdout_text();
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("stdout is not JSON\n{self}"))
    }
}

impl fmt::Display for ToolOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command_line)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "stdout:\n{}", shown(&self.stdout))?;
        write!(f, "stderr:\n{}", shown(&self.stderr))
    }
}

impl fmt::Debug for ToolOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs `command` to completion with stdout and stderr captured, killing it
/// after `timeout`. A program that is not installed is an error naming it:
/// the suite fails rather than skips when a client is missing.
pub fn run_tool(command: &mut Command, timeout: Duration) -> Result<ToolOutput> {
    let command_line = format!("{command:?}");
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) if error.kind() == ErrorKind::NotFound => bail!(
            "`{program}` is not installed or not on PATH. The end-to-end suite needs aws \
             (aws-cli), python3 with boto3, s3cmd, rclone and curl; CI installs them all. \
             ({command_line})"
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("spawning {command_line}"));
        }
    };
    let mut stdout = child.stdout.take().context("stdout not captured")?;
    let mut stderr = child.stderr.take().context("stderr not captured")?;
    let stdout_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });

    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let output = ToolOutput {
        command_line,
        status,
        stdout: stdout_reader.join().unwrap_or_default(),
        stderr: stderr_reader.join().unwrap_or_default(),
    };
    if timed_out {
        bail!("command timed out after {timeout:?} and was killed\n{output}");
    }
    Ok(output)
}

/// How [`crate::Server::http`] signs a request.
pub enum Signing {
    /// No `Authorization` header at all.
    Anonymous,
    /// SigV4 with the server's root credentials.
    Root,
    /// SigV4 with these credentials (wrong ones, usually).
    Keys {
        access_key: String,
        secret_key: String,
    },
}

/// One HTTP response as curl received it.
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-cased, in order, from the final response only.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `METHOD path`, for failure messages.
    pub request: String,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Text of the first `<tag>…</tag>` element in the body.
    pub fn xml_element(&self, tag: &str) -> Option<String> {
        let body = self.body_text();
        let open = format!("<{tag}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find(&format!("</{tag}>"))?;
        Some(body[start..end].to_string())
    }

    /// Fails unless the status is `status`.
    pub fn expect_status(&self, status: u16) -> Result<&HttpResponse> {
        if self.status != status {
            bail!("expected HTTP {status}\n{self}");
        }
        Ok(self)
    }

    /// Fails unless this is an S3 error response with `status` and `code`:
    /// an XML `<Error>` carrying `Code`, `Message` and `RequestId`, and an
    /// `x-amz-request-id` header.
    pub fn expect_s3_error(&self, status: u16, code: &str) -> Result<&HttpResponse> {
        self.expect_status(status)?;
        self.expect_s3_error_shape()?;
        if self.xml_element("Code").as_deref() != Some(code) {
            bail!("expected S3 error code {code}\n{self}");
        }
        Ok(self)
    }

    /// Fails unless the body is an S3 XML error with the request-id header,
    /// whatever its code.
    pub fn expect_s3_error_shape(&self) -> Result<&HttpResponse> {
        let body = self.body_text();
        if !body.contains("<Error>") {
            bail!("expected an S3 XML <Error> body\n{self}");
        }
        for tag in ["Code", "Message", "RequestId"] {
            if self.xml_element(tag).is_none() {
                bail!("S3 error body has no <{tag}>\n{self}");
            }
        }
        match self.header("x-amz-request-id") {
            Some(id) if !id.is_empty() => Ok(self),
            _ => bail!("S3 error response has no x-amz-request-id header\n{self}"),
        }
    }
}

impl fmt::Display for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "request: {}", self.request)?;
        writeln!(f, "status: {}", self.status)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        write!(f, "body:\n{}", shown(&self.body))
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn shown(bytes: &[u8]) -> String {
    if bytes.len() <= SHOWN_OUTPUT_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let head = &bytes[..SHOWN_OUTPUT_BYTES / 2];
    let tail = &bytes[bytes.len() - SHOWN_OUTPUT_BYTES / 2..];
    format!(
        "{}\n[… {} bytes elided …]\n{}",
        String::from_utf8_lossy(head),
        bytes.len() - SHOWN_OUTPUT_BYTES,
        String::from_utf8_lossy(tail)
    )
}

/// The string at JSON pointer `pointer` (`/Owner/ID`) of an aws CLI answer.
pub fn json_str<'a>(value: &'a serde_json::Value, pointer: &str) -> Result<&'a str> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("no string at {pointer} in {value:#}"))
}

/// The integer at JSON pointer `pointer` of an aws CLI answer.
pub fn json_u64(value: &serde_json::Value, pointer: &str) -> Result<u64> {
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("no integer at {pointer} in {value:#}"))
}

/// `Contents[].Key` of a ListObjects(V2) answer, in order (empty when the
/// answer has no `Contents`, as S3 omits it for empty pages).
pub fn listed_keys(listing: &serde_json::Value) -> Vec<String> {
    listed_strings(listing, "Contents", "Key")
}

/// `CommonPrefixes[].Prefix` of a listing answer, in order.
pub fn listed_prefixes(listing: &serde_json::Value) -> Vec<String> {
    listed_strings(listing, "CommonPrefixes", "Prefix")
}

fn listed_strings(listing: &serde_json::Value, array: &str, field: &str) -> Vec<String> {
    listing
        .get(array)
        .and_then(serde_json::Value::as_array)
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry.get(field).and_then(serde_json::Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A child process (a load generator, a reader) killed if the test ends
/// before it exits.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
