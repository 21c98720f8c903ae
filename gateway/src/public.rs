//! Who may read without credentials: the one decision the S3 door, the
//! Swift door and the edge cache share, from a bucket's settings as each
//! door stores them in `BucketInfo::attrs`.
//!
//! A bucket's objects are public when its Swift read ACL lets an anonymous
//! referrer in (`.r:*`, `.r:host`), when its S3 canned ACL is `public-read`,
//! or when its S3 bucket policy grants `s3:GetObject` to everyone on the
//! key. Listings are public with `.r:…` plus `.rlistings`, or `public-read`.
//! Everything else is private.

use serde::Deserialize;
use serde_json::Value;
use strata_auth::{ContainerAcl, read_decision};
use strata_store::BucketInfo;

/// Swift's `X-Container-Read`, canonical form.
pub const ATTR_SWIFT_READ: &str = "swift:read";
/// Swift's `X-Container-Write`, canonical form.
pub const ATTR_SWIFT_WRITE: &str = "swift:write";
/// The S3 canned ACL, when not `private`: only `public-read`.
pub const ATTR_S3_ACL: &str = "s3:acl";
/// The S3 bucket policy document, as the client sent it (validated).
pub const ATTR_S3_POLICY: &str = "s3:policy";

pub const PUBLIC_READ: &str = "public-read";

/// May anyone read `key` of `bucket`, coming from `referrer`?
pub fn anonymous_object_read(
    bucket: &BucketInfo,
    key: Option<&str>,
    referrer: Option<&str>,
) -> bool {
    if is_public_read(bucket) {
        return true;
    }
    if let (Some(key), Some(policy)) = (key, bucket.attrs.get(ATTR_S3_POLICY))
        && PublicPolicy::parse(&bucket.name, policy).is_ok_and(|policy| policy.allows(key))
    {
        return true;
    }
    with_swift_read_acl(bucket, |acl| {
        read_decision(acl, &bucket.account, None, referrer, false).allowed
    })
}

/// May anyone list `bucket`, coming from `referrer`?
pub fn anonymous_listing(bucket: &BucketInfo, referrer: Option<&str>) -> bool {
    is_public_read(bucket)
        || with_swift_read_acl(bucket, |acl| {
            read_decision(acl, &bucket.account, None, referrer, true).allowed
        })
}

/// Calls `f` with the stored Swift read ACL, parsed (one that no longer
/// parses grants nothing). Anonymous reads need it on every request and
/// most containers carry one of a few short ACLs, so each thread keeps the
/// last one it parsed.
fn with_swift_read_acl<R>(bucket: &BucketInfo, f: impl FnOnce(&ContainerAcl) -> R) -> R {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, ContainerAcl)>> =
            const { std::cell::RefCell::new(None) };
    }
    let Some(text) = bucket.attrs.get(ATTR_SWIFT_READ) else {
        return f(&ContainerAcl::default());
    };
    let parse = || ContainerAcl::parse_read(text).unwrap_or_default();
    LAST.with_borrow_mut(|last| {
        let (seen, acl) = last.get_or_insert_with(|| (text.clone(), parse()));
        if seen != text {
            (*seen, *acl) = (text.clone(), parse());
        }
        f(acl)
    })
}

/// Adds `Vary: Referer` when whether anyone may read `bucket` depends on
/// the Referer sent (Swift's `.r:example.com`, `.r:-bad.example`): a
/// shared cache in front (a CDN) must not hand an answer given for one
/// referrer to another, or hotlink protection is undone.
pub fn vary_by_referrer(bucket: &BucketInfo, response: &mut http::HeaderMap) {
    // On every public hit: the cheap test first (most ACLs are `.r:*`;
    // none parses as granting nothing).
    let depends = with_swift_read_acl(bucket, |acl| {
        acl.referrers.iter().any(|referrer| referrer != "*")
    }) && !is_public_read(bucket);
    if depends {
        response.append(
            http::header::VARY,
            http::HeaderValue::from_static("Referer"),
        );
    }
}

pub fn is_public_read(bucket: &BucketInfo) -> bool {
    bucket.attrs.get(ATTR_S3_ACL).map(String::as_str) == Some(PUBLIC_READ)
}

/// The part of the S3 policy language strata accepts: statements that
/// allow `s3:GetObject` to everyone (`"Principal": "*"` or
/// `{"AWS": "*"}`) on `arn:aws:s3:::bucket/<prefix>*` or on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicPolicy {
    /// Resource patterns within the bucket: a key, or a prefix ending in `*`.
    resources: Vec<String>,
}

