//! Account and container listings: their query parameters and the three
//! formats Swift answers in (plain names, JSON, XML).

use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::SwiftRequest;
use super::error::{SwiftError, SwiftResult};
use crate::wire::{Response, empty_response, json_response, text_response};
use crate::xml_writer::XmlWriter;

/// Most entries one listing returns (Swift's `container_listing_limit`).
pub(crate) const LISTING_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Plain,
    Json,
    Xml,
}

/// `prefix`, `delimiter`, `marker`, `end_marker`, `limit`, `reverse`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub marker: Option<String>,
    pub end_marker: Option<String>,
    pub limit: usize,
    pub reverse: bool,
}

impl ListParams {
    pub fn from_request(request: &SwiftRequest) -> SwiftResult<ListParams> {
        let query = &request.query;
        // As Swift's servers read it: anything but digits is no limit.
        let limit = match query
            .get("limit")
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        {
            None => LISTING_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if limit <= LISTING_LIMIT => limit,
                _ => {
                    return Err(SwiftError::precondition_failed(format!(
                        "Maximum limit is {LISTING_LIMIT}"
                    )));
                }
            },
        };
        let delimiter = query.get("delimiter").filter(|text| !text.is_empty());
        if delimiter.is_some_and(|text| text.chars().count() != 1) {
            return Err(SwiftError::precondition_failed("Bad delimiter"));
        }
        let non_empty = |name: &str| {
            query
                .get(name)
                .filter(|text| !text.is_empty())
                .map(str::to_owned)
        };
        let reverse = query.get("reverse").is_some_and(super::truthy);
        Ok(ListParams {
            prefix: query.get("prefix").unwrap_or("").to_owned(),
            delimiter: delimiter.map(str::to_owned),
            marker: non_empty("marker"),
            end_marker: non_empty("end_marker"),
            limit,
            reverse,
        })
    }
}

/// The format a listing is asked for: `?format=` (one Swift does not know
/// is plain, as in Swift), else the `Accept` header.
pub(crate) fn format_of(request: &SwiftRequest) -> Format {
    if let Some(name) = request.query.get("format").filter(|name| !name.is_empty()) {
        return match name.trim().to_ascii_lowercase().as_str() {
            "json" => Format::Json,
            "xml" => Format::Xml,
            _ => Format::Plain,
        };
    }
    let accept = request.header("accept").unwrap_or("");
    if accept.contains("application/json") {
        Format::Json
    } else if accept.contains("application/xml") || accept.contains("text/xml") {
        Format::Xml
    } else {
        Format::Plain
    }
}

/// One entry of a container listing.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum ObjectEntry {
    Object {
        name: String,
        hash: String,
        bytes: u64,
        content_type: String,
        last_modified: String,
    },
    Subdir {
        subdir: String,
    },
}

/// A container of an account, with its usage.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ContainerEntry {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
    pub last_modified: String,
}

/// One entry of an account listing: a container, or with a delimiter the
/// names rolled up under a common prefix.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum AccountEntry {
    Container(ContainerEntry),
    Subdir { subdir: String },
}

/// `2026-12-02T15:06:48.123000`: listings' time form (UTC, microseconds).
pub(crate) fn listing_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

pub(crate) fn container_listing(
    format: Format,
    container: &str,
    entries: &[ObjectEntry],
) -> SwiftResult<Response> {
    varying_by_accept(match format {
        Format::Plain => Ok(plain(entries.iter().map(|entry| match entry {
            ObjectEntry::Object { name, .. } => name.as_str(),
            ObjectEntry::Subdir { subdir } => subdir.as_str(),
        }))),
        Format::Json => json(entries),
        Format::Xml => {
            let mut xml = XmlWriter::with_attributes("container", &[("name", container)]);
            for entry in entries {
                match entry {
                    ObjectEntry::Object {
                        name,
                        hash,
                        bytes,
                        content_type,
                        last_modified,
                    } => {
                        xml.open("object")
                            .element("name", name)
                            .element("hash", hash)
                            .element("bytes", &bytes.to_string())
                            .element("content_type", content_type)
                            .element("last_modified", last_modified)
                            .close();
                    }
                    ObjectEntry::Subdir { subdir } => {
                        xml.open_with("subdir", &[("name", subdir)])
                            .element("name", subdir)
                            .close();
                    }
                }
            }
            Ok(typed(
                text_response(StatusCode::OK, xml.finish()),
                "application/xml; charset=utf-8",
            ))
        }
    })
}

pub(crate) fn account_listing(
    format: Format,
    account: &str,
    entries: &[AccountEntry],
) -> SwiftResult<Response> {
    varying_by_accept(match format {
        Format::Plain => Ok(plain(entries.iter().map(|entry| match entry {
            AccountEntry::Container(container) => container.name.as_str(),
            AccountEntry::Subdir { subdir } => subdir.as_str(),
        }))),
        Format::Json => json(entries),
        Format::Xml => {
            let mut xml = XmlWriter::with_attributes("account", &[("name", account)]);
            for entry in entries {
                match entry {
                    AccountEntry::Container(container) => {
                        xml.open("container")
                            .element("name", &container.name)
                            .element("count", &container.count.to_string())
                            .element("bytes", &container.bytes.to_string())
                            .element("last_modified", &container.last_modified)
                            .close();
                    }
                    // Swift's account form: the name as an attribute only.
                    AccountEntry::Subdir { subdir } => {
                        xml.open_with("subdir", &[("name", subdir)]).close();
                    }
                }
            }
            Ok(typed(
                text_response(StatusCode::OK, xml.finish()),
                "application/xml; charset=utf-8",
            ))
        }
    })
}

/// One name per line; an empty listing is 204, as Swift answers it.
fn plain<'a>(names: impl Iterator<Item = &'a str>) -> Response {
    let mut body = String::new();
    for name in names {
        body.push_str(name);
        body.push('\n');
    }
    if body.is_empty() {
        return typed(
            empty_response(StatusCode::NO_CONTENT),
            "text/plain; charset=utf-8",
        );
    }
    typed(
        text_response(StatusCode::OK, body),
        "text/plain; charset=utf-8",
    )
}

fn json<T: Serialize>(entries: &[T]) -> SwiftResult<Response> {
    let body = serde_json::to_vec(entries).map_err(|err| {
        tracing::error!(error = %err, "listing did not serialise");
        SwiftError::internal()
    })?;
    Ok(json_response(StatusCode::OK, body))
}

/// A listing whose format may come from `Accept` varies by it, for caches
/// between here and the client.
fn varying_by_accept(response: SwiftResult<Response>) -> SwiftResult<Response> {
    response.map(|mut response| {
        response
            .headers_mut()
            .append(http::header::VARY, HeaderValue::from_static("Accept"));
        response
    })
}

fn typed(mut response: Response, content_type: &'static str) -> Response {
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}
