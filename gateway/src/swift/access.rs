//! Who is calling (a token's user, a TempURL, or nobody) and what they may do:
//! the owning account's roles first, then the container's ACLs, as Swift's
//! tempauth and tempurl middlewares decide.

use http::HeaderMap;
use strata_auth::{
    ContainerAcl, Decision, Principal, TempUrlParams, read_decision, verify_temp_url,
    write_decision,
};
use strata_store::BucketInfo;

use super::error::{SwiftError, SwiftResult};
use super::{ATTR_META_PREFIX, ATTR_READ_ACL, ATTR_WRITE_ACL, SwiftDoor, SwiftRequest};
use crate::directory::{Directory, STALE_PATIENCE};
use crate::public;
use crate::wire::{Query, header_str};

/// The identity a request carries.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Anonymous,
    User(Principal),
    /// A request with `temp_url_sig`; checked against the keys once the
    /// object's account and container are known.
    TempUrl,
}

/// What a request does to the account, container or object it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read objects.
    Read,
    /// List a container or an account, read container metadata.
    List,
    /// Write or delete objects.
    Write,
    /// Create, change or delete containers; change account metadata.
    Manage,
}

/// The token's user, or the way an unauthenticated request may still get in.
/// A token that does not verify is refused outright (401), as Swift does.
/// A token is judged by a current view only, as S3 keys are: a stale one
/// (a failover) is waited for a while, then the request is 503.
pub(crate) async fn authenticate(
    directory: &Directory,
    headers: &HeaderMap,
    query: &Query,
    now: u64,
) -> SwiftResult<Caller> {
    use crate::wire::names::{X_AUTH_TOKEN, X_STORAGE_TOKEN};
    let token = header_str(headers, X_AUTH_TOKEN).or_else(|| header_str(headers, X_STORAGE_TOKEN));
    if let Some(token) = token {
        let verify = || directory.verify_token(token, now);
        let judged = directory.judge_by_current(STALE_PATIENCE, verify, |_| true);
        return judged
            .await
            .ok_or_else(SwiftError::unavailable)?
            .map(Caller::User)
            .ok_or_else(SwiftError::unauthorized);
    }
    if query.has("temp_url_sig") {
        // Its keys are the account's metadata (and the container's): one
        // removed while the view is stale (a failover) must not pass. The
        // view is waited for here, as the token door waits; `authorize`,
        // which judges the signature after the container is read, refuses
        // it if the view went stale again meanwhile.
        if !directory.current_within(STALE_PATIENCE).await {
            return Err(SwiftError::unavailable());
        }
        return Ok(Caller::TempUrl);
    }
    Ok(Caller::Anonymous)
}

impl SwiftDoor {
    /// Refuses the request unless its caller may `access` the account, the
    /// container `bucket` (`None`: it does not exist, or the request is for
    /// the account), or its `object` — the one actually read, which is not
    /// the URL's for a large object's segments or a site's index and error
    /// pages: a bucket policy may make some keys public and not others.
    /// Refusals are 401 for callers without identity and 403 for users, so
    /// that nobody learns whether a container exists without being allowed
    /// to see it.
    pub(crate) fn authorize(
        &self,
        request: &SwiftRequest,
        bucket: Option<&BucketInfo>,
        object: Option<&str>,
        access: Access,
    ) -> SwiftResult<()> {
        // A TempURL's keys are read below: by a view that became stale
        // since `authenticate` waited for it (the calls in between may have
        // outlasted a failover), not at all.
        if matches!(request.caller, Caller::TempUrl) && !self.directory.is_current() {
            return Err(SwiftError::unavailable());
        }
        let owner = request.account.as_str();
        let referrer = request.header("referer");
        let decision = match &request.caller {
            Caller::User(principal) => match (access, bucket) {
                (Access::Manage, _) => decide(principal.administers(owner), "account admin"),
                (Access::Read | Access::List, None) => {
                    decide(principal.reads_account(owner), "user of the account")
                }
                (Access::Write, None) => {
                    decide(principal.writes_account(owner), "writer in the account")
                }
                (Access::Read | Access::List, Some(bucket)) => read_decision(
                    &acl(bucket, ATTR_READ_ACL),
                    owner,
                    Some(principal),
                    referrer,
                    access == Access::List,
                ),
                (Access::Write, Some(bucket)) => {
                    write_decision(&acl(bucket, ATTR_WRITE_ACL), owner, principal)
                }
            },
            Caller::Anonymous => match (access, bucket) {
                (Access::Read, Some(bucket)) => decide(
                    public::anonymous_object_read(bucket, object, referrer),
                    "public by the container's ACL or policy",
                ),
                (Access::List, Some(bucket)) => decide(
                    public::anonymous_listing(bucket, referrer),
                    "public listing",
                ),
                _ => Decision::deny("anonymous"),
            },
            Caller::TempUrl => self.temp_url_decision(request, bucket, object.is_none()),
        };
        if decision.allowed {
            return Ok(());
        }
        tracing::debug!(reason = decision.reason, ?access, "swift access denied");
        Err(match request.caller {
            Caller::User(_) => SwiftError::forbidden(),
            Caller::Anonymous | Caller::TempUrl => SwiftError::unauthorized(),
        })
    }

