"""Checks a bucket after the crash test restarted the server:

- every acknowledged write survived: obj-N is listed and holds the content
  of its last acknowledged generation or of a later (unacknowledged) one;
- nothing partial is visible: every listed object holds, in full, the
  content of some generation that could have written it, with a listed size
  equal to what GET returns.

usage: crash_verify.py BUCKET ACKS_JSON GENERATION
ACKS_JSON maps key -> last generation whose PUT of that key was acknowledged.
"""

import hashlib
import json
import re

from strata_env import check, client, crash_object, run

KEY_PATTERN = re.compile(r"^obj-(\d{5})$")


def main(args):
    bucket, acks_path, generation = args
    generation = int(generation)
    with open(acks_path) as file:
        last_acked = json.load(file)

    s3 = client(read_timeout=120)
    listed = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            listed[entry["Key"]] = entry["Size"]

    problems = []
    for key, acked_generation in sorted(last_acked.items()):
        if key not in listed:
            problems.append(f"{key}: acknowledged in generation {acked_generation} but not listed")

    for key, listed_size in sorted(listed.items()):
        match = KEY_PATTERN.match(key)
        if not match:
            problems.append(f"{key}: listed, but the writer never uses such a key")
            continue
        n = int(match.group(1))
        oldest = last_acked.get(key, 0)
        candidates = {g: crash_object(n, g) for g in range(oldest, generation + 1)}
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if len(data) != listed_size:
            problems.append(f"{key}: listed with {listed_size} bytes, GET returned {len(data)}")
        matching = [g for g, content in candidates.items() if content == data]
        if not matching:
            sizes = {g: len(content) for g, content in candidates.items()}
            problems.append(
                f"{key}: {len(data)} bytes (sha256 {hashlib.sha256(data).hexdigest()[:16]}) match "
                f"no write of generations {oldest}..{generation} (sizes {sizes})"
            )

    print(f"listed {len(listed)} objects, {len(last_acked)} acknowledged keys checked")
    check(not problems, f"{len(problems)} problems after the crash:\n" + "\n".join(problems[:50]))


if __name__ == "__main__":
    run(main)
