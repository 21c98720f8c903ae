"""How long a change made through one gateway takes to reach another
gateway's edge cache.

    python3 bench/purge_latency.py WRITER_URL READER_URL ROUNDS

Both gateways serve one cluster (the reader started with --metadata). The
root account (STRATA_ROOT_ACCESS_KEY / STRATA_ROOT_SECRET_KEY in the
environment: its Swift key is the S3 secret) makes a public container. Each
round makes the reader cache the object (anonymous GETs until one is a
HIT), overwrites it through the writer and times, from the writer's 201,
until the reader serves the new bytes; then the same for a listing of the
object's folder and a key added to it. Prints one JSON line: percentiles in milliseconds.
"""

import http.client
import json
import os
import sys
import time
import urllib.parse


def connect(url):
    parsed = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)


def request(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    headers = {name.lower(): value for name, value in response.getheaders()}
    return response.status, headers, response.read()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    writer_url, reader_url, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = os.environ["STRATA_ROOT_SECRET_KEY"]
    writer, reader = connect(writer_url), connect(reader_url)
    status, headers, _ = request(
        writer, "GET", "/auth/v1.0", headers={"X-Auth-User": "admin:admin", "X-Auth-Key": key}
    )
    assert status == 200, status
    token = {"X-Auth-Token": headers["x-auth-token"]}
    base = "/v1/AUTH_admin/purge-latency"
    status, _, _ = request(writer, "PUT", base, headers={**token, "X-Container-Read": ".r:*,.rlistings"})
    assert status in (201, 202), status
    obj = f"{base}/dir/object"
    listing = f"{base}?prefix=dir/&delimiter=/"
    status, _, _ = request(writer, "PUT", obj, body=b"round -1", headers=token)
    assert status == 201, status

    def cache_on_reader(path):
        deadline = time.monotonic() + 10
        while True:
            status, headers, _ = request(reader, "GET", path)
            if status == 200 and headers.get("x-cache") == "HIT":
                return
            assert time.monotonic() < deadline, f"{path} never cached ({status})"

    def time_until(seen):
        started = time.monotonic()
        while not seen():
            assert time.monotonic() - started < 10, "change never seen"
        return (time.monotonic() - started) * 1000

    object_ms, listing_ms = [], []
    for n in range(rounds):
        cache_on_reader(obj)
        body = f"round {n}".encode()
        status, _, _ = request(writer, "PUT", obj, body=body, headers=token)
        assert status == 201, status
        object_ms.append(time_until(lambda: request(reader, "GET", obj)[2] == body))

        cache_on_reader(listing)
        status, _, _ = request(writer, "PUT", f"{base}/dir/new-{n}", body=b"x", headers=token)
        assert status == 201, status
        listed = f"dir/new-{n}".encode()
        listing_ms.append(time_until(lambda: listed in request(reader, "GET", listing)[2]))

    summary = {"rounds": rounds}
    for name, values in (("object", object_ms), ("listing", listing_ms)):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            summary[f"{name}_{label}_ms"] = round(percentile(values, fraction), 2)
        summary[f"{name}_max_ms"] = round(max(values), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
