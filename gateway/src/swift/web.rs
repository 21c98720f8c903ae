//! Swift's staticweb, for anonymous visitors of public containers:
//! `X-Container-Meta-Web-Index` serves `index.html` (say) for the container
//! root and every `dir/`, `X-Container-Meta-Web-Listings: true` an HTML
//! listing where there is no index, and `X-Container-Meta-Web-Error:
//! error.html` the object `404error.html` for what is not found.
//!
//! As in Swift, `dir` and the container itself are redirected (301) to
//! `dir/` and `container/` where they are directories of the site, and a
//! `dir/` with nothing under it is a 404, not an empty listing.
//!
//! A bucket without these settings but with an S3 website configuration
//! (`crate::website`) is served by it here too, as custom domains reach
//! buckets through this door: its index suffix, its one error document,
//! and a redirect (302, as S3's website endpoint) from `dir` to `dir/`
//! where `dir/<index>` exists.

use http::{HeaderValue, StatusCode};
use strata_store::{BucketInfo, ListEntry, ListQuery};

use super::error::{SwiftError, SwiftResult};
use super::{ATTR_META_PREFIX, SwiftDoor, SwiftRequest};
use crate::website::WebsiteConfig;
use crate::wire::{Response, text_response};

/// A container's staticweb settings.
pub(crate) struct WebSite {
    index: Option<String>,
    error: Option<ErrorPage>,
    listings: bool,
    /// The status of the redirect from `dir` to `dir/`: 301 in Swift's
    /// staticweb, 302 at S3's website endpoint.
    directory_redirect: StatusCode,
}

/// Where a site's error pages are.
enum ErrorPage {
    /// Swift's `Web-Error: error.html`: `404error.html` for a 404.
    StatusPrefixed(String),
    /// S3's ErrorDocument: one object for every status.
    Object(String),
}

impl WebSite {
    pub fn of(bucket: &BucketInfo) -> Option<WebSite> {
        let meta = |name: &str| {
            bucket
                .attrs
                .get(&format!("{ATTR_META_PREFIX}{name}"))
                .filter(|value| !value.is_empty())
                .cloned()
        };
        let site = WebSite {
            index: meta("web-index"),
            error: meta("web-error").map(ErrorPage::StatusPrefixed),
            listings: meta("web-listings").is_some_and(|value| super::truthy(&value)),
            directory_redirect: StatusCode::MOVED_PERMANENTLY,
        };
        if site.index.is_some() || site.error.is_some() || site.listings {
            return Some(site);
        }
        let s3 = WebsiteConfig::of(bucket)?;
        Some(WebSite {
            index: Some(s3.index_suffix),
            error: s3.error_key.map(ErrorPage::Object),
            listings: false,
            directory_redirect: StatusCode::FOUND,
        })
    }
}

impl SwiftDoor {
    /// Answers an anonymous GET/HEAD of a container root or a `dir/` of a
    /// web site container; `None` when the container is no site.
    pub(crate) async fn web_directory(
        &self,
        request: &SwiftRequest,
        container: &str,
        dir: &str,
        head: bool,
    ) -> SwiftResult<Option<Response>> {
        let Some(bucket) = self.edge.bucket(&self.store, container).await? else {
            return Ok(None);
        };
        let Some(site) = WebSite::of(&bucket).filter(|_| bucket.account == request.account) else {
            return Ok(None);
        };
        // The container's root as `/v1/AUTH_a/c`: relative links need `c/`.
        if dir.is_empty()
            && (site.index.is_some() || site.listings)
            && !request.path_as_sent().ends_with('/')
            && let Some(redirect) =
                crate::website::redirect_with_slash(request.path_as_sent(), site.directory_redirect)
        {
            return Ok(Some(redirect));
        }
        if let Some(index) = &site.index {
            match self
                .get_object(request, container, &format!("{dir}{index}"), head)
                .await
            {
                Err(err) if err.status == StatusCode::NOT_FOUND => {}
                answer => return answer.map(Some),
            }
        }
        if site.listings {
            self.authorize(request, Some(&bucket), None, super::access::Access::List)?;
            if let Some(listing) = self.html_listing(container, dir, head).await? {
                return Ok(Some(listing));
            }
        }
        self.web_error(request, container, &site, StatusCode::NOT_FOUND, head)
            .await
            .map(Some)
    }

