//! Cross-origin requests from browsers: the CORS rules of a bucket, from
//! S3's PutBucketCors (kept as JSON under `s3:cors`) or Swift's
//! `X-Container-Meta-Access-Control-Allow-Origin` (`-Max-Age`,
//! `-Expose-Headers`), and the answers built from them — preflight
//! `OPTIONS`, and the `Access-Control-*` headers on actual requests. CORS
//! only tells browsers what they may show; who may read is still the ACLs'.

use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use strata_store::BucketInfo;

use crate::wire::{Response, empty_response, header_str, text_response};

/// The S3 CORS configuration, as rules in JSON.
pub const ATTR_S3_CORS: &str = "s3:cors";
const SWIFT_ALLOW_ORIGIN: &str = "swift:meta:access-control-allow-origin";
const SWIFT_MAX_AGE: &str = "swift:meta:access-control-max-age";
const SWIFT_EXPOSE: &str = "swift:meta:access-control-expose-headers";

/// Most rules one configuration may hold (S3's limit).
pub const MAX_RULES: usize = 100;

/// One CORS rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// Origins, each exact, `*`, or with one `*` (`https://*.example.com`).
    pub allowed_origins: Vec<String>,
    /// Methods, upper-case.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for, lower-case; `*` for any.
    pub allowed_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age_secs: Option<u64>,
    /// Made from Swift's container metadata, which grants no credentials.
    #[serde(skip)]
    pub from_swift: bool,
}

impl CorsRule {
    fn origin_matches(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| wildcard_matches(allowed, origin, false))
    }

    /// The `Access-Control-Allow-*` origin headers for `origin`, which this
    /// rule allows. As S3 and Swift answer: a rule open to every origin
    /// says `*` to an anonymous request (and a browser then sends no
    /// cookies or credentials); otherwise the caller's origin is named, and
    /// an S3 rule lets a browser send its credentials (`fetch(url,
    /// {credentials: "include"})`): a signed request from a page of any
    /// origin reads its answer, as S3 lets it (ceph s3-tests,
    /// `test_cors_origin_wildcard`).
    fn allow_origin(&self, origin: &str, signed: bool, response: &mut HeaderMap) {
        if !signed && self.allowed_origins.iter().any(|allowed| allowed == "*") {
            response.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            return;
        }
        put(response, "access-control-allow-origin", origin);
        if !self.from_swift {
            response.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }

    /// S3 allows one `*` in an AllowedHeader too (`x-amz-*`); header names
    /// match case-insensitively.
    fn header_allowed(&self, header: &str) -> bool {
        self.allowed_headers
            .iter()
            .any(|allowed| wildcard_matches(allowed, header, true))
    }
}

/// Whether `text` is `pattern`, which may hold one `*` standing for any run
/// of characters.
fn wildcard_matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let starts = |text: &str, head: &str| match ignore_case {
        true => text
            .get(..head.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(head)),
        false => text.starts_with(head),
    };
    let ends = |text: &str, tail: &str| match ignore_case {
        true => text
            .len()
            .checked_sub(tail.len())
            .and_then(|at| text.get(at..))
            .is_some_and(|end| end.eq_ignore_ascii_case(tail)),
        false => text.ends_with(tail),
    };
    match pattern.split_once('*') {
        None if ignore_case => pattern.eq_ignore_ascii_case(text),
        None => pattern == text,
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len() && starts(text, head) && ends(text, tail)
        }
    }
}

/// The bucket's rules: S3's first, then the one Swift's metadata makes.
pub fn rules(bucket: &BucketInfo) -> Vec<CorsRule> {
    let mut rules: Vec<CorsRule> = bucket
        .attrs
        .get(ATTR_S3_CORS)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    if let Some(origins) = bucket.attrs.get(SWIFT_ALLOW_ORIGIN) {
        rules.push(CorsRule {
            allowed_origins: origins.split_whitespace().map(str::to_owned).collect(),
            allowed_methods: ["GET", "HEAD", "PUT", "POST", "DELETE", "COPY"]
                .map(str::to_owned)
                .to_vec(),
            allowed_headers: vec!["*".to_owned()],
            expose_headers: bucket
                .attrs
                .get(SWIFT_EXPOSE)
                .map(|text| text.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            max_age_secs: bucket
                .attrs
                .get(SWIFT_MAX_AGE)
                .and_then(|age| age.parse().ok()),
            from_swift: true,
        });
    }
    rules
}

/// The first rule that allows `origin` to make a `method` request with
/// `request_headers`.
fn matching<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'a CorsRule> {
    rules.iter().find(|rule| {
        rule.origin_matches(origin)
            && rule.allowed_methods.iter().any(|allowed| allowed == method)
            && request_headers
                .iter()
                .all(|header| rule.header_allowed(header))
    })
}

