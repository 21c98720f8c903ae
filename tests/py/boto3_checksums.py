"""PutObject with every way boto3 sends a body and its checksum; each object
must read back byte-identical with its exact size (nothing of the aws-chunked
framing or trailer stored) and an MD5 ETag of the decoded content. Wrong
checksums must be refused without creating the object.

usage: boto3_checksums.py BUCKET
"""

import hashlib
import os
import zlib

from strata_env import (
    ClientError,
    b64,
    botocore,
    check,
    client,
    crc32c,
    expect_client_error,
    force_trailer_checksums,
    record_requests,
    run,
)

SIZES = [0, 1, 1000, 65536, 1024 * 1024, 3 * 1024 * 1024 + 7]


def verify(s3, bucket, key, body):
    what = f"{key} ({len(body)} bytes)"
    got = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    data = got["Body"].read()
    check(len(data) == len(body), f"{what}: read back {len(data)} bytes")
    check(data == body, f"{what}: content differs from what was written")
    check(got["ContentLength"] == len(body), f"{what}: GET Content-Length {got['ContentLength']}")
    expected_etag = f'"{hashlib.md5(body).hexdigest()}"'
    check(got["ETag"] == expected_etag, f"{what}: ETag {got['ETag']}, expected {expected_etag}")
    head = s3.head_object(Bucket=bucket, Key=key)
    check(head["ContentLength"] == len(body), f"{what}: HEAD Content-Length {head['ContentLength']}")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    sizes = [entry["Size"] for entry in listed if entry["Key"] == key]
    check(sizes == [len(body)], f"{what}: listed sizes {sizes}")


def last_put(sent):
    puts = [request for request in sent if request[0] == "PUT"]
    check(puts, "no PUT request was recorded")
    return puts[-1][2]


def describe(headers):
    parts = [
        f"{name}={headers[name]}"
        for name in sorted(headers)
        if name.startswith("x-amz-checksum")
        or name in ("content-encoding", "x-amz-trailer", "x-amz-content-sha256", "content-md5")
    ]
    return ", ".join(parts)


def main(args):
    (bucket,) = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)

    # 1. Whatever the installed boto3 does by default (over plain HTTP that is
    #    a signed payload with the checksum in a header).
    sent = record_requests(s3)
    for size in SIZES:
        body = os.urandom(size)
        key = f"default/{size}"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        verify(s3, bucket, key, body)
    print(f"default ({botocore.__version__}): {describe(last_put(sent))}")

    # 2. What boto3 >= 1.36 does over HTTPS: aws-chunked with a CRC trailer.
    chunked = force_trailer_checksums(client())
    chunked_sent = record_requests(chunked)
    for size in SIZES:
        body = os.urandom(size)
        key = f"aws-chunked/{size}"
        chunked.put_object(Bucket=bucket, Key=key, Body=body)
        headers = last_put(chunked_sent)
        check(
            "aws-chunked" in headers.get("content-encoding", ""),
            f"trailer mode did not send aws-chunked: {describe(headers)}",
        )
        check("x-amz-trailer" in headers, f"trailer mode sent no x-amz-trailer: {describe(headers)}")
        verify(s3, bucket, key, body)
        # The stored object must not claim the transfer encoding.
        head = s3.head_object(Bucket=bucket, Key=key)
        check(
            "aws-chunked" not in head.get("ContentEncoding", ""),
            f"{key}: Content-Encoding aws-chunked was stored: {head.get('ContentEncoding')}",
        )
    print(f"aws-chunked: {describe(last_put(chunked_sent))}")

    # 3. SHA256 chosen by the caller, in a header and in a trailer.
    for name, s3_client in (("header", s3), ("trailer", chunked)):
        body = os.urandom(200_000)
        key = f"sha256-{name}"
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
        verify(s3, bucket, key, body)

    # 4. CRC32C: botocore computes it only with awscrt installed; otherwise
    #    the script computes it and sends it in the header.
    body = os.urandom(300_000)
    try:
        s3.put_object(Bucket=bucket, Key="crc32c", Body=body, ChecksumAlgorithm="CRC32C")
        print("crc32c: computed by botocore (awscrt)")
    except botocore.exceptions.MissingDependencyException:
        s3.put_object(Bucket=bucket, Key="crc32c", Body=body, ChecksumCRC32C=b64(crc32c(body)))
        print("crc32c: computed by the script (no awscrt), sent as x-amz-checksum-crc32c")
    verify(s3, bucket, "crc32c", body)

    # 5. Explicit, correct checksum values the caller computed.
    body = os.urandom(50_000)
    s3.put_object(
        Bucket=bucket,
        Key="explicit-sha256",
        Body=body,
        ChecksumSHA256=b64(hashlib.sha256(body).digest()),
    )
    verify(s3, bucket, "explicit-sha256", body)
    s3.put_object(
        Bucket=bucket,
        Key="explicit-crc32",
        Body=body,
        ChecksumCRC32=b64(zlib.crc32(body).to_bytes(4, "big")),
    )
    verify(s3, bucket, "explicit-crc32", body)
    s3.put_object(
        Bucket=bucket,
        Key="explicit-md5",
        Body=body,
        ContentMD5=b64(hashlib.md5(body).digest()),
    )
    verify(s3, bucket, "explicit-md5", body)

    # 6. Wrong checksums: refused, and nothing is stored under the key.
    body = os.urandom(40_000)
    other = b"not the body"
    wrong_cases = [
        ("bad-md5", dict(ContentMD5=b64(hashlib.md5(other).digest())), {"BadDigest"}),
        (
            "bad-sha256",
            dict(ChecksumSHA256=b64(hashlib.sha256(other).digest())),
            {"BadDigest", "XAmzContentChecksumMismatch"},
        ),
        (
            "bad-crc32c",
            dict(ChecksumCRC32C=b64(crc32c(other))),
            {"BadDigest", "XAmzContentChecksumMismatch"},
        ),
        (
            "bad-crc32",
            dict(ChecksumCRC32=b64(zlib.crc32(other).to_bytes(4, "big"))),
            {"BadDigest", "XAmzContentChecksumMismatch"},
        ),
    ]
    for key, extra, codes in wrong_cases:
        expect_client_error(
            lambda: s3.put_object(Bucket=bucket, Key=key, Body=body, **extra),
            codes,
            status=400,
            what=f"PUT {key}",
        )
        try:
            s3.head_object(Bucket=bucket, Key=key)
            check(False, f"{key}: a PUT with a wrong checksum created the object")
        except ClientError as client_error:
            status = client_error.response["ResponseMetadata"]["HTTPStatusCode"]
            check(status == 404, f"{key}: HEAD after the refused PUT gave HTTP {status}")


if __name__ == "__main__":
    run(main)
