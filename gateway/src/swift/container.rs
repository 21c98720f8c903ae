//! Container requests: PUT, HEAD, GET (listings), POST (metadata and ACLs),
//! DELETE.

use std::collections::BTreeMap;

use http::{HeaderMap, StatusCode};
use strata_auth::ContainerAcl;
use strata_store::{BucketInfo, BucketPin, BucketUsage, ListEntry, ListQuery, StoreError};

use super::access::{Access, Caller, is_owner, is_temp_url_key};
use super::error::{SwiftError, SwiftResult};
use super::large::listed_view;
use super::listing::{self, ListParams, ObjectEntry};
use super::meta::{MetaKind, apply_changes, meta_changes};
use super::{
    ATTR_META_PREFIX, ATTR_READ_ACL, ATTR_WRITE_ACL, SwiftDoor, SwiftRequest, put_header,
    swift_timestamp,
};
use crate::wire::{Response, empty_response};
use http_body_util::BodyExt as _;

impl SwiftDoor {
    pub(crate) async fn put_container(
        &self,
        request: &SwiftRequest,
        name: &str,
    ) -> SwiftResult<Response> {
        self.authorize(request, None, None, Access::Manage)?;
        if self.directory.account(&request.account).is_none() {
            return Err(SwiftError::not_found());
        }
        if name.len() > 256 {
            return Err(SwiftError::bad_request(
                "Container name length of 257 or more is longer than 256",
            ));
        }
        let settings = ContainerSettings::from_request(request)?;
        let mut attrs = BTreeMap::new();
        settings.apply(&mut attrs)?;
        match self
            .store
            .create_bucket_with(&request.account, name, &self.region, attrs)
            .await
        {
            Ok(_) => Ok(empty_response(StatusCode::CREATED)),
            Err(StoreError::BucketAlreadyOwnedByYou) => {
                // PUT on an existing container updates its settings: 202.
                if !settings.is_empty() {
                    // The account's container, whichever incarnation.
                    let pin = BucketPin::owned_by(&request.account);
                    self.store
                        .update_bucket_pinned(name, pin, move |bucket| settings.apply_to(bucket))
                        .await?;
                }
                Ok(empty_response(StatusCode::ACCEPTED))
            }
            Err(err) => Err(err.into()),
        }
    }

    pub(crate) async fn get_container(
        &self,
        request: &SwiftRequest,
        name: &str,
        head: bool,
    ) -> SwiftResult<Response> {
        if matches!(request.caller, Caller::Anonymous) && self.edge.enabled() && !head {
            return self.public_listing(request, name).await;
        }
        let bucket = self.container_of(&request.account, name).await?;
        self.authorize(request, bucket.as_ref(), None, Access::List)?;
        let bucket = bucket.ok_or_else(SwiftError::not_found)?;
        let usage = self.store.bucket_usage(name).await?;
        let owner = is_owner(request);
        let mut response = if head {
            empty_response(StatusCode::NO_CONTENT)
        } else {
            let params = ListParams::from_request(request)?;
            let (entries, _) = self.list_entries(name, &params).await?;
            listing::container_listing(listing::format_of(request), name, &entries)?
        };
        container_headers(response.headers_mut(), &bucket, usage, owner);
        Ok(response)
    }

    /// An anonymous listing, through the edge cache.
    async fn public_listing(&self, request: &SwiftRequest, name: &str) -> SwiftResult<Response> {
        let bucket = self
            .edge
            .bucket(&self.store, name)
            .await?
            .filter(|bucket| bucket.account == request.account);
        self.authorize(request, bucket.as_deref(), None, Access::List)?;
        let bucket = bucket.ok_or_else(SwiftError::not_found)?;
        let format = listing::format_of(request);
        let form = crate::edge::listing_form(&format!("swift {format:?}"), &request.query.0);
        let generation = match self.edge.listing(name, &form) {
            Ok(mut cached) => {
                crate::public::vary_by_referrer(&bucket, cached.headers_mut());
                return Ok(cached);
            }
            Err(generation) => generation,
        };
        let usage = self.store.bucket_usage(name).await?;
        let params = ListParams::from_request(request)?;
        let (entries, first_expiry) = self.list_entries(name, &params).await?;
        let mut response = listing::container_listing(format, name, &entries)?;
        container_headers(response.headers_mut(), &bucket, usage, false);
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| SwiftError::internal())?
            .to_bytes();
        let mut response = self.edge.keep_listing(
            (name, generation, &form),
            (parts.status, parts.headers, body),
            first_expiry,
        );
        crate::public::vary_by_referrer(&bucket, response.headers_mut());
        Ok(response)
    }

    /// A page of the listing, and the first expiry (`X-Delete-At`) of an
    /// object on it.
    async fn list_entries(
        &self,
        name: &str,
        params: &ListParams,
    ) -> SwiftResult<(Vec<ObjectEntry>, Option<u64>)> {
        let page = self
            .store
            .list_objects(
                name,
                ListQuery {
                    prefix: params.prefix.clone(),
                    delimiter: params.delimiter.clone(),
                    start_after: params.marker.clone(),
                    end_before: params.end_marker.clone(),
                    max_keys: params.limit,
                    reverse: params.reverse,
                },
            )
            .await?;
        let first_expiry = page.first_expiry();
        let entries = page
            .entries
            .into_iter()
            .map(|entry| match entry {
                ListEntry::CommonPrefix(subdir) => ObjectEntry::Subdir { subdir },
                ListEntry::Object(info) => {
                    let view = listed_view(&info);
                    ObjectEntry::Object {
                        name: info.key.clone(),
                        hash: view.etag,
                        bytes: view.size,
                        content_type: info
                            .meta
                            .content_type
                            .clone()
                            .unwrap_or_else(|| "application/octet-stream".to_owned()),
                        last_modified: listing::listing_time(info.last_modified_ms),
                    }
                }
            })
            .collect();
        Ok((entries, first_expiry))
    }

    pub(crate) async fn post_container(
        &self,
        request: &SwiftRequest,
        name: &str,
    ) -> SwiftResult<Response> {
        let container = self.managed_container(request, name).await?;
        let settings = ContainerSettings::from_request(request)?;
        let outcome = self
            .store
            .update_bucket_pinned(name, BucketPin::of(&container), move |bucket| {
                settings.apply_to(bucket)
            })
            .await;
        match outcome {
            Ok(_) => Ok(empty_response(StatusCode::NO_CONTENT)),
            Err(err) => Err(err.into()),
        }
    }

    pub(crate) async fn delete_container(
        &self,
        request: &SwiftRequest,
        name: &str,
    ) -> SwiftResult<Response> {
        let container = self.managed_container(request, name).await?;
        self.store
            .delete_bucket_pinned(name, &BucketPin::of(&container))
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// The container, after checking the caller may manage it.
    async fn managed_container(
        &self,
        request: &SwiftRequest,
        name: &str,
    ) -> SwiftResult<BucketInfo> {
        self.authorize(request, None, None, Access::Manage)?;
        self.container_of(&request.account, name)
            .await?
            .ok_or_else(SwiftError::not_found)
    }
}

