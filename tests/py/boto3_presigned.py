"""Presigned URLs made by boto3 and used by a plain HTTP client (urllib, no
AWS code): GET and PUT work, a PUT without a Content-Length is refused, and a
tampered, expired or re-targeted URL is refused with an S3 XML error.

usage: boto3_presigned.py BUCKET
"""

from http.client import HTTPConnection
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from strata_env import check, client, run


def http(method, url, data=None, headers=None):
    """(status, body, headers) of a request made with urllib only."""
    headers = dict(headers or {})
    if data is not None:
        # urllib would label the body application/x-www-form-urlencoded.
        headers.setdefault("Content-Type", "application/octet-stream")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def expect_refused(url, method, codes, what, data=None):
    status, body, headers = http(method, url, data=data)
    text = body.decode("utf-8", "replace")
    check(status == 403, f"{what}: expected HTTP 403, got {status}: {text[:500]}")
    check("<Error>" in text, f"{what}: the 403 has no S3 XML error body: {text[:500]}")
    check(
        any(f"<Code>{code}</Code>" in text for code in codes),
        f"{what}: expected error {codes}: {text[:500]}",
    )
    check(headers.get("x-amz-request-id"), f"{what}: no x-amz-request-id header")


def main(args):
    (bucket,) = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)

    for key in ["presigned/plain.bin", "presigned/dir with space/ü+plus&amp=.bin"]:
        body = os.urandom(100_000)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600
        )
        status, data, headers = http("GET", url)
        check(status == 200, f"presigned GET {key}: HTTP {status}: {data[:300]!r}")
        check(data == body, f"presigned GET {key}: content differs")

        # The same signature must not open another key.
        other_key = key + ".other"
        s3.put_object(Bucket=bucket, Key=other_key, Body=b"other")
        parsed = urllib.parse.urlsplit(url)
        retargeted = parsed._replace(path=parsed.path + urllib.parse.quote(".other")).geturl()
        expect_refused(retargeted, "GET", ["SignatureDoesNotMatch", "AccessDenied"], "retargeted URL")

    # Presigned PUT: upload with urllib, read back with boto3.
    put_key = "presigned/uploaded.bin"
    put_body = os.urandom(300_000)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": put_key}, ExpiresIn=600
    )
    status, data, _ = http("PUT", url, data=put_body)
    check(status == 200, f"presigned PUT: HTTP {status}: {data[:300]!r}")
    got = s3.get_object(Bucket=bucket, Key=put_key)["Body"].read()
    check(got == put_body, "object uploaded through a presigned PUT differs")

    # A PUT without a body or a Content-Length is refused (411), not stored
    # empty; http.client sends exactly the headers it is given.
    bare_key = "presigned/bare.bin"
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": bare_key}, ExpiresIn=600
    )
    parts = urllib.parse.urlsplit(url)
    connection = HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
    connection.endheaders()
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    check(
        response.status == 411 and "<Code>MissingContentLength</Code>" in text,
        f"PUT without Content-Length: HTTP {response.status}: {text[:300]}",
    )
    connection.close()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=bare_key).get("KeyCount")
    check(listed == 0, "a PUT without Content-Length stored an object")

    # A signed Content-Type must be sent as signed and is then stored.
    typed_key = "presigned/typed.json"
    url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": typed_key, "ContentType": "application/json"},
        ExpiresIn=600,
    )
    status, data, _ = http("PUT", url, data=b"{}", headers={"Content-Type": "application/json"})
    check(status == 200, f"presigned PUT with Content-Type: HTTP {status}: {data[:300]!r}")
    head = s3.head_object(Bucket=bucket, Key=typed_key)
    check(head["ContentType"] == "application/json", f"stored Content-Type {head['ContentType']}")

    # Tampered signature.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "presigned/plain.bin"}, ExpiresIn=600
    )
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    signature = query["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = url.replace(f"X-Amz-Signature={signature}", f"X-Amz-Signature={flipped}")
    expect_refused(tampered, "GET", ["SignatureDoesNotMatch"], "tampered signature")

    # Presigned GET used for a PUT (method is part of the signature).
    expect_refused(url, "PUT", ["SignatureDoesNotMatch", "AccessDenied"], "GET URL used for PUT", b"x")
    size = s3.head_object(Bucket=bucket, Key="presigned/plain.bin")["ContentLength"]
    check(size == 100_000, f"a refused PUT changed the object: it now has {size} bytes")

    # Expired.
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "presigned/plain.bin"}, ExpiresIn=1
    )
    time.sleep(2.5)
    expect_refused(url, "GET", ["AccessDenied"], "expired URL")


if __name__ == "__main__":
    run(main)
