"""python-swiftclient as a library (swiftclient.client.Connection), with
v1.0 and Keystone v3 auth: containers, objects with metadata, listings with
prefix and delimiter, ranges (one and several), copies, errors as ClientException.

Runs under the system python3, where Debian's python3-swiftclient lives.

usage: swift_library.py ENDPOINT ACCOUNT USER KEY
"""

import email.parser
import email.policy
import hashlib
import os
import sys

from swiftclient.client import ClientException, Connection


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def connections(endpoint, account, user, key):
    yield "v1.0", Connection(
        authurl=f"{endpoint}/auth/v1.0", user=f"{account}:{user}", key=key, retries=0
    )
    yield "v3", Connection(
        authurl=f"{endpoint}/v3",
        user=user,
        key=key,
        auth_version="3",
        os_options={
            "project_name": account,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        retries=0,
    )


def check_multipart_ranges(name, conn, container, body):
    """Several ranges come back as multipart/byteranges (RFC 9110 14.6),
    read here by the standard library's MIME parser."""
    wanted = [(0, 9), (150_000, 150_099), (299_990, 299_999)]
    spec = ",".join(f"{first}-{last}" for first, last in wanted)
    headers, got = conn.get_object(
        container, "dir/data.bin", headers={"Range": f"bytes={spec}"}
    )
    content_type = headers.get("content-type", "")
    check(
        content_type.startswith("multipart/byteranges"),
        f"{name}: multi-range type {content_type}",
    )
    check(
        int(headers.get("content-length")) == len(got),
        f"{name}: multi-range length {headers.get('content-length')} vs {len(got)}",
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + got
    )
    parts = list(message.iter_parts())
    check(len(parts) == len(wanted), f"{name}: {len(parts)} parts")
    for part, (first, last) in zip(parts, wanted):
        check(
            part["Content-Range"] == f"bytes {first}-{last}/{len(body)}",
            f"{name}: part range {part['Content-Range']}",
        )
        check(
            part.get_content_type() == "application/octet-stream",
            f"{name}: part type {part.get_content_type()}",
        )
        check(
            part.get_payload(decode=True) == body[first : last + 1],
            f"{name}: part {first}-{last} bytes differ",
        )
    # Ranges that cannot all be satisfied keep the ones that can.
    headers, got = conn.get_object(
        container, "dir/data.bin", headers={"Range": "bytes=5-9,900000-"}
    )
    check(got == body[5:10], f"{name}: one satisfiable range of two")
    try:
        conn.get_object(
            container, "dir/data.bin", headers={"Range": "bytes=0-9,1-10,2-11,3-12"}
        )
        raise AssertionError(f"{name}: overlapping ranges were served")
    except ClientException as err:
        check(err.http_status == 416, f"{name}: overlapping ranges {err.http_status}")


def check_account_rollup(name, conn):
    """Containers roll up under a delimiter as {"subdir": ...}, and paging
    one entry at a time ends: a rolled-up prefix given back as the marker
    does not come again."""
    base = f"acct-{name.replace('.', '')}-{os.getpid()}-"
    suffixes = ("logs-2024", "logs-2025", "other")
    for suffix in suffixes:
        conn.put_container(base + suffix)
    seen, marker = [], ""
    for _ in range(10):
        _, page = conn.get_account(prefix=base, delimiter="-", limit=1, marker=marker)
        if not page:
            break
        marker = page[0].get("subdir") or page[0]["name"]
        seen.append(marker)
    check(seen == [base + "logs-", base + "other"], f"{name}: account pages {seen}")
    for suffix in suffixes:
        conn.delete_container(base + suffix)


def exercise(name, conn):
    container = f"lib-{name.replace('.', '')}-{os.getpid()}"
    conn.put_container(container, headers={"X-Container-Meta-Owner": "lib"})
    body = os.urandom(300_000)
    etag = conn.put_object(
        container, "dir/data.bin", body, headers={"X-Object-Meta-Kind": "random"}
    )
    check(etag == hashlib.md5(body).hexdigest(), f"{name}: put etag {etag}")
    conn.put_object(container, "dir/sub/leaf.txt", b"leaf", content_type="text/plain")
    conn.put_object(container, "top.txt", b"top")

    headers, got = conn.get_object(container, "dir/data.bin")
    check(got == body, f"{name}: bytes differ")
    check(headers.get("x-object-meta-kind") == "random", f"{name}: meta {headers}")
    headers, got = conn.get_object(
        container, "dir/data.bin", headers={"Range": "bytes=100-199"}
    )
    check(got == body[100:200], f"{name}: range differs")
    check_multipart_ranges(name, conn, container, body)
    check_account_rollup(name, conn)

    _, listing = conn.get_container(container, prefix="dir/", delimiter="/")
    names = [entry.get("name") or entry.get("subdir") for entry in listing]
    check(names == ["dir/data.bin", "dir/sub/"], f"{name}: listing {names}")
    headers = conn.head_container(container)
    check(headers.get("x-container-object-count") == "3", f"{name}: {headers}")
    check(headers.get("x-container-meta-owner") == "lib", f"{name}: {headers}")

    conn.copy_object(container, "top.txt", f"/{container}/copy.txt")
    _, got = conn.get_object(container, "copy.txt")
    check(got == b"top", f"{name}: copy {got!r}")

    conn.post_object(container, "top.txt", headers={"X-Object-Meta-Color": "teal"})
    check(
        conn.head_object(container, "top.txt").get("x-object-meta-color") == "teal",
        f"{name}: post",
    )

    try:
        conn.get_object(container, "missing")
        raise AssertionError(f"{name}: missing object was found")
    except ClientException as err:
        check(err.http_status == 404, f"{name}: {err}")
    try:
        conn.delete_container(container)
        raise AssertionError(f"{name}: non-empty container deleted")
    except ClientException as err:
        check(err.http_status == 409, f"{name}: {err}")

    for obj in ["dir/data.bin", "dir/sub/leaf.txt", "top.txt", "copy.txt"]:
        conn.delete_object(container, obj)
    conn.delete_container(container)
    _, containers = conn.get_account()
    check(
        container not in [entry["name"] for entry in containers],
        f"{name}: container still listed",
    )


def main(argv):
    endpoint, account, user, key = argv
    for name, conn in connections(endpoint, account, user, key):
        exercise(name, conn)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as err:  # noqa: BLE001 - every error must fail the test
        import traceback

        traceback.print_exc()
        sys.stderr.write(f"FAIL: {err}\n")
        sys.exit(1)
    print("OK", flush=True)