/// What a container PUT or POST changes: metadata and the two ACLs, parsed
/// before anything is written so that a bad header changes nothing.
#[derive(Debug, Default)]
struct ContainerSettings {
    meta: Vec<(String, Option<String>)>,
    /// `Some("")` removes the ACL.
    read_acl: Option<String>,
    write_acl: Option<String>,
}

impl ContainerSettings {
    fn from_request(request: &SwiftRequest) -> SwiftResult<ContainerSettings> {
        let acl = |name: &str,
                   removal: &str,
                   parse: fn(&str) -> Result<ContainerAcl, strata_auth::AclError>|
         -> SwiftResult<Option<String>> {
            if request.headers.contains_key(removal) {
                return Ok(Some(String::new()));
            }
            let Some(value) = request.headers.get(name) else {
                return Ok(None);
            };
            let text = value
                .to_str()
                .map_err(|_| SwiftError::bad_request("ACLs must be ASCII"))?;
            let parsed = parse(text).map_err(|err| SwiftError::bad_request(err.0))?;
            Ok(Some(parsed.to_header()))
        };
        Ok(ContainerSettings {
            meta: meta_changes(&request.headers, MetaKind::Container)?,
            read_acl: acl(
                "x-container-read",
                "x-remove-container-read",
                ContainerAcl::parse_read,
            )?,
            write_acl: acl(
                "x-container-write",
                "x-remove-container-write",
                ContainerAcl::parse_write,
            )?,
        })
    }

    fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.read_acl.is_none() && self.write_acl.is_none()
    }

    /// Applies the settings to `bucket`, in the store's update: only while
    /// `account` still owns it. The caller's check came before; a bucket
    /// deleted and created again by another account since is not the
    /// container it meant.
    fn apply_to(&self, bucket: &mut BucketInfo) -> Result<(), StoreError> {
        self.apply(&mut bucket.attrs)
            .map_err(|err| StoreError::InvalidArgument(err.text.into_owned()))
    }

    fn apply(&self, attrs: &mut BTreeMap<String, String>) -> SwiftResult<()> {
        let mut meta: BTreeMap<String, String> = attrs
            .iter()
            .filter_map(|(name, value)| {
                name.strip_prefix(ATTR_META_PREFIX)
                    .map(|name| (name.to_owned(), value.clone()))
            })
            .collect();
        apply_changes(&mut meta, self.meta.clone())?;
        attrs.retain(|name, _| !name.starts_with(ATTR_META_PREFIX));
        for (name, value) in meta {
            attrs.insert(format!("{ATTR_META_PREFIX}{name}"), value);
        }
        for (attr, acl) in [
            (ATTR_READ_ACL, &self.read_acl),
            (ATTR_WRITE_ACL, &self.write_acl),
        ] {
            match acl.as_deref() {
                None => {}
                Some("") => {
                    attrs.remove(attr);
                }
                Some(text) => {
                    attrs.insert(attr.to_owned(), text.to_owned());
                }
            }
        }
        Ok(())
    }
}

fn container_headers(
    headers: &mut HeaderMap,
    bucket: &BucketInfo,
    usage: BucketUsage,
    owner: bool,
) {
    put_header(
        headers,
        "x-container-object-count",
        &usage.objects.to_string(),
    );
    put_header(headers, "x-container-bytes-used", &usage.bytes.to_string());
    put_header(headers, "x-timestamp", &swift_timestamp(bucket.created_ms));
    put_header(headers, "x-storage-policy", "default");
    for (name, value) in &bucket.attrs {
        if let Some(meta) = name.strip_prefix(ATTR_META_PREFIX)
            && (owner || !is_temp_url_key(meta))
        {
            put_header(headers, &MetaKind::Container.header(meta), value);
        }
    }
    if owner {
        for (attr, header) in [
            (ATTR_READ_ACL, "x-container-read"),
            (ATTR_WRITE_ACL, "x-container-write"),
        ] {
            if let Some(value) = bucket.attrs.get(attr) {
                put_header(headers, header, value);
            }
        }
    }
}
