//! Swift's staticweb, for anonymous visitors of public containers:
//! `X-Container-Meta-Web-Index` serves `index.html` (say) for the container
//! root and every `dir/`, `X-Container-Meta-Web-Listings: true` an HTML
//! listing where there is no index, and `X-Container-Meta-Web-Error:
//! error.html` the object `404error.html` for what is not found.

use http::{HeaderValue, StatusCode};
use strata_store::{BucketInfo, ListEntry, ListQuery};

use super::error::{SwiftError, SwiftResult};
use super::{ATTR_META_PREFIX, SwiftDoor, SwiftRequest};
use crate::wire::{Response, text_response};

/// A container's staticweb settings.
pub(crate) struct WebSite {
    index: Option<String>,
    error: Option<String>,
    listings: bool,
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
            error: meta("web-error"),
            listings: meta("web-listings").is_some_and(|value| {
                matches!(
                    value.to_ascii_lowercase().as_str(),
                    "true" | "yes" | "on" | "1"
                )
            }),
        };
        (site.index.is_some() || site.error.is_some() || site.listings).then_some(site)
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
            self.authorize(request, Some(&bucket), true, super::access::Access::List)?;
            return self.html_listing(container, dir, head).await.map(Some);
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
        let Some(error) = &site.error else {
            return plain();
        };
        let page = format!("{}{error}", status.as_u16());
        match self.get_object(request, container, &page, head).await {
            Ok(mut response) if response.status() == StatusCode::OK => {
                *response.status_mut() = status;
                Ok(response)
            }
            _ => plain(),
        }
    }

    /// A 404 of an anonymous object read, as the container's site shows it.
    pub(crate) async fn web_not_found(
        &self,
        request: &SwiftRequest,
        container: &str,
        head: bool,
    ) -> Option<Response> {
        let bucket = self.edge.bucket(&self.store, container).await.ok()??;
        let site = WebSite::of(&bucket)?;
        site.error.as_ref()?;
        self.web_error(request, container, &site, StatusCode::NOT_FOUND, head)
            .await
            .ok()
    }

    async fn html_listing(&self, container: &str, dir: &str, head: bool) -> SwiftResult<Response> {
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
            let href = percent_encoding::utf8_percent_encode(relative, HREF).to_string();
            html.push_str(&format!(
                "<tr><td><a href=\"{href}\">{}</a></td><td>{size}</td><td>{modified}</td></tr>\n",
                escape(relative)
            ));
        }
        html.push_str("</table>\n</body></html>\n");
        let mut response = text_response(StatusCode::OK, if head { String::new() } else { html });
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Ok(response)
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
