//! The Swift API as the mount uses it: a v1.0 login (repeated when the token
//! expires), listings with a delimiter, ranged reads, streamed uploads from a
//! spool file (segmented into a Static Large Object when large), server-side
//! copies, deletes and directory markers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::{self, Seek as _, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LAST_MODIFIED, RANGE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio_util::io::ReaderStream;

/// What a directory marker object (`a/b/`) is stored as; the FTP door uses
/// the same type.
pub const DIRECTORY_MARKER_TYPE: &str = "application/x-directory";

/// Bytes unreserved in a path segment; `/` is kept in object names.
const OBJECT_NAME: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Entries asked for per listing request.
const LISTING_PAGE: usize = 1000;
/// Read buffer of an upload's body stream.
const UPLOAD_CHUNK: usize = 256 * 1024;

type UploadBody = BoxBody<Bytes, io::Error>;

/// Connections to the gateway, plain or TLS as its URLs say.
type Http = Client<HttpsConnector<HttpConnector>, UploadBody>;

/// An HTTP client that speaks TLS to `https://` URLs, trusting the system's
/// CAs (as curl does) and those in `ca_file` (a PEM file), and plain HTTP
/// to `http://` ones. Also the client of the admin commands.
pub fn http_client<B>(
    ca_file: Option<&Path>,
) -> anyhow::Result<Client<HttpsConnector<HttpConnector>, B>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the system holds that rustls cannot use are left out,
    // as curl leaves them out.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading CA certificates from {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "{}: no PEM certificate", path.display());
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("{}: not a CA certificate", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// An error with its causes, which name what failed in a TLS handshake
/// (hyper's own message says only that connecting failed).
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{method} {path}: {status}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
    },
    #[error("{0}")]
    Transport(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// One entry of a listing, with its full name (a container, an object, or a
/// `prefix/` the delimiter rolled up).
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub rolled_up: bool,
    pub size: u64,
    pub modified: SystemTime,
}

/// The head of one object.
#[derive(Debug, Clone)]
pub struct ObjectHead {
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireEntry {
    Subdir {
        subdir: String,
    },
    Object {
        name: String,
        #[serde(default)]
        bytes: u64,
        #[serde(default)]
        last_modified: String,
    },
}

struct Session {
    storage_url: String,
    token: String,
}

pub struct SwiftClient {
    base: String,
    login: String,
    key: String,
    session: RwLock<Session>,
    http: Http,
}

impl SwiftClient {
    /// Logs in at `base/auth/v1.0` (`base` is `http://host:port` or
    /// `https://…`) as `account:user` with its Swift key, trusting the
    /// system's CAs and those in `ca_file` over TLS.
    pub async fn connect(
        base: &str,
        login: &str,
        key: &str,
        ca_file: Option<&Path>,
    ) -> anyhow::Result<SwiftClient> {
        let http = http_client(ca_file)?;
        let base = base.trim_end_matches('/').to_owned();
        let session = authenticate(&http, &base, login, key).await?;
        Ok(SwiftClient {
            base,
            login: login.to_owned(),
            key: key.to_owned(),
            session: RwLock::new(session),
            http,
        })
    }

    /// The largest object the server takes (`swift.max_file_size` of its
    /// `/info`), if it says.
    pub async fn largest_object(&self) -> Option<u64> {
        let request = Request::get(format!("{}/info", self.base))
            .body(empty_body())
            .ok()?;
        let response = self.http.request(request).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = response.into_body().collect().await.ok()?.to_bytes();
        let info: serde_json::Value = serde_json::from_slice(&body).ok()?;
        info["swift"]["max_file_size"].as_u64()
    }