    /// The site's error page for `status` (`404error.html` for
    /// `Web-Error: error.html`), or the plain error when there is none.
    pub(crate) async fn web_error(
        &self,
        request: &SwiftRequest,
        container: &str,
        site: &WebSite,
        status: StatusCode,
        head: bool,
    ) -> SwiftResult<Response> {
        let plain = || {
            Err(SwiftError::new(
                status,
                status.canonical_reason().unwrap_or("Error").to_owned(),
            ))
        };
        let page = match &site.error {
            None => return plain(),
            Some(ErrorPage::StatusPrefixed(error)) => format!("{}{error}", status.as_u16()),
            Some(ErrorPage::Object(key)) => key.clone(),
        };
        match self.get_object(request, container, &page, head).await {
            Ok(mut response) if response.status() == StatusCode::OK => {
                *response.status_mut() = status;
                Ok(response)
            }
            _ => plain(),
        }
    }

    /// An anonymous object read that failed with `err` (404, or 401 for a
    /// name the visitor may not read), as the container's site shows it: a
    /// redirect to `key/` when that is a directory of the site, the error
    /// page for a 404, else `err`.
    pub(crate) async fn web_object_missing(
        &self,
        request: &SwiftRequest,
        container: &str,
        key: &str,
        err: SwiftError,
        head: bool,
    ) -> SwiftResult<Response> {
        let bucket = match self.edge.bucket(&self.store, container).await {
            Ok(Some(bucket)) if bucket.account == request.account => bucket,
            _ => return Err(err),
        };
        let Some(site) = WebSite::of(&bucket) else {
            return Err(err);
        };
        if self.is_web_directory(request, &bucket, &site, key).await
            && let Some(redirect) =
                crate::website::redirect_with_slash(request.path_as_sent(), site.directory_redirect)
        {
            return Ok(redirect);
        }
        if err.status != StatusCode::NOT_FOUND || site.error.is_none() {
            return Err(err);
        }
        self.web_error(request, container, &site, StatusCode::NOT_FOUND, head)
            .await
            .or(Err(err))
    }

    /// Whether `key` is a directory of the site: its index exists and the
    /// visitor may read it, or (with listings) something is under `key/`.
    async fn is_web_directory(
        &self,
        request: &SwiftRequest,
        bucket: &BucketInfo,
        site: &WebSite,
        key: &str,
    ) -> bool {
        if let Some(index) = &site.index {
            let index = format!("{key}/{index}");
            if strata_store::validate_key(&index).is_ok()
                && crate::public::anonymous_object_read(
                    bucket,
                    Some(&index),
                    request.header("referer"),
                )
                && self.store.head_object(&bucket.name, &index).await.is_ok()
            {
                return true;
            }
        }
        site.listings
            && crate::public::anonymous_listing(bucket, request.header("referer"))
            && self
                .store
                .list_objects(
                    &bucket.name,
                    ListQuery {
                        prefix: format!("{key}/"),
                        max_keys: 1,
                        ..ListQuery::default()
                    },
                )
                .await
                .is_ok_and(|page| !page.entries.is_empty())
    }

    /// The HTML listing of `dir/`; `None` when nothing is under it (a 404,
    /// as in Swift, not an empty page for any name at all).
    async fn html_listing(
        &self,
        container: &str,
        dir: &str,
        head: bool,
    ) -> SwiftResult<Option<Response>> {
        let page = self
            .store
            .list_objects(
                container,
                ListQuery {
                    prefix: dir.to_owned(),
                    delimiter: Some("/".to_owned()),
                    max_keys: super::listing::LISTING_LIMIT,
                    ..ListQuery::default()
                },
            )
            .await?;
        if !dir.is_empty() && page.entries.is_empty() {
            return Ok(None);
        }
        let title = escape(&format!("Listing of /{container}/{dir}"));
        let mut html = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\n<h1>{title}</h1>\n<table>\n"
        );
        if !dir.is_empty() {
            html.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
        }
        for entry in &page.entries {
            let (name, size, modified) = match entry {
                ListEntry::CommonPrefix(prefix) => (prefix.as_str(), String::new(), String::new()),
                ListEntry::Object(info) => (
                    info.key.as_str(),
                    info.size.to_string(),
                    super::listing::listing_time(info.last_modified_ms),
                ),
            };
            let relative = &name[dir.len()..];
            // `./`: a name starting with `/` (under `dir//`) is no root link.
            let href = percent_encoding::utf8_percent_encode(relative, HREF).to_string();
            let href = format!("./{href}");
            html.push_str(&format!(
                "<tr><td><a href=\"{href}\">{}</a></td><td>{size}</td><td>{modified}</td></tr>\n",
                escape(relative)
            ));
        }
        html.push_str("</table>\n</body></html>\n");
        let length = html.len();
        let mut response = text_response(StatusCode::OK, if head { String::new() } else { html });
        if head {
            // The GET's length, as HEAD answers it.
            (response.headers_mut())
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Ok(Some(response))
    }
}

/// What a relative link may keep unencoded: path characters, `/` included.
const HREF: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}
