"""Listing 1100 keys through boto3's paginators: ListObjectsV2 with the
default 1000-key pages and with small pages, with a delimiter (common
prefixes spread over pages), ListObjects (v1, markers) and
ListObjectVersions; then DeleteObjects in batches of 1000.

usage: boto3_paginate.py BUCKET
"""

from concurrent.futures import ThreadPoolExecutor

from strata_env import check, client, run

N_KEYS = 1100


def key_for(index):
    # 11 prefixes of 100 keys: p00/ … p10/
    return f"p{index // 100:02d}/obj-{index:05d}"


def collect(pages, field, attribute):
    values = []
    for page in pages:
        values.extend(entry[attribute] for entry in page.get(field, []))
    return values


def main(args):
    (bucket,) = args
    s3 = client()
    s3.create_bucket(Bucket=bucket)
    expected = sorted(key_for(index) for index in range(N_KEYS))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda key: s3.put_object(Bucket=bucket, Key=key, Body=key.encode()),
                expected,
            )
        )

    v2 = s3.get_paginator("list_objects_v2")
    pages = list(v2.paginate(Bucket=bucket))
    counts = [page.get("KeyCount") for page in pages]
    check(counts == [1000, 100], f"default pages have KeyCounts {counts}, expected [1000, 100]")
    check(pages[0].get("IsTruncated") is True, "the first page is not truncated")
    check(pages[-1].get("IsTruncated") is False, "the last page is truncated")
    keys = collect(pages, "Contents", "Key")
    check(keys == expected, f"v2 listing: {len(keys)} keys, first difference at "
          f"{next((i for i, (a, b) in enumerate(zip(keys, expected)) if a != b), min(len(keys), len(expected)))}")
    sizes = {entry["Key"]: entry["Size"] for page in pages for entry in page.get("Contents", [])}
    check(all(sizes[key] == len(key) for key in expected), "listed sizes differ from the bodies")

    pages = list(v2.paginate(Bucket=bucket, PaginationConfig={"PageSize": 250}))
    check(len(pages) == 5, f"PageSize 250 gave {len(pages)} pages")
    check(collect(pages, "Contents", "Key") == expected, "v2 listing with PageSize 250 differs")

    pages = list(v2.paginate(Bucket=bucket, Prefix="p03/", StartAfter="p03/obj-00349",
                             PaginationConfig={"PageSize": 7}))
    keys = collect(pages, "Contents", "Key")
    check(keys == [key for key in expected if key.startswith("p03/") and key > "p03/obj-00349"],
          f"prefix + start-after listing: {keys[:5]}…")

    pages = list(v2.paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 3}))
    prefixes = collect(pages, "CommonPrefixes", "Prefix")
    expected_prefixes = [f"p{index:02d}/" for index in range(11)]
    check(prefixes == expected_prefixes, f"common prefixes over pages of 3: {prefixes}")
    check(not collect(pages, "Contents", "Key"), "keys listed beside the common prefixes")
    check(len(pages) == 4, f"11 prefixes in pages of 3 gave {len(pages)} pages")

    v1 = s3.get_paginator("list_objects")
    pages = list(v1.paginate(Bucket=bucket, PaginationConfig={"PageSize": 400}))
    check(len(pages) == 3, f"v1 PageSize 400 gave {len(pages)} pages")
    check(collect(pages, "Contents", "Key") == expected, "v1 listing differs")

    pages = list(v1.paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 4}))
    check(collect(pages, "CommonPrefixes", "Prefix") == expected_prefixes, "v1 delimiter listing differs")

    versions = s3.get_paginator("list_object_versions")
    pages = list(versions.paginate(Bucket=bucket, PaginationConfig={"PageSize": 500}))
    listed = [(entry["Key"], entry["VersionId"], entry["IsLatest"])
              for page in pages for entry in page.get("Versions", [])]
    check([key for key, _, _ in listed] == expected, "ListObjectVersions keys differ")
    check(all(version == "null" and latest for _, version, latest in listed),
          "unversioned objects must be listed with VersionId null and IsLatest")

    for start in range(0, N_KEYS, 1000):
        batch = expected[start:start + 1000]
        result = s3.delete_objects(
            Bucket=bucket,
            Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
        )
        errors = result.get("Errors") or []
        check(not errors, f"DeleteObjects errors: {errors[:3]}")
    remaining = s3.list_objects_v2(Bucket=bucket)
    check(remaining.get("KeyCount") == 0, f"{remaining.get('KeyCount')} keys left after deleting all")
    s3.delete_bucket(Bucket=bucket)


if __name__ == "__main__":
    run(main)
