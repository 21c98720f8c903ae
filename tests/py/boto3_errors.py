"""S3 error codes as botocore parses them: every error carries the right code
and HTTP status, a message and a request id.

usage: boto3_errors.py BUCKET
"""

import os

from strata_env import check, client, expect_client_error, run


def main(args):
    (bucket,) = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="exists", Body=b"x")
    missing_bucket = bucket + "-missing"

    cases = [
        ("GetObject missing key", lambda: s3.get_object(Bucket=bucket, Key="nope"), "NoSuchKey", 404),
        ("GetObject missing bucket", lambda: s3.get_object(Bucket=missing_bucket, Key="k"), "NoSuchBucket", 404),
        ("PutObject missing bucket",
         lambda: s3.put_object(Bucket=missing_bucket, Key="k", Body=b"x"), "NoSuchBucket", 404),
        ("ListObjectsV2 missing bucket", lambda: s3.list_objects_v2(Bucket=missing_bucket), "NoSuchBucket", 404),
        ("DeleteBucket missing bucket", lambda: s3.delete_bucket(Bucket=missing_bucket), "NoSuchBucket", 404),
        ("DeleteBucket not empty", lambda: s3.delete_bucket(Bucket=bucket), "BucketNotEmpty", 409),
        ("UploadPart unknown upload",
         lambda: s3.upload_part(Bucket=bucket, Key="k", UploadId="no-such-upload", PartNumber=1, Body=b"x"),
         "NoSuchUpload", 404),
        ("CopyObject missing source",
         lambda: s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "nope"}),
         "NoSuchKey", 404),
        ("GetObject unsatisfiable range",
         lambda: s3.get_object(Bucket=bucket, Key="exists", Range="bytes=100-200"), "InvalidRange", 416),
    ]
    for what, call, code, status in cases:
        error = expect_client_error(call, code, status=status, what=what)
        message = error.response.get("Error", {}).get("Message")
        check(message, f"{what}: the error has no Message")
        request_id = error.response.get("ResponseMetadata", {}).get("RequestId")
        check(request_id, f"{what}: the error has no request id")

    # HEAD has no body: botocore reports the status as the code.
    expect_client_error(lambda: s3.head_object(Bucket=bucket, Key="nope"), "404", status=404,
                        what="HeadObject missing key")
    expect_client_error(lambda: s3.head_bucket(Bucket=missing_bucket), "404", status=404,
                        what="HeadBucket missing bucket")

    # Credentials the server does not know, and a wrong secret for a known key.
    stranger = client("AKIAUNKNOWNUNKNOWN00", "not-a-secret")
    expect_client_error(lambda: stranger.list_objects_v2(Bucket=bucket), "InvalidAccessKeyId",
                        status=403, what="unknown access key")
    wrong_secret = client(os.environ["AWS_ACCESS_KEY_ID"], "wrong-secret")
    expect_client_error(lambda: wrong_secret.list_objects_v2(Bucket=bucket), "SignatureDoesNotMatch",
                        status=403, what="wrong secret")
    expect_client_error(
        lambda: wrong_secret.put_object(Bucket=bucket, Key="exists", Body=b"overwritten"),
        "SignatureDoesNotMatch", status=403, what="PUT with a wrong secret",
    )
    body = s3.get_object(Bucket=bucket, Key="exists")["Body"].read()
    check(body == b"x", "a PUT with a wrong secret changed the object")


if __name__ == "__main__":
    run(main)
