"""boto3's managed transfers: upload_file of 20 MiB (multipart, 8 MiB parts,
checksums as the installed version sends them), upload_fileobj with 5 MiB
parts, and download_file (parallel ranged GETs), all compared by SHA-256.

usage: boto3_upload_file.py BUCKET WORKDIR
"""

import hashlib
import io
import os

from boto3.s3.transfer import TransferConfig

from strata_env import check, client, run

MIB = 1024 * 1024


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def main(args):
    bucket, workdir = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)

    source = os.path.join(workdir, "upload-20MiB.bin")
    with open(source, "wb") as file:
        file.write(os.urandom(20 * MIB))
    source_sha = sha256_file(source)

    # Default TransferConfig: threshold and part size 8 MiB -> 8 + 8 + 4.
    s3.upload_file(source, bucket, "big/upload_file.bin")
    head = s3.head_object(Bucket=bucket, Key="big/upload_file.bin")
    check(head["ContentLength"] == 20 * MIB, f"upload_file: size {head['ContentLength']}")
    check(head["ETag"].endswith('-3"'), f"upload_file: ETag {head['ETag']} is not a 3-part ETag")

    target = os.path.join(workdir, "download.bin")
    s3.download_file(bucket, "big/upload_file.bin", target)
    check(sha256_file(target) == source_sha, "download_file: content differs from upload_file")

    # A range across the first part boundary.
    start, end = 8 * MIB - 100, 8 * MIB + 99
    ranged = s3.get_object(Bucket=bucket, Key="big/upload_file.bin", Range=f"bytes={start}-{end}")
    with open(source, "rb") as file:
        file.seek(start)
        expected = file.read(end - start + 1)
    check(ranged["Body"].read() == expected, "ranged GET across a part boundary differs")
    check(
        ranged["ContentRange"] == f"bytes {start}-{end}/{20 * MIB}",
        f"Content-Range {ranged['ContentRange']}",
    )

    # upload_fileobj from memory with 5 MiB parts: 5 + 5 + 5 + 5 + 1 byte.
    body = os.urandom(20 * MIB + 1)
    config = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    s3.upload_fileobj(io.BytesIO(body), bucket, "big/upload_fileobj.bin", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/upload_fileobj.bin")
    check(head["ETag"].endswith('-5"'), f"upload_fileobj: ETag {head['ETag']} is not a 5-part ETag")
    downloaded = io.BytesIO()
    s3.download_fileobj(bucket, "big/upload_fileobj.bin", downloaded, Config=config)
    check(downloaded.getvalue() == body, "download_fileobj: content differs from upload_fileobj")

    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    check(not uploads, f"completed uploads are still listed as in progress: {uploads}")

    # botocore sends `Expect: 100-continue` with every file-like body, even an
    # empty one. An empty body may be answered without a 100 Continue, and
    # botocore then keeps that early status on the pooled connection: the next
    # upload on it read its real answer as headers and waited for the server
    # to close (how `aws s3 sync` lost a part of a tree holding an empty file).
    quick = client(read_timeout=10)
    for turn in range(3):
        empty = quick.put_object(Bucket=bucket, Key=f"empty/{turn}", Body=io.BytesIO(b""))
        check("ETag" in empty, f"empty upload {turn}: no ETag in {empty}")
        after = quick.put_object(
            Bucket=bucket, Key=f"after-empty/{turn}", Body=io.BytesIO(os.urandom(300_000))
        )
        check("ETag" in after, f"upload after an empty one ({turn}): no ETag in {after}")


if __name__ == "__main__":
    run(main)