#[derive(Deserialize)]
struct PolicyDocument {
    #[serde(rename = "Statement")]
    statement: Value,
}

impl PublicPolicy {
    /// Parses a policy for `bucket`; anything outside the subset is refused
    /// with the reason, so that no policy is stored that means more than
    /// strata enforces.
    pub fn parse(bucket: &str, text: &str) -> Result<PublicPolicy, String> {
        let document: PolicyDocument = serde_json::from_str(text)
            .map_err(|err| format!("Policies must be valid JSON: {err}"))?;
        let statements = match document.statement {
            Value::Array(statements) => statements,
            statement @ Value::Object(_) => vec![statement],
            _ => return Err("Statement must be an object or a list of them".into()),
        };
        if statements.is_empty() {
            return Err("The policy has no statement".into());
        }
        let mut resources = Vec::new();
        for statement in &statements {
            // An element this subset does not know (NotResource, NotAction,
            // a misspelt Conditions) could narrow or widen the statement:
            // refused, never ignored.
            if let Some(unknown) = statement.as_object().and_then(|elements| {
                elements.keys().find(|name| {
                    !matches!(
                        name.as_str(),
                        "Sid"
                            | "Effect"
                            | "Principal"
                            | "Action"
                            | "Resource"
                            | "Condition"
                            | "NotPrincipal"
                    )
                })
            }) {
                return Err(format!("The statement element {unknown} is not supported"));
            }
            if statement.get("Effect").and_then(Value::as_str) != Some("Allow") {
                return Err("Only Allow statements are supported".into());
            }
            if statement.get("Condition").is_some() || statement.get("NotPrincipal").is_some() {
                return Err("Conditions and NotPrincipal are not supported".into());
            }
            let everyone = match statement.get("Principal") {
                Some(Value::String(principal)) => principal == "*",
                Some(Value::Object(principal)) => {
                    principal.len() == 1
                        && strings(principal.get("AWS")).is_some_and(|aws| aws == ["*"])
                }
                _ => false,
            };
            if !everyone {
                return Err("Only statements for every principal (\"*\") are supported".into());
            }
            let actions = strings(statement.get("Action"))
                .ok_or_else(|| "Action must be a string or a list of them".to_owned())?;
            if actions.is_empty() || actions.iter().any(|action| action != "s3:GetObject") {
                return Err("Only the s3:GetObject action is supported".into());
            }
            let arn_prefix = format!("arn:aws:s3:::{bucket}/");
            for resource in strings(statement.get("Resource"))
                .ok_or_else(|| "Resource must be a string or a list of them".to_owned())?
            {
                let pattern = resource.strip_prefix(&arn_prefix).ok_or_else(|| {
                    format!("Resource {resource} is not an object of this bucket")
                })?;
                if pattern.trim_end_matches('*').contains(['*', '?']) {
                    return Err(format!(
                        "Resource {resource}: only a trailing * is supported"
                    ));
                }
                resources.push(pattern.to_owned());
            }
        }
        Ok(PublicPolicy { resources })
    }

    pub fn allows(&self, key: &str) -> bool {
        self.resources
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == pattern,
            })
    }
}

fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::String(text) => Some(vec![text.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(statement: &str) -> Result<PublicPolicy, String> {
        PublicPolicy::parse(
            "site",
            &format!(r#"{{"Version": "2012-10-17", "Statement": [{statement}]}}"#),
        )
    }

    #[test]
    fn the_public_read_subset_parses_and_matches() {
        let public = policy(
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"}"#,
        )
        .unwrap();
        assert!(public.allows("index.html") && public.allows("a/b"));
        let prefixed = policy(
            r#"{"Effect": "Allow", "Principal": {"AWS": ["*"]}, "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::site/img/*", "arn:aws:s3:::site/robots.txt"]}"#,
        )
        .unwrap();
        assert!(prefixed.allows("img/logo.gif") && prefixed.allows("robots.txt"));
        assert!(!prefixed.allows("private/x") && !prefixed.allows("robots.txt.bak"));
    }

    #[test]
    fn anything_broader_is_refused() {
        for statement in [
            r#"{"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"}"#,
            r#"{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "arn:aws:s3:::site/*"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::site/*"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*.gif"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*", "Condition": {}}"#,
            // Elements the subset does not know are refused, not ignored.
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*", "NotResource": "arn:aws:s3:::site/private/*"}"#,
            r#"{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*", "Conditions": {}}"#,
        ] {
            assert!(policy(statement).is_err(), "{statement}");
        }
        assert!(PublicPolicy::parse("site", "{not json").is_err());
        assert!(PublicPolicy::parse("site", r#"{"Statement": []}"#).is_err());
    }
}
