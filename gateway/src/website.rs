//! S3 static website hosting: a bucket's website configuration
//! (PutBucketWebsite, kept as JSON under `s3:website`) and the pieces both
//! doors use to serve it to anonymous visitors — index documents for the
//! bucket root and every `dir/`, a redirect from `dir` to `dir/`, and one
//! error document for what is not found.
//!
//! The configuration only shapes answers to reads the bucket's ACL or
//! policy already allows (`public.rs`); it never opens a private bucket.
//! Signed requests ignore it, as S3's REST endpoint does. Answers are made
//! from the bucket record on every request, so a changed configuration
//! takes effect as soon as `BucketUpdated` drops the edge's copy of the
//! record; cached objects (the index and error documents themselves) are
//! keyed by their own names and stay valid.

use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use strata_store::BucketInfo;

use crate::wire::{Response, empty_response};

/// The S3 website configuration, as [`WebsiteConfig`] in JSON.
pub const ATTR_S3_WEBSITE: &str = "s3:website";

/// A bucket's S3 website configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebsiteConfig {
    /// Appended to requests for the bucket root and every `dir/`
    /// (`index.html`); never empty, never contains `/`.
    pub index_suffix: String,
    /// The object answered, with status 404, for what is not found.
    pub error_key: Option<String>,
}

impl WebsiteConfig {
    /// The bucket's configuration; `None` when it has none (or a stored one
    /// that no longer parses, which then serves nothing).
    pub fn of(bucket: &BucketInfo) -> Option<WebsiteConfig> {
        bucket
            .attrs
            .get(ATTR_S3_WEBSITE)
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// The index document of `dir`, which is empty (the bucket root) or
    /// ends with `/`.
    pub fn index_key(&self, dir: &str) -> String {
        format!("{dir}{}", self.index_suffix)
    }

    /// The index document whose existence makes `key` (a name without a
    /// trailing `/`) a directory, to be redirected to `key/`.
    pub fn directory_index_key(&self, key: &str) -> String {
        format!("{key}/{}", self.index_suffix)
    }
}

/// The 302 that sends a visitor from `dir` to `dir/`, as S3's website
/// endpoint answers: relative links in the index document then resolve
/// inside the directory. `path_as_sent` is the request's path as the
/// visitor sent it (still percent-encoded), whatever URL form it used.
pub fn redirect_to_directory(path_as_sent: &str) -> Option<Response> {
    redirect_with_slash(path_as_sent, StatusCode::FOUND)
}

/// A redirect of `path_as_sent` to itself with a trailing slash, with
/// `status` (S3's website endpoint answers 302, Swift's staticweb 301).
pub fn redirect_with_slash(path_as_sent: &str, status: StatusCode) -> Option<Response> {
    let location = HeaderValue::from_str(&format!("{path_as_sent}/")).ok()?;
    let mut response = empty_response(status);
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_and_redirects() {
        let site = WebsiteConfig {
            index_suffix: "index.html".into(),
            error_key: None,
        };
        assert_eq!(site.index_key(""), "index.html");
        assert_eq!(site.index_key("docs/"), "docs/index.html");
        assert_eq!(site.directory_index_key("docs"), "docs/index.html");
        let redirect = redirect_to_directory("/site/a%20b").unwrap();
        assert_eq!(redirect.status(), StatusCode::FOUND);
        assert_eq!(redirect.headers()["location"], "/site/a%20b/");
    }

    #[test]
    fn stored_configurations_round_trip() {
        let mut bucket = BucketInfo {
            name: "site".into(),
            account: "acme".into(),
            created_ms: 0,
            region: "us-east-1".into(),
            incarnation: 0,
            attrs: Default::default(),
        };
        assert_eq!(WebsiteConfig::of(&bucket), None);
        let site = WebsiteConfig {
            index_suffix: "index.html".into(),
            error_key: Some("error.html".into()),
        };
        bucket.attrs.insert(
            ATTR_S3_WEBSITE.into(),
            serde_json::to_string(&site).unwrap(),
        );
        assert_eq!(WebsiteConfig::of(&bucket), Some(site));
        bucket
            .attrs
            .insert(ATTR_S3_WEBSITE.into(), "{broken".into());
        assert_eq!(WebsiteConfig::of(&bucket), None);
    }
}