    /// Sends `method` to `path` (relative to the storage URL, encoded) and
    /// logs in again once if the token has expired.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &dyn Fn() -> io::Result<UploadBody>,
    ) -> ClientResult<Response<Incoming>> {
        for attempt in 0..2 {
            let (url, token) = {
                let session = self.session.read();
                (
                    format!("{}{path}", session.storage_url),
                    session.token.clone(),
                )
            };
            let mut request = Request::builder()
                .method(method.clone())
                .uri(&url)
                .header("x-auth-token", token);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            let request = request
                .body(body()?)
                .map_err(|err| ClientError::Transport(format!("{method} {path}: {err}")))?;
            let response = self
                .http
                .request(request)
                .await
                .map_err(|err| ClientError::Transport(format!("{method} {path}: {err}")))?;
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let session = authenticate(&self.http, &self.base, &self.login, &self.key)
                    .await
                    .map_err(|err| ClientError::Transport(format!("{err:#}")))?;
                *self.session.write() = session;
                continue;
            }
            return Ok(response);
        }
        Err(ClientError::Status {
            method,
            path: path.to_owned(),
            status: StatusCode::UNAUTHORIZED,
        })
    }

    /// Sends a request without a body and checks its status is a success.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> ClientResult<Response<Incoming>> {
        let response = self
            .send(method.clone(), path, headers, &|| Ok(empty_body()))
            .await?;
        expect_success(method, path, response)
    }

    /// Lists the account's containers (`container` None) or a container's
    /// objects under `prefix`, rolled up at `/` when `delimited`. Stops after
    /// `max` entries; the flag says whether the listing is complete.
    pub async fn list(
        &self,
        container: Option<&str>,
        prefix: &str,
        delimited: bool,
        max: usize,
    ) -> ClientResult<(Vec<Listed>, bool)> {
        let base = match container {
            Some(container) => container_path(container),
            None => String::new(),
        };
        let mut listed: Vec<Listed> = Vec::new();
        let mut marker = String::new();
        loop {
            let page = LISTING_PAGE.min(max.saturating_sub(listed.len()).saturating_add(1));
            let mut path = format!("{base}?format=json&limit={page}");
            for (name, value) in [("prefix", prefix), ("marker", marker.as_str())] {
                if !value.is_empty() {
                    path.push_str(&format!("&{name}={}", utf8_percent_encode(value, SEGMENT)));
                }
            }
            if delimited {
                path.push_str("&delimiter=%2F");
            }
            let response = self.call(Method::GET, &path, &[]).await?;
            if response.status() == StatusCode::NO_CONTENT {
                return Ok((listed, true));
            }
            let body = collect(&path, response).await?;
            let entries: Vec<WireEntry> = serde_json::from_slice(&body).map_err(|err| {
                ClientError::Transport(format!("GET {path}: unreadable listing: {err}"))
            })?;
            let Some(last) = entries.last() else {
                return Ok((listed, true));
            };
            marker = match last {
                WireEntry::Subdir { subdir } => subdir.clone(),
                WireEntry::Object { name, .. } => name.clone(),
            };
            for entry in entries {
                if listed.len() == max {
                    return Ok((listed, false));
                }
                listed.push(match entry {
                    WireEntry::Subdir { subdir } => Listed {
                        name: subdir,
                        rolled_up: true,
                        size: 0,
                        modified: SystemTime::UNIX_EPOCH,
                    },
                    WireEntry::Object {
                        name,
                        bytes,
                        last_modified,
                    } => Listed {
                        name,
                        rolled_up: false,
                        size: bytes,
                        modified: parse_listing_time(&last_modified),
                    },
                });
            }
        }
    }

    /// Swift lists a Dynamic Large Object by its manifest, whose own size
    /// is 0; its HEAD gives the assembled size. As rclone does, every empty
    /// file of a listing is asked (a few at a time).
    pub async fn resolve_empty_sizes(&self, container: &str, listed: &mut [Listed]) {
        let empty: Vec<(usize, String)> = listed
            .iter()
            .enumerate()
            .filter(|(_, entry)| !entry.rolled_up && entry.size == 0 && !entry.name.ends_with('/'))
            .map(|(index, entry)| (index, entry.name.clone()))
            .collect();
        // Scoped: `StreamExt::boxed` would shadow `BodyExt::boxed` file-wide.
        use futures::StreamExt as _;
        let heads: Vec<(usize, ClientResult<Option<ObjectHead>>)> = futures::stream::iter(empty)
            .map(|(index, name)| async move { (index, self.head_object(container, &name).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        for (index, head) in heads {
            match head {
                Ok(Some(head)) => listed[index].size = head.size,
                Ok(None) => {}
                // One unreadable file (a DLO whose segments are gone) keeps
                // its listed size; the folder still lists.
                Err(err) => {
                    tracing::debug!(name = %listed[index].name, error = %err, "no size by HEAD");
                }
            }
        }
    }

    /// HEAD of an object; None when it does not exist.
    pub async fn head_object(
        &self,
        container: &str,
        key: &str,
    ) -> ClientResult<Option<ObjectHead>> {
        let path = object_path(container, key);
        let response = self
            .send(Method::HEAD, &path, &[], &|| Ok(empty_body()))
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = expect_success(Method::HEAD, &path, response)?;
        let headers = response.headers();
        let size = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let modified = headers
            .get(LAST_MODIFIED)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| chrono::DateTime::parse_from_rfc2822(value).ok())
            .map(SystemTime::from)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Some(ObjectHead { size, modified }))
    }

    /// Whether the container exists (and this user may see it).
    pub async fn container_exists(&self, container: &str) -> ClientResult<bool> {
        let path = container_path(container);
        let response = self
            .send(Method::HEAD, &path, &[], &|| Ok(empty_body()))
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            _ => expect_success(Method::HEAD, &path, response).map(|_| true),
        }
    }

    /// `len` bytes from `offset` (fewer at the end of the object), and the
    /// ETag of the version they are of, when the server says.
    pub async fn read_range(
        &self,
        container: &str,
        key: &str,
        offset: u64,
        len: u64,
    ) -> ClientResult<(Bytes, Option<String>)> {
        if len == 0 {
            return Ok((Bytes::new(), None));
        }
        let path = object_path(container, key);
        let range = format!("bytes={offset}-{}", offset + len - 1);
        let response = self
            .send(Method::GET, &path, &[(RANGE.as_str(), range)], &|| {
                Ok(empty_body())
            })
            .await?;
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match response.status() {
            StatusCode::RANGE_NOT_SATISFIABLE => Ok((Bytes::new(), None)),
            StatusCode::PARTIAL_CONTENT => Ok((collect(&path, response).await?, etag)),
            // A server that ignores Range sends the whole object.
            StatusCode::OK => {
                let whole = collect(&path, response).await?;
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(whole.len());
                let end = start.saturating_add(len as usize).min(whole.len());
                Ok((whole.slice(start..end), etag))
            }
            _ => expect_success(Method::GET, &path, response).map(|_| (Bytes::new(), None)),
        }
    }

    /// Streams the whole object into `file` (truncated first); returns its
    /// size.
    pub async fn download(
        &self,
        container: &str,
        key: &str,
        file: &std::fs::File,
    ) -> ClientResult<u64> {
        let path = object_path(container, key);
        let response = self.call(Method::GET, &path, &[]).await?;
        let mut out = tokio::fs::File::from_std(file.try_clone()?);
        out.set_len(0).await?;
        out.seek(SeekFrom::Start(0)).await?;
        let mut body = response.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|err| ClientError::Transport(format!("GET {path}: {err}")))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await?;
                written += data.len() as u64;
            }
        }
        out.flush().await?;
        Ok(written)
    }

    /// Uploads the first `size` bytes of `spool` as `container/key`: one PUT,
    /// or segments plus a Static Large Object manifest when it is larger
    /// than `segment_size`. When `replaces` (something may be stored there
    /// already), the segments of the large object it replaces are deleted
    /// once the new one is in place, as `swift upload` does.
    pub async fn upload(
        &self,
        container: &str,
        key: &str,
        (spool, size): (&std::fs::File, u64),
        segment_size: u64,
        replaces: bool,
    ) -> ClientResult<()> {
        let replaced = match replaces {
            true => self.replaced_segments(container, key).await,
            false => Vec::new(),
        };
        self.put_file(container, key, spool, size, segment_size)
            .await?;
        self.delete_segments(replaced).await;
        Ok(())
    }

    /// [`SwiftClient::own_segments`], for a write about to replace the
    /// object: a failure to read them leaves them, and does not stop the
    /// write.
    async fn replaced_segments(&self, container: &str, key: &str) -> Vec<UploadSegment> {
        self.own_segments(container, key)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(container, key, error = %err, "the segments of a replaced object are left");
                Vec::new()
            })
    }

    /// Deletes segments of an object replaced since, but those that the
    /// object they were uploaded for still lists: shared with it (a move
    /// cut short between its copy and its source's deletion, a manifest
    /// copied by hand), they are still its bytes. The new object is in
    /// place: a segment left is only space, and is logged.
    async fn delete_segments(&self, segments: Vec<UploadSegment>) {
        let mut still_listed: HashMap<(String, String), Option<HashSet<String>>> = HashMap::new();
        for segment in segments {
            let listed = match still_listed.entry(segment.origin.clone()) {
                Entry::Occupied(listed) => listed.into_mut(),
                Entry::Vacant(unread) => {
                    let (container, key) = unread.key();
                    let names = match self.manifest_names(container, key).await {
                        Ok(names) => Some(names.into_iter().collect()),
                        Err(err) => {
                            tracing::warn!(container, key, error = %err, "the segments uploaded for an object that could not be read are left");
                            None
                        }
                    };
                    unread.insert(names)
                }
            };
            // Unread (kept, to be safe) or still listed by its object.
            let still_used = listed
                .as_ref()
                .is_none_or(|names| names.contains(&segment.name));
            if still_used {
                continue;
            }
            let path = object_path(&segment.container, &segment.object);
            match self.call(Method::DELETE, &path, &[]).await {
                Ok(_) => {}
                Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {}
                Err(err) => {
                    tracing::warn!(segment = %path, error = %err, "a replaced segment was not deleted")
                }
            }
        }
    }

    /// The segments of the Static Large Object at `container/key` that an
    /// upload made ([`upload_segment`]), wherever the file was uploaded
    /// first: a moved file keeps its segments under its old name. Others,
    /// a manifest's own choice, may be shared with other manifests. None
    /// when there is no such object there.
    async fn own_segments(&self, container: &str, key: &str) -> ClientResult<Vec<UploadSegment>> {
        let names = self.manifest_names(container, key).await?;
        Ok(names
            .into_iter()
            .filter_map(|name| upload_segment(&name))
            .collect())
    }

    /// The segments the Static Large Object at `container/key` lists, as
    /// its manifest names them (`/container/object`); none when there is
    /// no such object there.
    async fn manifest_names(&self, container: &str, key: &str) -> ClientResult<Vec<String>> {
        if !self.is_static_large_object(container, key).await? {
            return Ok(Vec::new());
        }
        let path = object_path(container, key);
        let manifest_path = format!("{path}?multipart-manifest=get");
        let response = self.call(Method::GET, &manifest_path, &[]).await?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| ClientError::Transport(format!("GET {manifest_path}: {err}")))?
            .to_bytes();
        let manifest: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
        Ok(manifest
            .iter()
            .filter_map(|segment| Some(segment["name"].as_str()?.to_owned()))
            .collect())
    }

    /// [`SwiftClient::upload`]'s PUTs.
    async fn put_file(
        &self,
        container: &str,
        key: &str,
        spool: &std::fs::File,
        size: u64,
        segment_size: u64,
    ) -> ClientResult<()> {
        let path = object_path(container, key);
        if size <= segment_size {
            self.put_region(&path, spool, 0, size).await?;
            return Ok(());
        }
        // Segments live where python-swiftclient puts them, so Swift tools
        // recognise them: `<container>_segments/<key>/<time>/<size>/<segment size>/<n>`.
        let segments_container = format!("{container}_segments");
        self.put_container(&segments_container).await?;
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let mut manifest = Vec::new();
        let mut offset = 0u64;
        let mut index = 0u32;
        while offset < size {
            let len = segment_size.min(size - offset);
            let name = format!("{key}/{stamp:.6}/{size}/{segment_size}/{index:08}");
            let etag = self
                .put_region(&object_path(&segments_container, &name), spool, offset, len)
                .await?;
            manifest.push(serde_json::json!({
                "path": format!("/{segments_container}/{name}"),
                "etag": etag,
                "size_bytes": len,
            }));
            offset += len;
            index += 1;
        }
        let manifest = Bytes::from(serde_json::Value::Array(manifest).to_string());
        let manifest_path = format!("{path}?multipart-manifest=put");
        let response = self
            .send(
                Method::PUT,
                &manifest_path,
                &[(CONTENT_LENGTH.as_str(), manifest.len().to_string())],
                &|| Ok(full_body(manifest.clone())),
            )
            .await?;
        expect_success(Method::PUT, &manifest_path, response).map(drop)
    }

    /// PUTs `len` bytes of `spool` from `offset` at `path`; returns the ETag.
    async fn put_region(
        &self,
        path: &str,
        spool: &std::fs::File,
        offset: u64,
        len: u64,
    ) -> ClientResult<String> {
        let body = || -> io::Result<UploadBody> {
            let mut file = spool.try_clone()?;
            file.seek(SeekFrom::Start(offset))?;
            let reader = tokio::fs::File::from_std(file).take(len);
            let frames = ReaderStream::with_capacity(reader, UPLOAD_CHUNK).map_ok(Frame::data);
            Ok(StreamBody::new(frames).boxed())
        };
        let response = self
            .send(
                Method::PUT,
                path,
                &[(CONTENT_LENGTH.as_str(), len.to_string())],
                &body,
            )
            .await?;
        let response = expect_success(Method::PUT, path, response)?;
        Ok(response
            .headers()
            .get(ETAG)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned())
    }

    /// Whether `container/key` is a Static Large Object (false when there
    /// is no such object). A failed HEAD is an error, not a plain object.
    async fn is_static_large_object(&self, container: &str, key: &str) -> ClientResult<bool> {
        let path = object_path(container, key);
        let head = self
            .send(Method::HEAD, &path, &[], &|| Ok(empty_body()))
            .await?;
        if head.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        let head = expect_success(Method::HEAD, &path, head)?;
        Ok(head
            .headers()
            .get("x-static-large-object")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.eq_ignore_ascii_case("true")))
    }

    /// Moves an object: a server-side copy, then the source's deletion; the
    /// segments of a large object the copy replaces are deleted, as an
    /// upload's. A Static Large Object moves as its manifest, its segments
    /// staying where they are: copied assembled, it could pass the
    /// server's largest object (413), and the source's deletion would take
    /// the segments the copy is made of.
    pub async fn rename(&self, from: (&str, &str), to: (&str, &str)) -> ClientResult<()> {
        let large = self.is_static_large_object(from.0, from.1).await?;
        let source = format!("/{}", object_path(from.0, from.1));
        let replaced = self.replaced_segments(to.0, to.1).await;
        let destination = match large {
            true => format!("{}?multipart-manifest=get", object_path(to.0, to.1)),
            false => object_path(to.0, to.1),
        };
        self.call(
            Method::PUT,
            &destination,
            &[
                ("x-copy-from", source),
                (CONTENT_LENGTH.as_str(), "0".to_owned()),
            ],
        )
        .await?;
        self.delete_segments(replaced).await;
        match large {
            true => self
                .call(Method::DELETE, &object_path(from.0, from.1), &[])
                .await
                .map(drop),
            false => self.delete_object(from.0, from.1).await,
        }
    }

    /// Deletes an object, and its segments when it is a Static Large Object.
    pub async fn delete_object(&self, container: &str, key: &str) -> ClientResult<()> {
        let path = format!("{}?multipart-manifest=delete", object_path(container, key));
        self.call(Method::DELETE, &path, &[]).await.map(drop)
    }

    /// Creates a container; false when it already existed.
    pub async fn put_container(&self, container: &str) -> ClientResult<bool> {
        let response = self
            .call(Method::PUT, &container_path(container), &[])
            .await?;
        Ok(response.status() == StatusCode::CREATED)
    }

    /// Deletes an empty container (409 when it is not).
    pub async fn delete_container(&self, container: &str) -> ClientResult<()> {
        self.call(Method::DELETE, &container_path(container), &[])
            .await
            .map(drop)
    }

    /// Stores the empty object `prefix` (ending in `/`) that makes an empty
    /// directory visible.
    pub async fn put_directory_marker(&self, container: &str, prefix: &str) -> ClientResult<()> {
        self.call(
            Method::PUT,
            &object_path(container, prefix),
            &[
                (CONTENT_TYPE.as_str(), DIRECTORY_MARKER_TYPE.to_owned()),
                (CONTENT_LENGTH.as_str(), "0".to_owned()),
            ],
        )
        .await
        .map(drop)
    }
}