    fn temp_url_decision(
        &self,
        request: &SwiftRequest,
        bucket: Option<&BucketInfo>,
        container_level: bool,
    ) -> Decision {
        if container_level {
            return Decision::deny("TempURLs are for objects");
        }
        let (Some(sig), Some(expires)) = (
            request.query.get("temp_url_sig"),
            request.query.get("temp_url_expires"),
        ) else {
            return Decision::deny("TempURL without temp_url_expires");
        };
        let params = TempUrlParams {
            sig,
            expires,
            prefix: request.query.get("temp_url_prefix"),
        };
        let mut keys: Vec<String> = Vec::new();
        if let Some(account) = self.directory.account(&request.account) {
            keys.extend(temp_url_keys(|name| account.meta.get(name).cloned()));
        }
        if let Some(bucket) = bucket {
            keys.extend(temp_url_keys(|name| {
                bucket
                    .attrs
                    .get(&format!("{ATTR_META_PREFIX}{name}"))
                    .cloned()
            }));
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        // Clients sign the path either as sent or decoded; Swift's middleware
        // sees the decoded one.
        let decoded = percent_encoding::percent_decode_str(request.raw_path())
            .decode_utf8_lossy()
            .into_owned();
        let method = request.method.as_str();
        let outcome =
            verify_temp_url(method, &decoded, params, &keys, request.now).or_else(|err| {
                if decoded == request.raw_path() {
                    Err(err)
                } else {
                    verify_temp_url(method, request.raw_path(), params, &keys, request.now)
                }
            });
        match outcome {
            Ok(()) => Decision::allow("valid TempURL"),
            Err(err) => {
                tracing::debug!(error = %err, "TempURL refused");
                Decision::deny("TempURL refused")
            }
        }
    }
}

/// A TempURL is for its one object, and its signature is all the request
/// has: whatever would make it act on other objects is refused, since
/// every object the request touched would be granted by that signature. A
/// copy's source (`X-Copy-From`, `COPY`'s destination), a manifest made
/// here (`X-Object-Manifest`, as Swift refuses since CVE-2015-5223, or an
/// SLO's `multipart-manifest=put`: its segments could be any object of the
/// account, read back through a GET TempURL) and an SLO's segments
/// deleted with it. Reading a large object stored by its owner stays
/// allowed, as in Swift.
pub(crate) fn refuse_other_objects(request: &SwiftRequest) -> SwiftResult<()> {
    let refused = if request.method.as_str() == "COPY" || request.header("x-copy-from").is_some() {
        Some("A copy is")
    } else if request.header("x-object-manifest").is_some() {
        Some("X-Object-Manifest is")
    } else if matches!(
        request.query.get("multipart-manifest"),
        Some("put" | "delete")
    ) {
        Some("multipart-manifest=put or delete is")
    } else {
        None
    };
    match refused {
        Some(what) => Err(SwiftError::bad_request(format!(
            "{what} not allowed through a TempURL"
        ))),
        None => Ok(()),
    }
}

/// The ACL stored on a container; one that no longer parses grants nothing.
/// Whether `principal` may read in `bucket` without a token's other routes:
/// by their role in its account, or by a user grant of its read ACL
/// (referrer grants are for URLs, not users). FTP and large-object
/// segments read for a user decide by it.
pub(crate) fn user_reads(principal: &strata_auth::Principal, bucket: &BucketInfo) -> bool {
    principal.reads_account(&bucket.account) || acl(bucket, ATTR_READ_ACL).grants(principal)
}

/// The container's Swift ACL kept under `attr` (read or write); one that
/// no longer parses grants nothing. The FTP door decides by it too.
pub(crate) fn acl(bucket: &BucketInfo, attr: &str) -> ContainerAcl {
    let Some(text) = bucket.attrs.get(attr) else {
        return ContainerAcl::default();
    };
    let parsed = if attr == ATTR_WRITE_ACL {
        ContainerAcl::parse_write(text)
    } else {
        ContainerAcl::parse_read(text)
    };
    parsed.unwrap_or_default()
}

/// The metadata names (account or container) that hold TempURL keys: shown
/// only to the account's owners (Swift's `swift_owner_headers`), since
/// whoever knows one signs URLs for any method.
pub(crate) const TEMP_URL_KEY_NAMES: [&str; 2] = ["temp-url-key", "temp-url-key-2"];

/// Whether metadata `name` (without its `X-*-Meta-` prefix) is a TempURL key.
pub(crate) fn is_temp_url_key(name: &str) -> bool {
    TEMP_URL_KEY_NAMES
        .iter()
        .any(|key| key.eq_ignore_ascii_case(name))
}

/// Whether the caller administers the request's account, and so sees its
/// ACLs and TempURL keys.
pub(crate) fn is_owner(request: &SwiftRequest) -> bool {
    matches!(&request.caller, Caller::User(principal) if principal.administers(&request.account))
}

fn temp_url_keys(get: impl Fn(&str) -> Option<String>) -> impl Iterator<Item = String> {
    TEMP_URL_KEY_NAMES
        .into_iter()
        .filter_map(get)
        .filter(|key| !key.is_empty())
}

fn decide(allowed: bool, reason: &'static str) -> Decision {
    if allowed {
        Decision::allow(reason)
    } else {
        Decision::deny(reason)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;
    use crate::directory::tests::{open, root};

    /// A TempURL is judged by a current view only: while the view is stale
    /// (a failover) it waits, and once the view has been stale for longer
    /// than the patience it is refused (503) rather than checked against
    /// keys the stale view may still hold.
    #[tokio::test]
    async fn a_temp_url_is_judged_by_a_current_view_only() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (_store, directory) = open(dir.path(), &root()).await;
        let query = Query::parse(Some("temp_url_sig=00&temp_url_expires=1")).expect("query");
        let headers = HeaderMap::new();
        let caller = authenticate(&directory, &headers, &query, 0).now_or_never();
        assert!(matches!(caller, Some(Ok(Caller::TempUrl))), "{caller:?}");

        directory.mark_stale_for(Duration::ZERO);
        let waiting = authenticate(&directory, &headers, &query, 0).now_or_never();
        assert!(waiting.is_none(), "judged by a view just made stale");
        directory.mark_stale_for(STALE_PATIENCE + Duration::from_secs(1));
        let refused = authenticate(&directory, &headers, &query, 0).now_or_never();
        let status = refused.map(|caller| caller.map(|_| ()).map_err(|err| err.status));
        assert_eq!(status, Some(Err(http::StatusCode::SERVICE_UNAVAILABLE)));
    }

    /// `authorize`'s half: a TempURL that `authenticate` let in is judged by
    /// its keys while the view is current, and refused (503) by a view that
    /// went stale since (a failover while the container was read), which
    /// may still hold a key removed meanwhile.
    #[tokio::test]
    async fn a_temp_url_let_in_is_refused_by_a_view_gone_stale_since() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (store, directory) = open(dir.path(), &root()).await;
        let edge = crate::edge::EdgeCache::new(crate::edge::CacheConfig::default(), &store, None)
            .expect("edge cache");
        let door = SwiftDoor {
            store,
            directory: directory.clone(),
            limits: crate::config::Limits::default(),
            region: "r1".into(),
            edge,
        };
        let container = BucketInfo {
            name: "photos".into(),
            account: "admin".into(),
            created_ms: 0,
            region: "r1".into(),
            incarnation: 1,
            attrs: [(
                format!("{ATTR_META_PREFIX}temp-url-key"),
                "container key".to_owned(),
            )]
            .into(),
        };
        let (path, now) = ("/v1/AUTH_admin/photos/cat.jpg", 1_700_000_000);
        let expires = now + 600;
        let request = |key: &str| {
            let sig = strata_auth::sign_temp_url("GET", expires, path, key);
            let query = format!("temp_url_sig={sig}&temp_url_expires={expires}");
            SwiftRequest {
                method: http::Method::GET,
                headers: HeaderMap::new(),
                query: Query::parse(Some(&query)).expect("query"),
                uri: path.parse().expect("path"),
                rewritten_from: None,
                account: "admin".into(),
                target: super::super::Target::Object("photos".into(), "cat.jpg".into()),
                caller: Caller::TempUrl,
                now,
            }
        };
        let judged = |request: &SwiftRequest| {
            door.authorize(request, Some(&container), Some("cat.jpg"), Access::Read)
                .map_err(|err| err.status)
        };
        assert_eq!(judged(&request("container key")), Ok(()));
        assert_eq!(
            judged(&request("another key")),
            Err(http::StatusCode::UNAUTHORIZED)
        );
        directory.mark_stale_for(Duration::ZERO);
        assert_eq!(
            judged(&request("container key")),
            Err(http::StatusCode::SERVICE_UNAVAILABLE),
            "judged by a stale view"
        );
    }
}
