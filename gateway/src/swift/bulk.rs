//! Bulk delete (`POST /v1/AUTH_acct?bulk-delete` with one
//! `/container[/object]` per line) and the report it answers with, which
//! SLO deletion shares.

use crate::wire::RequestBody;
use http::StatusCode;
use serde::Serialize;
use strata_store::{BucketPin, StoreError};

use super::access::{Access, Caller};
use super::error::{SwiftError, SwiftResult};
use super::large::read_body;
use super::listing::{self, Format};
use super::{SwiftDoor, SwiftRequest};
use crate::wire::{Response, text_response};

/// Most names one bulk delete may list (Swift's `max_deletes_per_request`).
pub(crate) const MAX_DELETES_PER_REQUEST: usize = 10_000;
/// Longest bulk-delete body: every name at its longest, URL-encoded.
const MAX_BULK_BODY: usize = 4 * 1024 * 1024;

/// What a bulk delete did, in Swift's report shape.
#[derive(Debug, Default, Serialize)]
pub(crate) struct DeleteReport {
    #[serde(rename = "Number Deleted")]
    pub deleted: u64,
    #[serde(rename = "Number Not Found")]
    pub not_found: u64,
    #[serde(rename = "Response Status")]
    pub status: String,
    #[serde(rename = "Response Body")]
    pub body: String,
    #[serde(rename = "Errors")]
    pub errors: Vec<(String, String)>,
}

impl DeleteReport {
    pub fn record(&mut self, name: &str, outcome: SwiftResult<()>) {
        match outcome {
            Ok(()) => self.deleted += 1,
            Err(err) if err.status == StatusCode::NOT_FOUND => self.not_found += 1,
            Err(err) => self.errors.push((name.to_owned(), status_line(err.status))),
        }
    }

    pub fn into_response(mut self, format: Format) -> SwiftResult<Response> {
        self.status = match self.errors.first() {
            None => status_line(StatusCode::OK),
            Some(_) => status_line(StatusCode::BAD_REQUEST),
        };
        let (body, content_type) = match format {
            Format::Json => (
                serde_json::to_string(&self).map_err(|_| SwiftError::internal())?,
                "application/json; charset=utf-8",
            ),
            Format::Plain | Format::Xml => {
                let mut text = format!(
                    "Number Deleted: {}\nNumber Not Found: {}\nResponse Body: {}\nResponse Status: {}\nErrors:\n",
                    self.deleted, self.not_found, self.body, self.status
                );
                for (name, status) in &self.errors {
                    text.push_str(&format!("{name}, {status}\n"));
                }
                (text, "text/plain; charset=utf-8")
            }
        };
        let mut response = text_response(StatusCode::OK, body);
        super::put_header(response.headers_mut(), "content-type", content_type);
        Ok(response)
    }
}

fn status_line(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

impl SwiftDoor {
    pub(crate) async fn bulk_delete(
        &self,
        request: &SwiftRequest,
        body: RequestBody,
    ) -> SwiftResult<Response> {
        // Each name is authorized on its own, but nobody without an identity
        // gets as far as reading the list.
        if !matches!(request.caller, Caller::User(_)) {
            return Err(SwiftError::unauthorized());
        }
        let body = read_body(body, MAX_BULK_BODY).await?;
        let text = String::from_utf8(body)
            .map_err(|_| SwiftError::bad_request("Invalid UTF8 in the bulk delete body"))?;
        let names: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        if names.len() > MAX_DELETES_PER_REQUEST {
            return Err(SwiftError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Maximum Bulk Deletes: {MAX_DELETES_PER_REQUEST} per request"),
            ));
        }
        let mut report = DeleteReport::default();
        // In the order given, so that `/c/o` then `/c` deletes both.
        for name in names {
            let decoded = percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .into_owned();
            let path = decoded.trim_start_matches('/');
            let outcome = match path.split_once('/') {
                Some((container, key)) if !key.is_empty() => {
                    match strata_store::validate_key(key) {
                        Ok(()) => self.delete_one(request, container, Some(key)).await,
                        Err(err) => Err(err.into()),
                    }
                }
                _ => {
                    self.delete_one(request, path.trim_end_matches('/'), None)
                        .await
                }
            };
            report.record(&decoded, outcome);
        }
        report.into_response(listing::format_of(request))
    }

    /// Deletes one object (or, without `key`, one empty container) as the
    /// request's caller.
    pub(crate) async fn delete_one(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: Option<&str>,
    ) -> SwiftResult<()> {
        let bucket = self.container_of(&request.account, container).await?;
        match key {
            Some(key) => {
                self.authorize(request, bucket.as_ref(), Some(key), Access::Write)?;
                let Some(bucket) = bucket else {
                    return Err(SwiftError::not_found());
                };
                let pin = BucketPin::of(&bucket);
                match self
                    .store
                    .delete_object_pinned(container, key, &pin)
                    .await?
                {
                    Some(_) => Ok(()),
                    None => Err(SwiftError::not_found()),
                }
            }
            None => {
                self.authorize(request, None, None, Access::Manage)?;
                let Some(bucket) = bucket else {
                    return Err(SwiftError::not_found());
                };
                let pin = BucketPin::of(&bucket);
                match self.store.delete_bucket_pinned(container, &pin).await {
                    Ok(()) => Ok(()),
                    Err(StoreError::BucketNotEmpty) => {
                        Err(SwiftError::conflict("Container not empty"))
                    }
                    Err(err) => Err(err.into()),
                }
            }
        }
    }
}