async fn authenticate(http: &Http, base: &str, login: &str, key: &str) -> anyhow::Result<Session> {
    let request = Request::get(format!("{base}/auth/v1.0"))
        .header("x-auth-user", login)
        .header("x-auth-key", key)
        .body(empty_body())?;
    let response = http
        .request(request)
        .await
        .map_err(|err| anyhow::anyhow!("connecting to {base}: {}", with_causes(&err)))?;
    if response.status() != StatusCode::OK {
        anyhow::bail!("logging in as {login} at {base}: {}", response.status());
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the login answer has no {name}"))
    };
    let storage_url = header("x-storage-url")?.trim_end_matches('/').to_owned();
    // The token must not leave a TLS login in plain text.
    if base.starts_with("https://") && !storage_url.starts_with("https://") {
        anyhow::bail!(
            "logging in over HTTPS at {base}, the gateway hands out the storage URL \
             {storage_url}: the token would travel in plain text (is its public_url http://?)"
        );
    }
    Ok(Session {
        storage_url,
        token: header("x-auth-token")?,
    })
}

fn expect_success(
    method: Method,
    path: &str,
    response: Response<Incoming>,
) -> ClientResult<Response<Incoming>> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(ClientError::Status {
            method,
            path: path.to_owned(),
            status: response.status(),
        })
    }
}

