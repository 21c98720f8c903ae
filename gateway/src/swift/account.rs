//! Account requests: HEAD (usage and metadata), GET (the container listing),
//! POST (metadata, TempURL keys).

use http::{HeaderMap, StatusCode};

use super::access::{Access, is_owner, is_temp_url_key};
use super::error::{SwiftError, SwiftResult};
use super::listing::{self, AccountEntry, ContainerEntry, ListParams};
use super::meta::{MetaKind, apply_changes, meta_changes};
use super::{SwiftDoor, SwiftRequest, put_header, swift_timestamp};
use crate::directory::AccountRecord;
use crate::wire::{Response, empty_response};

impl SwiftDoor {
    pub(crate) async fn head_account(&self, request: &SwiftRequest) -> SwiftResult<Response> {
        let (record, containers) = self.account_state(request).await?;
        let mut response = empty_response(StatusCode::NO_CONTENT);
        account_headers(
            response.headers_mut(),
            &record,
            &containers,
            is_owner(request),
        );
        Ok(response)
    }

    pub(crate) async fn list_account(&self, request: &SwiftRequest) -> SwiftResult<Response> {
        let params = ListParams::from_request(request)?;
        let format = listing::format_of(request);
        let (record, containers) = self.account_state(request).await?;
        let mut selected: Vec<&ContainerEntry> = containers
            .iter()
            .filter(|entry| entry.name.starts_with(&params.prefix))
            .collect();
        if params.reverse {
            selected.reverse();
        }
        let beyond_marker = |name: &str| match &params.marker {
            Some(marker) if params.reverse => name < marker.as_str(),
            Some(marker) => name > marker.as_str(),
            None => true,
        };
        let before_end = |name: &str| match &params.end_marker {
            Some(end) if params.reverse => name > end.as_str(),
            Some(end) => name < end.as_str(),
            None => true,
        };
        let mut page: Vec<AccountEntry> = Vec::new();
        for entry in selected {
            if !beyond_marker(&entry.name) {
                continue;
            }
            if !before_end(&entry.name) || page.len() >= params.limit {
                break;
            }
            // With a delimiter, container names roll up like object names.
            if let Some(delimiter) = &params.delimiter
                && let Some(pos) = entry.name[params.prefix.len()..].find(delimiter.as_str())
            {
                let rolled = &entry.name[..params.prefix.len() + pos + delimiter.len()];
                // A page that ended on this prefix is followed with it as
                // the marker: it must not come again (clients page until
                // a page is empty).
                let shown = matches!(page.last(), Some(AccountEntry::Subdir { subdir }) if subdir == rolled);
                if !shown && params.marker.as_deref() != Some(rolled) {
                    page.push(AccountEntry::Subdir {
                        subdir: rolled.to_owned(),
                    });
                }
                continue;
            }
            page.push(AccountEntry::Container(entry.clone()));
        }
        let mut response = listing::account_listing(format, &request.account, &page)?;
        account_headers(
            response.headers_mut(),
            &record,
            &containers,
            is_owner(request),
        );
        Ok(response)
    }

    pub(crate) async fn post_account(&self, request: &SwiftRequest) -> SwiftResult<Response> {
        self.authorize(request, None, None, Access::Manage)?;
        let changes = meta_changes(&request.headers, MetaKind::Account)?;
        self.directory
            .update_account_meta(&request.account, move |meta| {
                apply_changes(meta, changes.clone()).map_err(|err| err.text.into_owned())
            })
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// The account's record and containers with their usage, after checking
    /// the caller may see them.
    async fn account_state(
        &self,
        request: &SwiftRequest,
    ) -> SwiftResult<(AccountRecord, Vec<ContainerEntry>)> {
        self.authorize(request, None, None, Access::List)?;
        let record = self
            .directory
            .account(&request.account)
            .ok_or_else(SwiftError::not_found)?;
        let containers = self
            .store
            .account_usage(&request.account)
            .await?
            .into_iter()
            .map(|(bucket, usage)| ContainerEntry {
                name: bucket.name,
                count: usage.objects,
                bytes: usage.bytes,
                last_modified: listing::listing_time(bucket.created_ms),
            })
            .collect();
        Ok((record, containers))
    }
}

/// `owner`: the caller administers the account, and sees its TempURL keys.
fn account_headers(
    headers: &mut HeaderMap,
    record: &AccountRecord,
    containers: &[ContainerEntry],
    owner: bool,
) {
    let objects: u64 = containers.iter().map(|entry| entry.count).sum();
    let bytes: u64 = containers.iter().map(|entry| entry.bytes).sum();
    put_header(
        headers,
        "x-account-container-count",
        &containers.len().to_string(),
    );
    put_header(headers, "x-account-object-count", &objects.to_string());
    put_header(headers, "x-account-bytes-used", &bytes.to_string());
    put_header(headers, "x-timestamp", &swift_timestamp(record.created_ms));
    for (name, value) in &record.meta {
        if owner || !is_temp_url_key(name) {
            put_header(headers, &MetaKind::Account.header(name), value);
        }
    }
}
