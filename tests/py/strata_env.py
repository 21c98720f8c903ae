"""Shared by the end-to-end scripts: a boto3 client for the strata server the
Rust harness started, assertions that end the script with a message, and the
deterministic object contents of the crash test.

The harness passes the endpoint in STRATA_ENDPOINT and the root credentials
in the standard AWS_* variables; AWS_CONFIG_FILE points at a file of its own,
so no local profile changes what boto3 sends.
"""

import base64
import ftplib
import hashlib
import io
import os
import random
import sys
import traceback
import urllib.parse

try:
    import boto3
    import botocore
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError as import_error:
    sys.stderr.write(
        f"FAIL: boto3 is not installed for {sys.executable} ({import_error}); "
        "the end-to-end suite needs it and CI installs it\n"
    )
    sys.exit(2)


class Failure(Exception):
    """An assertion of the script failed; the message says which."""


def endpoint():
    value = os.environ.get("STRATA_ENDPOINT")
    if not value:
        raise Failure("STRATA_ENDPOINT is not set (run this through the Rust harness)")
    return value


def region():
    return os.environ.get("STRATA_REGION", "us-east-1")


def client(access_key=None, secret_key=None, **config_overrides):
    """An S3 client for the test server: path style, SigV4, one attempt (a
    retried 500 would hide the bug the test is looking for). Credentials
    default to the root user's from the environment."""
    settings = dict(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
    )
    settings.update(config_overrides)
    session = boto3.session.Session()
    credentials = {}
    if access_key is not None:
        credentials = dict(aws_access_key_id=access_key, aws_secret_access_key=secret_key)
    return session.client(
        "s3",
        endpoint_url=endpoint(),
        region_name=region(),
        config=Config(**settings),
        **credentials,
    )


def ftp_connect(url, login, password):
    """An ftplib session, logged in, with the FTP door at `url`
    (ftp://host:port, as the harness passes it)."""
    parsed = urllib.parse.urlsplit(url)
    ftp = ftplib.FTP()
    ftp.connect(parsed.hostname, parsed.port, timeout=20)
    ftp.login(login, password)
    return ftp


def ftp_script_session():
    """For a script run as `SCRIPT FTP_URL LOGIN PASSWORD CONTAINER`: its
    session, logged in and in binary mode, and its container."""
    url, login, password, container = sys.argv[1:5]
    ftp = ftp_connect(url, login, password)
    ftp.voidcmd("TYPE I")
    return ftp, container


def ftp_read(ftp, path):
    """The bytes RETR of `path` gives."""
    got = io.BytesIO()
    ftp.retrbinary(f"RETR {path}", got.write)
    return got.getvalue()


def check(condition, message):
    if not condition:
        raise Failure(message)


def fail(message):
    raise Failure(message)


def error_code(client_error):
    return client_error.response.get("Error", {}).get("Code")


def error_status(client_error):
    return client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def expect_client_error(call, codes, status=None, what=""):
    """Runs `call`, which must raise a ClientError whose code is `codes` (a
    string or a collection of acceptable codes) and whose HTTP status is
    `status`. Returns the error."""
    if isinstance(codes, str):
        codes = {codes}
    try:
        result = call()
    except ClientError as client_error:
        code = error_code(client_error)
        got_status = error_status(client_error)
        check(
            code in codes,
            f"{what}: expected error {sorted(codes)}, got {code} (HTTP {got_status}): "
            f"{client_error.response.get('Error')}",
        )
        check(
            status is None or got_status == status,
            f"{what}: expected HTTP {status} for {code}, got {got_status}",
        )
        return client_error
    raise Failure(f"{what}: expected error {sorted(codes)}, the call succeeded: {result!r:.500}")


def b64(digest_bytes):
    return base64.b64encode(digest_bytes).decode("ascii")


def force_trailer_checksums(s3):
    """Makes `s3` send PutObject and UploadPart bodies the way boto3 >= 1.36
    does over HTTPS: `Content-Encoding: aws-chunked`, payload hash
    STREAMING-UNSIGNED-PAYLOAD-TRAILER and the checksum in a trailer. Over
    plain HTTP botocore puts the checksum in a header instead, so without
    this the suite would never exercise the aws-chunked decoder."""

    def use_trailer(params, **_kwargs):
        algorithm = params.get("context", {}).get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"

    for operation in ("PutObject", "UploadPart"):
        s3.meta.events.register(f"before-call.s3.{operation}", use_trailer)
    return s3


def record_requests(s3):
    """Returns a list that fills with (method, url, headers) of every request
    `s3` sends, headers with lower-case names."""
    sent = []

    def remember(request, **_kwargs):
        headers = {}
        for name, value in request.headers.items():
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            headers[name.lower()] = value
        sent.append((request.method, request.url, headers))

    s3.meta.events.register("before-send.s3", remember)
    return sent


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) as 4 big-endian bytes, the form S3 transmits in
    base64. Pure Python, for when botocore lacks awscrt."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return (crc ^ 0xFFFFFFFF).to_bytes(4, "big")


CRASH_OBJECT_SIZES = [
    1024,
    7 * 1024 + 3,
    64 * 1024,
    300_001,
    1024 * 1024,
    5 * 1024 * 1024 + 17,
    6 * 1024 * 1024,
]


def crash_object(n, generation):
    """Content of crash-test object `obj-<n>` as written in round
    `generation`: size and bytes follow from (n, generation) alone, so the
    verifier can recompute what every write should have stored."""
    seed = hashlib.sha256(f"obj-{n}-generation-{generation}".encode()).digest()
    size = CRASH_OBJECT_SIZES[seed[0] % len(CRASH_OBJECT_SIZES)]
    generator = random.Random(int.from_bytes(seed, "big"))
    return generator.getrandbits(size * 8).to_bytes(size, "little")


def crash_key(n):
    return f"obj-{n:05d}"


def run(main):
    """Runs main(argv[1:]); a Failure or any exception ends the script with
    status 1 and the reason on stderr."""
    try:
        main(sys.argv[1:])
    except Failure as failure:
        sys.stderr.write(f"FAIL: {failure}\n")
        sys.exit(1)
    except Exception:  # noqa: BLE001 - every error must fail the test
        sys.stderr.write("FAIL: unexpected exception\n")
        traceback.print_exc()
        sys.exit(1)
    print("OK", flush=True)