async fn collect(path: &str, response: Response<Incoming>) -> ClientResult<Bytes> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|err| ClientError::Transport(format!("{path}: {err}")))?
        .to_bytes())
}

fn empty_body() -> UploadBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full_body(bytes: Bytes) -> UploadBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn container_path(container: &str) -> String {
    format!("/{}", utf8_percent_encode(container, SEGMENT))
}

fn object_path(container: &str, key: &str) -> String {
    format!(
        "/{}/{}",
        utf8_percent_encode(container, SEGMENT),
        utf8_percent_encode(key, OBJECT_NAME)
    )
}

/// A segment an upload made for its manifest ([`upload_segment`]).
#[derive(Debug, PartialEq)]
struct UploadSegment {
    /// As manifests list it: `/container/object`.
    name: String,
    container: String,
    object: String,
    /// The container and key it was uploaded for.
    origin: (String, String),
}

/// The segment a manifest names `name` (`/container/object`, as
/// `?multipart-manifest=get` lists it) when an upload made it for its
/// manifest: in a `<container>_segments` container, named
/// `<key>/<time>/<size>/<segment size>/<n>`, as this client and
/// python-swiftclient name them (`<key>/slo/…` for the latter's SLOs). The
/// key need not be the manifest's: a rename moves a manifest and leaves its
/// segments where they are.
fn upload_segment(name: &str) -> Option<UploadSegment> {
    let (container, object) = name.strip_prefix('/')?.split_once('/')?;
    let origin_container = container.strip_suffix("_segments")?;
    let mut fields = object.rsplitn(5, '/');
    let digits = |field: &str| !field.is_empty() && field.bytes().all(|byte| byte.is_ascii_digit());
    let index = fields.next()?;
    let (segment_size, size) = (fields.next()?, fields.next()?);
    let stamp = fields.next()?;
    let key = fields.next()?;
    let key = key.strip_suffix("/slo").unwrap_or(key);
    let named = index.len() == 8
        && digits(index)
        && digits(segment_size)
        && digits(size)
        && stamp.parse::<f64>().is_ok_and(f64::is_finite)
        && !key.is_empty()
        && !origin_container.is_empty();
    named.then(|| UploadSegment {
        name: name.to_owned(),
        container: container.to_owned(),
        object: object.to_owned(),
        origin: (origin_container.to_owned(), key.to_owned()),
    })
}

