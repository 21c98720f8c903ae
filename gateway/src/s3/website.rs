//! S3 static websites: Put/Get/DeleteBucketWebsite, and what anonymous
//! visitors of a bucket with a website configuration get (the model is
//! `crate::website`). S3 serves websites from a separate endpoint; strata
//! serves them to anonymous GET/HEAD on every URL form of the bucket, and
//! signed requests keep the REST answers.

use crate::wire::RequestBody;
use http::{HeaderMap, StatusCode};
use strata_store::{BucketInfo, BucketPin, StoreError};

use super::body::read_small_body;
use super::error::{S3Error, S3Result};
use super::headers::header_str;
use super::router::{Query, S3Op};
use super::xml::{self, WebsiteConfiguration};
use super::{Response, S3Door, S3Request, empty_response, xml_response};
use crate::public;
use crate::website::{ATTR_S3_WEBSITE, WebsiteConfig, redirect_to_directory};

/// ListObjects parameters: a request of the bucket root that carries one
/// is a listing, not a visit of the site's home page.
const LISTING_PARAMETERS: [&str; 5] =
    ["prefix", "delimiter", "marker", "max-keys", "encoding-type"];

impl S3Door {
    pub(crate) async fn put_bucket_website(
        &self,
        request: &S3Request,
        body: RequestBody,
    ) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        let document = read_small_body(request, body, self.limits.max_xml_body).await?;
        let config = website_config(&document)?;
        let encoded = serde_json::to_string(&config).map_err(|_| S3Error::internal())?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), move |bucket| {
                bucket
                    .attrs
                    .insert(ATTR_S3_WEBSITE.to_owned(), encoded.clone());
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::OK))
    }

    pub(crate) async fn get_bucket_website(&self, request: &S3Request) -> S3Result<Response> {
        let info = self.owned_bucket(request).await?;
        let config = WebsiteConfig::of(&info).ok_or_else(|| {
            S3Error::new(
                "NoSuchWebsiteConfiguration",
                StatusCode::NOT_FOUND,
                "The specified bucket does not have a website configuration",
            )
            .with_extra("BucketName", &request.bucket)
        })?;
        let mut xml = xml::document("WebsiteConfiguration");
        xml.open("IndexDocument")
            .element("Suffix", &config.index_suffix)
            .close();
        if let Some(key) = &config.error_key {
            xml.open("ErrorDocument").element("Key", key).close();
        }
        Ok(xml_response(StatusCode::OK, xml.finish()))
    }

    pub(crate) async fn delete_bucket_website(&self, request: &S3Request) -> S3Result<Response> {
        let bucket = self.owned_bucket(request).await?;
        self.store
            .update_bucket_pinned(&request.bucket, BucketPin::of(&bucket), |bucket| {
                bucket.attrs.remove(ATTR_S3_WEBSITE);
                Ok(())
            })
            .await?;
        Ok(empty_response(StatusCode::NO_CONTENT))
    }

    /// An anonymous request as the visitor of a website sees it: the index
    /// document for the bucket root and every `dir/`, a redirect from `dir`
    /// to `dir/` where `dir/<index>` exists, the error document for what is
    /// not found. `None` when the bucket has no website configuration or
    /// the request is no page read (a listing with parameters, a write):
    /// the API then answers as usual.
    pub(crate) async fn website_read(&self, request: &S3Request) -> S3Result<Option<Response>> {
        let head = match request.op {
            S3Op::GetObject => false,
            S3Op::HeadObject | S3Op::HeadBucket => true,
            S3Op::ListObjects
                if !LISTING_PARAMETERS
                    .iter()
                    .any(|name| request.query.has(name)) =>
            {
                false
            }
            _ => return Ok(None),
        };
        let Some(bucket) = self.edge.bucket(&self.store, &request.bucket).await? else {
            return Ok(None);
        };
        let Some(site) = WebsiteConfig::of(&bucket) else {
            return Ok(None);
        };
        let answer = if request.key.is_empty() || request.key.ends_with('/') {
            let index = site.index_key(&request.key);
            // `/bucket` in path style is a directory without its slash: the
            // index document's relative links need `/bucket/`. Only for
            // visitors who may read it, so that private buckets tell nothing.
            if request.key.is_empty()
                && !request.path_as_sent.ends_with('/')
                && public::anonymous_object_read(
                    &bucket,
                    Some(&index),
                    header_str(&request.headers, "referer"),
                )
                && let Some(redirect) = redirect_to_directory(&request.path_as_sent)
            {
                return Ok(Some(redirect));
            }
            self.website_document(request, index, request.headers.clone(), head)
                .await
        } else {
            match self.get_object(request, head).await {
                // A name the visitor may not read can still be a public
                // directory (a policy on `docs/*` does not cover `docs`).
                Err(err) if matches!(err.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN) => {
                    if self.is_website_directory(&bucket, &site, request).await?
                        && let Some(redirect) = redirect_to_directory(&request.path_as_sent)
                    {
                        return Ok(Some(redirect));
                    }
                    Err(err)
                }
                answer => answer,
            }
        };
        // As S3's website endpoints: the error document stands in for the
        // pages a visitor cannot see, missing or private.
        match (answer, &site.error_key) {
            (Err(err), Some(error_key))
                if matches!(err.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN) =>
            {
                self.website_error_document(request, error_key, err, head)
                    .await
                    .map(Some)
            }
            (answer, _) => answer.map(Some),
        }
    }

    /// The object `key` of the request's bucket, read as an anonymous
    /// GetObject/HeadObject with `headers`; the visitor's query string was
    /// about the page they asked for, not about this document.
    async fn website_document(
        &self,
        request: &S3Request,
        key: String,
        headers: HeaderMap,
        head: bool,
    ) -> S3Result<Response> {
        // `dir/` + suffix may pass the key length limit: then it is no page.
        if strata_store::validate_key(&key).is_err() {
            return Err(StoreError::NoSuchKey.into());
        }
        let document = S3Request {
            op: if head {
                S3Op::HeadObject
            } else {
                S3Op::GetObject
            },
            headers,
            query: Query::default(),
            bucket: request.bucket.clone(),
            key,
            path_as_sent: request.path_as_sent.clone(),
            credential: None,
            payload: request.payload.clone(),
            origin: request.origin.clone(),
        };
        self.get_object(&document, head).await
    }

    /// The error document with the status of `err`, or `err` itself when
    /// the document is missing or not public.
    async fn website_error_document(
        &self,
        request: &S3Request,
        error_key: &str,
        err: S3Error,
        head: bool,
    ) -> S3Result<Response> {
        // The visitor's conditions and range were about the missing page;
        // only the referrer still decides whether the document is public.
        let mut headers = HeaderMap::new();
        if let Some(referrer) = request.headers.get(http::header::REFERER) {
            headers.insert(http::header::REFERER, referrer.clone());
        }
        match self
            .website_document(request, error_key.to_owned(), headers, head)
            .await
        {
            Ok(mut response) if response.status() == StatusCode::OK => {
                *response.status_mut() = err.status;
                Ok(response)
            }
            _ => Err(err),
        }
    }

    /// Whether the request's key names a directory of the site: its index
    /// document exists and the visitor may read it.
    async fn is_website_directory(
        &self,
        bucket: &BucketInfo,
        site: &WebsiteConfig,
        request: &S3Request,
    ) -> S3Result<bool> {
        let index = site.directory_index_key(&request.key);
        let referrer = header_str(&request.headers, "referer");
        if strata_store::validate_key(&index).is_err()
            || !public::anonymous_object_read(bucket, Some(&index), referrer)
        {
            return Ok(false);
        }
        match self.store.head_object(&request.bucket, &index).await {
            Ok(_) => Ok(true),
            Err(StoreError::NoSuchKey | StoreError::NoSuchBucket) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }
}

