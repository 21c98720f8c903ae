"""A client that announces a body, sends part of it and hangs up must leave
nothing behind: no new object, and an existing object keeps its old content.
Requests are signed by botocore and sent over a raw socket so the body can be
cut short.

usage: disconnect_upload.py BUCKET
"""

import os
import socket
import time
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from strata_env import ClientError, check, client, endpoint, region, run

MIB = 1024 * 1024


def send_truncated_put(bucket, key, body, n_sent, chunked=False):
    url = f"{endpoint()}/{bucket}/{urllib.parse.quote(key)}"
    headers = {"Content-Type": "application/octet-stream"}
    if not chunked:
        headers["Content-Length"] = str(len(body))
    request = AWSRequest(method="PUT", url=url, data=body, headers=headers)
    credentials = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    S3SigV4Auth(credentials, "s3", region()).add_auth(request)

    parsed = urllib.parse.urlsplit(url)
    lines = [f"PUT {parsed.path} HTTP/1.1", f"Host: {parsed.netloc}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items() if name.lower() != "host"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as connection:
        connection.sendall(head)
        payload = body[:n_sent]
        if chunked:
            payload = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
        connection.sendall(payload)
        # Give the server time to start storing, then vanish mid-body.
        time.sleep(0.3)
        connection.shutdown(socket.SHUT_RDWR)


def head_status(s3, bucket, key):
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return 200
    except ClientError as client_error:
        return client_error.response["ResponseMetadata"]["HTTPStatusCode"]


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def main(args):
    (bucket,) = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)

    for chunked in (False, True):
        mode = "chunked" if chunked else "content-length"
        # New key: nothing may appear, not even an empty or partial object.
        key = f"new-{mode}"
        body = os.urandom(4 * MIB)
        send_truncated_put(bucket, key, body, n_sent=MIB + 123, chunked=chunked)
        time.sleep(1.0)
        status = head_status(s3, bucket, key)
        check(status == 404, f"{mode}: an interrupted PUT left {key} behind (HEAD {status})")
        listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        check(key not in listed, f"{mode}: an interrupted PUT is listed: {listed}")

        # Existing key: the old content must survive the interrupted overwrite.
        key = f"existing-{mode}"
        old = os.urandom(2 * MIB)
        s3.put_object(Bucket=bucket, Key=key, Body=old)
        send_truncated_put(bucket, key, os.urandom(3 * MIB), n_sent=MIB, chunked=chunked)
        time.sleep(1.0)
        now = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        check(now == old, f"{mode}: an interrupted overwrite changed {key} ({len(now)} bytes now)")

    # The server still serves normal traffic.
    s3.put_object(Bucket=bucket, Key="after", Body=b"fine")
    check(wait_for(lambda: head_status(s3, bucket, "after") == 200), "server unusable afterwards")


if __name__ == "__main__":
    run(main)