/// Listings' `2026-12-02T15:06:48.123000` (UTC).
fn parse_listing_time(text: &str) -> SystemTime {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|time| SystemTime::from(time.and_utc()))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_slashes_in_object_names_only() {
        assert_eq!(object_path("a b", "x/y z.txt"), "/a%20b/x/y%20z.txt");
        assert_eq!(container_path("c/d"), "/c%2Fd");
        assert_eq!(object_path("c", "ü?#"), "/c/%C3%BC%3F%23");
    }

    #[test]
    fn segments_an_upload_made_are_told_from_others() {
        let made = "/c_segments/dir/big.bin/1764688008.123456/3145728/1048576/00000002";
        assert_eq!(
            upload_segment(made),
            Some(UploadSegment {
                name: made.to_owned(),
                container: "c_segments".to_owned(),
                object: "dir/big.bin/1764688008.123456/3145728/1048576/00000002".to_owned(),
                origin: ("c".to_owned(), "dir/big.bin".to_owned()),
            })
        );
        // python-swiftclient's SLO segments: uploaded for `big.bin`.
        let swiftclient = "/c_segments/big.bin/slo/1764688008.123456/3145728/1048576/00000000";
        let origin = upload_segment(swiftclient).map(|segment| segment.origin);
        assert_eq!(origin, Some(("c".to_owned(), "big.bin".to_owned())));
        for other in [
            // Not in a segments container.
            "/c/dir/big.bin/1764688008.123456/3145728/1048576/00000002",
            "/_segments/big.bin/1764688008.123456/3145728/1048576/00000002",
            // Not an upload's name: no key, a short index, a stamp that
            // is not a time, sizes that are not numbers.
            "/c_segments/1764688008.123456/3145728/1048576/00000002",
            "/c_segments/big.bin/1764688008.123456/3145728/1048576/2",
            "/c_segments/big.bin/yesterday/3145728/1048576/00000002",
            "/c_segments/big.bin/1764688008.1/3 MiB/1048576/00000002",
            "/c_segments/part-1",
            "c_segments/big.bin/1764688008.123456/3145728/1048576/00000002",
            "",
        ] {
            assert_eq!(upload_segment(other), None, "{other}");
        }
    }

    #[test]
    fn listing_times_parse_as_utc() {
        let time = parse_listing_time("1970-01-01T00:00:01.500000");
        assert_eq!(
            time.duration_since(SystemTime::UNIX_EPOCH).ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_listing_time(""), SystemTime::UNIX_EPOCH);
    }
}