/// The configuration a PutBucketWebsite body asks for, validated as S3
/// validates it; the redirect forms are refused as not implemented.
fn website_config(document: &[u8]) -> S3Result<WebsiteConfig> {
    if !xml::root_is(document, "WebsiteConfiguration") {
        return Err(S3Error::malformed_xml());
    }
    let parsed: WebsiteConfiguration = xml::parse(document)?;
    if parsed.redirect_all_requests_to.is_some() {
        return Err(S3Error::not_implemented(
            "RedirectAllRequestsTo in a website configuration",
        ));
    }
    if parsed.routing_rules.is_some() {
        return Err(S3Error::not_implemented(
            "RoutingRules in a website configuration",
        ));
    }
    let Some(index) = parsed.index_document else {
        return Err(S3Error::invalid_argument(
            "A value for IndexDocument Suffix must be provided if RedirectAllRequestsTo is empty",
        )
        .with_extra("ArgumentName", "IndexDocument"));
    };
    let suffix = index.suffix;
    if suffix.is_empty() || suffix.contains('/') || strata_store::validate_key(&suffix).is_err() {
        return Err(
            S3Error::invalid_argument("The IndexDocument Suffix is not well formed")
                .with_extra("ArgumentName", "IndexDocument")
                .with_extra("ArgumentValue", suffix),
        );
    }
    let error_key = match parsed.error_document {
        None => None,
        Some(error) if error.key.is_empty() || strata_store::validate_key(&error.key).is_err() => {
            return Err(
                S3Error::invalid_argument("The ErrorDocument Key is not well formed")
                    .with_extra("ArgumentName", "ErrorDocument")
                    .with_extra("ArgumentValue", error.key),
            );
        }
        Some(error) => Some(error.key),
    };
    Ok(WebsiteConfig {
        index_suffix: suffix,
        error_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` is the inside of `<WebsiteConfiguration>`; `expected` the
    /// stored configuration or the S3 error code.
    fn check(body: &str, expected: Result<(&str, Option<&str>), &str>) {
        let document = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<WebsiteConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{body}</WebsiteConfiguration>"#
        );
        check_document(&document, expected);
    }

    fn check_document(document: &str, expected: Result<(&str, Option<&str>), &str>) {
        let got = website_config(document.as_bytes()).map_err(|err| err.code);
        let expected = expected.map(|(suffix, error)| WebsiteConfig {
            index_suffix: suffix.to_owned(),
            error_key: error.map(str::to_owned),
        });
        assert_eq!(got, expected, "{document}");
    }

    #[test]
    fn index_and_error_documents_parse() {
        check(
            "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>",
            Ok(("index.html", None)),
        );
        check(
            "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>\
             <ErrorDocument><Key>errors/4xx.html</Key></ErrorDocument>",
            Ok(("index.html", Some("errors/4xx.html"))),
        );
        // The order of the elements is free, and escapes are decoded.
        check(
            "<ErrorDocument><Key>a&amp;b.html</Key></ErrorDocument>\
             <IndexDocument><Suffix>home.htm</Suffix></IndexDocument>",
            Ok(("home.htm", Some("a&b.html"))),
        );
    }

    #[test]
    fn invalid_configurations_are_refused_as_s3_does() {
        check(
            "<IndexDocument><Suffix></Suffix></IndexDocument>",
            Err("InvalidArgument"),
        );
        check(
            "<IndexDocument><Suffix/></IndexDocument>",
            Err("InvalidArgument"),
        );
        check(
            "<IndexDocument><Suffix>pages/index.html</Suffix></IndexDocument>",
            Err("InvalidArgument"),
        );
        check(
            "<ErrorDocument><Key>error.html</Key></ErrorDocument>",
            Err("InvalidArgument"),
        );
        check(
            "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>\
             <ErrorDocument><Key></Key></ErrorDocument>",
            Err("InvalidArgument"),
        );
        check("", Err("InvalidArgument"));
    }

    #[test]
    fn redirects_are_not_implemented() {
        check(
            "<RedirectAllRequestsTo><HostName>example.com</HostName></RedirectAllRequestsTo>",
            Err("NotImplemented"),
        );
        check(
            "<IndexDocument><Suffix>index.html</Suffix></IndexDocument>\
             <RoutingRules><RoutingRule><Redirect><ReplaceKeyPrefixWith>docs/</ReplaceKeyPrefixWith></Redirect></RoutingRule></RoutingRules>",
            Err("NotImplemented"),
        );
    }

    #[test]
    fn malformed_documents_are_malformed_xml() {
        check_document("", Err("MalformedXML"));
        check_document("not xml", Err("MalformedXML"));
        check_document(
            "<WebsiteConfiguration><IndexDocument><Suffix>index.html</Suffix>",
            Err("MalformedXML"),
        );
        check_document(
            "<CORSConfiguration><IndexDocument><Suffix>index.html</Suffix></IndexDocument></CORSConfiguration>",
            Err("MalformedXML"),
        );
        check(
            "<IndexDocument><Name>index.html</Name></IndexDocument>",
            Err("MalformedXML"),
        );
    }
}
