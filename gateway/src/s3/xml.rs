//! S3 XML: a small writer for responses, and serde shapes of the request bodies.

use serde::Deserialize;

use super::error::{S3Error, S3Result};
pub use crate::xml_writer::XmlWriter;

const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// A response document whose root element carries the S3 namespace.
pub fn document(root: &'static str) -> XmlWriter {
    XmlWriter::with_attributes(root, &[("xmlns", S3_NAMESPACE)])
}

/// Parses a request body, turning any failure into `MalformedXML`.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> S3Result<T> {
    let text = std::str::from_utf8(body).map_err(|_| S3Error::malformed_xml())?;
    quick_xml::de::from_str(text).map_err(|err| {
        tracing::debug!(error = %err, "malformed XML body");
        S3Error::malformed_xml()
    })
}

/// Whether the document's root element is `name`, namespace prefix aside:
/// serde does not look at the root's name, and a body meant for another
/// sub-resource must not pass for this one.
pub fn root_is(body: &[u8], name: &str) -> bool {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut buffer = Vec::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(element) | Event::Empty(element)) => {
                return element.local_name().as_ref() == name.as_bytes();
            }
            Ok(Event::Eof) | Err(_) => return false,
            Ok(_) => buffer.clear(),
        }
    }
}

/// `<Delete>` of DeleteObjects.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteRequest {
    #[serde(rename = "Object", default)]
    pub objects: Vec<DeleteObjectId>,
    #[serde(default)]
    pub quiet: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteObjectId {
    pub key: String,
    #[serde(default)]
    pub version_id: Option<String>,
}

/// `<CompleteMultipartUpload>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompleteRequest {
    #[serde(rename = "Part", default)]
    pub parts: Vec<CompletePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CompletePart {
    pub part_number: u32,
    #[serde(rename = "ETag")]
    pub etag: String,
}

/// `<AccessControlPolicy>` of PutBucketAcl.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessControlPolicy {
    pub access_control_list: AccessControlList,
}

#[derive(Debug, Deserialize)]
pub struct AccessControlList {
    #[serde(rename = "Grant", default)]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: String,
}

#[derive(Debug, Deserialize)]
pub struct Grantee {
    #[serde(rename = "URI", default)]
    pub uri: Option<String>,
}

/// `<CORSConfiguration>` of PutBucketCors.
#[derive(Debug, Deserialize)]
pub struct CorsConfiguration {
    #[serde(rename = "CORSRule", default)]
    pub rules: Vec<CorsRuleXml>,
}

#[derive(Debug, Deserialize)]
pub struct CorsRuleXml {
    #[serde(rename = "AllowedOrigin", default)]
    pub allowed_origins: Vec<String>,
    #[serde(rename = "AllowedMethod", default)]
    pub allowed_methods: Vec<String>,
    #[serde(rename = "AllowedHeader", default)]
    pub allowed_headers: Vec<String>,
    #[serde(rename = "ExposeHeader", default)]
    pub expose_headers: Vec<String>,
    #[serde(rename = "MaxAgeSeconds", default)]
    pub max_age_seconds: Option<u64>,
}

/// `<WebsiteConfiguration>` of PutBucketWebsite. The redirect forms are
/// only recognised, so that they can be refused by name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WebsiteConfiguration {
    #[serde(default)]
    pub index_document: Option<IndexDocument>,
    #[serde(default)]
    pub error_document: Option<ErrorDocument>,
    #[serde(default)]
    pub redirect_all_requests_to: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub routing_rules: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDocument {
    pub suffix: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorDocument {
    pub key: String,
}

/// `<CreateBucketConfiguration>`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateBucketConfiguration {
    #[serde(default)]
    pub location_constraint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_escapes_and_closes() {
        let mut xml = document("ListAllMyBucketsResult");
        xml.open("Buckets").open("Bucket").element("Name", "a<b&c");
        let text = xml.finish();
        assert!(text.ends_with(
            "<Buckets><Bucket><Name>a&lt;b&amp;c</Name></Bucket></Buckets></ListAllMyBucketsResult>"
        ));
    }

    #[test]
    fn request_bodies_parse() {
        let delete: DeleteRequest = parse(
            br#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a b</Key></Object><Object><Key>c&amp;d</Key><VersionId>null</VersionId></Object><Quiet>true</Quiet></Delete>"#,
        )
        .unwrap();
        assert!(delete.quiet);
        assert_eq!(delete.objects.len(), 2);
        assert_eq!(delete.objects[1].key, "c&d");

        let complete: CompleteRequest = parse(
            br#"<CompleteMultipartUpload><Part><ETag>"abc"</ETag><PartNumber>1</PartNumber><ChecksumCRC32>x</ChecksumCRC32></Part></CompleteMultipartUpload>"#,
        )
        .unwrap();
        assert_eq!(complete.parts[0].part_number, 1);
        assert_eq!(complete.parts[0].etag, "\"abc\"");

        assert!(parse::<DeleteRequest>(b"<Delete><Object><Key>").is_err());
        assert!(parse::<CompleteRequest>(b"not xml").is_err());
    }

    /// A list's elements need not be adjacent: S3 takes a rule's origins and
    /// methods in any order, and a Quiet between the Objects.
    #[test]
    fn lists_may_be_interleaved_with_other_elements() {
        let cors: CorsConfiguration = parse(
            b"<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin>\
              <AllowedMethod>GET</AllowedMethod><AllowedOrigin>https://b.example</AllowedOrigin>\
              <AllowedHeader>x-a</AllowedHeader><AllowedMethod>PUT</AllowedMethod>\
              <AllowedHeader>x-b</AllowedHeader></CORSRule></CORSConfiguration>",
        )
        .unwrap();
        let rule = &cors.rules[0];
        assert_eq!(
            rule.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(rule.allowed_methods, ["GET", "PUT"]);
        assert_eq!(rule.allowed_headers, ["x-a", "x-b"]);

        let delete: DeleteRequest = parse(
            b"<Delete><Object><Key>a</Key></Object><Quiet>true</Quiet>\
              <Object><Key>b</Key></Object></Delete>",
        )
        .unwrap();
        assert!(delete.quiet);
        let keys: Vec<_> = delete.objects.iter().map(|object| &object.key).collect();
        assert_eq!(keys, ["a", "b"]);
    }
}