/// Answers a preflight `OPTIONS` for `bucket` (`None`: it does not exist).
pub fn preflight(bucket: Option<&BucketInfo>, headers: &HeaderMap) -> Response {
    let refused = || {
        text_response(
            StatusCode::FORBIDDEN,
            "CORSResponse: This CORS request is not allowed.",
        )
    };
    let (Some(origin), Some(method)) = (
        header_str(headers, "origin"),
        header_str(headers, "access-control-request-method"),
    ) else {
        return text_response(
            StatusCode::BAD_REQUEST,
            "A preflight needs Origin and Access-Control-Request-Method",
        );
    };
    let Some(bucket) = bucket else {
        return refused();
    };
    let requested: Vec<&str> = header_str(headers, "access-control-request-headers")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|header| !header.is_empty())
        .collect();
    let rules = rules(bucket);
    let Some(rule) = matching(&rules, origin, method, &requested) else {
        return refused();
    };
    let mut response = empty_response(StatusCode::OK);
    let out = response.headers_mut();
    // Browsers send preflights without credentials or signatures.
    rule.allow_origin(origin, false, out);
    put(
        out,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !requested.is_empty() {
        put(out, "access-control-allow-headers", &requested.join(", "));
    }
    if let Some(age) = rule.max_age_secs {
        put(out, "access-control-max-age", &age.to_string());
    }
    out.insert(http::header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// What of an actual (not preflight) cross-origin request its answer's
/// CORS headers depend on.
pub struct CorsRequest<'a> {
    pub method: &'a str,
    pub origin: &'a str,
    /// Whether it carried a signature (S3 names the origin to those).
    pub signed: bool,
}

/// Adds the `Access-Control-*` headers an actual request from an allowed
/// origin gets; nothing for other origins (the browser then hides the
/// answer). With CORS rules, every answer varies by `Origin`, with one or
/// not: a shared cache must not give the answer to a request without
/// `Origin` (no CORS headers) to a browser from an allowed origin.
pub fn decorate(bucket: &BucketInfo, request: &CorsRequest<'_>, response: &mut HeaderMap) {
    if !vary_by_origin(bucket, response) {
        return;
    }
    let rules = rules(bucket);
    let Some(rule) = matching(&rules, request.origin, request.method, &[]) else {
        return;
    };
    rule.allow_origin(request.origin, request.signed, response);
    if !rule.expose_headers.is_empty() {
        put(
            response,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
}

/// Adds `Vary: Origin` when `bucket` has CORS rules (its answers then
/// depend on the Origin, sent or not); whether it has. The public read
/// paths call it for requests without Origin, with the bucket they hold.
pub fn vary_by_origin(bucket: &BucketInfo, response: &mut HeaderMap) -> bool {
    // Whether there are rules, without parsing them.
    let has_rules =
        bucket.attrs.contains_key(ATTR_S3_CORS) || bucket.attrs.contains_key(SWIFT_ALLOW_ORIGIN);
    if has_rules {
        response.append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
    has_rules
}

fn put(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            ..CorsRule::default()
        }
    }

    #[test]
    fn origins_methods_and_headers_match() {
        let rules = [
            rule(&["https://*.example.com"], &["GET"], &["range"]),
            rule(&["https://app.test"], &["GET", "PUT"], &["*"]),
        ];
        assert!(matching(&rules, "https://cdn.example.com", "GET", &["Range"]).is_some());
        assert!(matching(&rules, "https://example.com", "GET", &[]).is_none());
        assert!(matching(&rules, "https://cdn.example.com", "PUT", &[]).is_none());
        assert!(matching(&rules, "https://cdn.example.com", "GET", &["x-custom"]).is_none());
        assert!(matching(&rules, "https://app.test", "PUT", &["x-custom"]).is_some());
        assert!(matching(&rules, "https://evil.test", "GET", &[]).is_none());
        let amz = [rule(&["*"], &["PUT"], &["x-amz-*", "Content-Type"])];
        assert!(
            matching(
                &amz,
                "https://a.test",
                "PUT",
                &["X-Amz-Date", "content-type"]
            )
            .is_some()
        );
        assert!(matching(&amz, "https://a.test", "PUT", &["x-other"]).is_none());
        assert!(matching(&amz, "https://a.test", "PUT", &["x-am"]).is_none());
    }

    #[test]
    fn an_open_rule_says_any_origin_and_a_named_one_grants_credentials() {
        let answer = |rule: &CorsRule, signed: bool| {
            let mut headers = HeaderMap::new();
            rule.allow_origin("https://app.test", signed, &mut headers);
            let value = |name| headers.get(name).and_then(|v| v.to_str().ok());
            (
                value("access-control-allow-origin").map(str::to_owned),
                value("access-control-allow-credentials").map(str::to_owned),
            )
        };
        let allowed = |rule: &CorsRule| answer(rule, false);
        let open = rule(&["https://x.test", "*"], &["GET"], &[]);
        assert_eq!(allowed(&open), (Some("*".into()), None));
        // A signed request gets its origin named, with credentials.
        assert_eq!(
            answer(&open, true),
            (Some("https://app.test".into()), Some("true".into()))
        );
        let named = rule(&["https://*.test"], &["GET"], &[]);
        assert_eq!(
            allowed(&named),
            (Some("https://app.test".into()), Some("true".into()))
        );
        let swift = CorsRule {
            from_swift: true,
            ..named
        };
        assert_eq!(allowed(&swift), (Some("https://app.test".into()), None));
    }
}
