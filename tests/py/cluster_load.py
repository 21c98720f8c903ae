"""Load for the cluster tests: objects `load-<n>` of mixed sizes whose
content follows from n alone, so any reader can check every byte.

usage:
  cluster_load.py write BUCKET COUNT [FIRST]  PUTs from 8 threads, `ACK n` after each:
                                              even n through S3 (boto3), odd n
                                              through Swift (the root user's token)
  cluster_load.py write-retrying BUCKET COUNT [FIRST]
                                              as write, but a PUT answered 503 is sent
                                              again after a pause, up to 5 times, as
                                              SDKs do by default: a metadata group whose
                                              leader died refuses the changes it held
  cluster_load.py verify BUCKET COUNT [FIRST] GETs every object, compares every byte
  cluster_load.py delete BUCKET COUNT [FIRST] deletes the objects
  cluster_load.py read-loop BUCKET COUNT STOP reads objects in turn until the file
                                              STOP exists; any failed read fails

FIRST (default 0) is the number of the first object.

`write` stops at the first failed PUT and exits 1: in a cluster with a
quorum up, no write may fail.
"""

import hashlib
import os
import random
import sys
import threading
import time
import urllib.request

from strata_env import check, client, endpoint, fail, run

N_THREADS = 8
# Mostly small objects (just above the 16 KiB kept inline in metadata, so
# every one reaches the pool), some of several extents.
SIZES = [17_000] * 12 + [100_000] * 6 + [1024 * 1024 + 1] + [4 * 1024 * 1024 + 5]


def key(n):
    return f"load-{n:05d}"


def content(n):
    seed = hashlib.sha256(f"cluster-load-{n}".encode()).digest()
    size = SIZES[seed[0] % len(SIZES)]
    return random.Random(int.from_bytes(seed, "big")).getrandbits(size * 8).to_bytes(size, "little")


def swift_login():
    """The root user's token and storage URL (its Swift key is the root S3
    secret)."""
    request = urllib.request.Request(
        endpoint() + "/auth/v1.0",
        headers={"X-Auth-User": "admin:admin", "X-Auth-Key": os.environ["AWS_SECRET_ACCESS_KEY"]},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.headers["X-Auth-Token"], answer.headers["X-Storage-Url"]


def swift_put(login, container, name, body):
    token, storage_url = login
    request = urllib.request.Request(
        f"{storage_url}/{container}/{name}", data=body, method="PUT", headers={"X-Auth-Token": token}
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        check(answer.status == 201, f"Swift PUT {name}: {answer.status}")


def unavailable(error):
    """Whether a PUT failed with 503, through S3 or Swift."""
    s3_status = getattr(error, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
    return s3_status == 503 or getattr(error, "code", None) == 503


def write(bucket, count, first, retries=0):
    s3 = client(connect_timeout=5, read_timeout=60)
    login = swift_login()
    numbers = iter(range(first, first + count))
    lock = threading.Lock()
    failures = []

    def put(n):
        for attempt in range(retries + 1):
            try:
                if n % 2 == 0:
                    s3.put_object(Bucket=bucket, Key=key(n), Body=content(n))
                else:
                    swift_put(login, bucket, key(n), content(n))
                return
            except Exception as error:  # noqa: BLE001 - retried or raised
                if attempt == retries or not unavailable(error):
                    raise
                print(f"RETRY {key(n)}: {error}", file=sys.stderr)
                time.sleep(0.5 * (attempt + 1))

    def writer():
        while not failures:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            try:
                put(n)
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(f"PUT {key(n)}: {type(error).__name__}: {error}")
                return
            with lock:
                sys.stdout.write(f"ACK {n}\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=writer) for _ in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check(not failures, "writes failed:\n" + "\n".join(failures))


def read_one(s3, bucket, n):
    expected = content(n)
    data = s3.get_object(Bucket=bucket, Key=key(n))["Body"].read()
    if data != expected:
        fail(f"{key(n)}: {len(data)} bytes read, {len(expected)} expected, content differs")


def verify(bucket, count, first):
    s3 = client(read_timeout=60)
    for n in range(first, first + count):
        read_one(s3, bucket, n)
    print(f"verified {count} objects")


def delete(bucket, count, first):
    s3 = client(read_timeout=60)
    numbers = list(range(first, first + count))
    for start in range(0, len(numbers), 1000):
        batch = [{"Key": key(n)} for n in numbers[start : start + 1000]]
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        check(not answer.get("Errors"), f"deletes failed: {answer.get('Errors')}")


def read_loop(bucket, count, stop_file):
    s3 = client(connect_timeout=5, read_timeout=60)
    reads = 0
    n = 0
    slowest = 0.0
    while not os.path.exists(stop_file):
        started = time.monotonic()
        read_one(s3, bucket, n % count)
        slowest = max(slowest, time.monotonic() - started)
        reads += 1
        n += 1
        if n % count == 0:
            time.sleep(0.05)
    print(f"{reads} reads, none failed; slowest {slowest:.2f} s")


def main(args):
    mode, bucket, count = args[0], args[1], int(args[2])
    first = int(args[3]) if len(args) > 3 and mode != "read-loop" else 0
    if mode == "write":
        write(bucket, count, first)
    elif mode == "write-retrying":
        write(bucket, count, first, retries=5)
    elif mode == "verify":
        verify(bucket, count, first)
    elif mode == "delete":
        delete(bucket, count, first)
    elif mode == "read-loop":
        read_loop(bucket, count, args[3])
    else:
        fail(f"unknown mode {mode}")


if __name__ == "__main__":
    run(main)
