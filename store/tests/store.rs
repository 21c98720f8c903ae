//! The object layer against a real RocksDB and a real local pool.

#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, stream};
use proptest::prelude::*;
use strata_pool::{ALL_TAGS, ExtentFilter, LocalPool, LocalPoolConfig, Pool};
use strata_store::{
    BucketInfo, BucketPin, CatalogWrite, ChangeKind, CompletedPart, ListEntry, ListQuery,
    ObjectInfo, ObjectMeta, PutConditions, StageOptions, Store, StoreConfig, StoreError,
    group_tags, grouped,
};

/// The pool of the store in `dir`.
fn pool_in(dir: &std::path::Path) -> Arc<LocalPool> {
    let config = LocalPoolConfig {
        dir: dir.join("pool"),
    };
    Arc::new(LocalPool::open(config).unwrap())
}

/// The store in `dir`, with parts as small as tests make them.
fn config_in(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir.join("meta"));
    config.min_part_size = 8;
    config
}

fn open(dir: &std::path::Path) -> Store {
    Store::open(config_in(dir), pool_in(dir)).unwrap()
}

/// Opens again once background work of the dropped instance has let go of the
/// database lock.
async fn reopen(dir: &std::path::Path) -> Store {
    for _ in 0..100 {
        if let Ok(store) = Store::open(config_in(dir), pool_in(dir)) {
            return store;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("database stayed locked");
}

fn options() -> StageOptions {
    StageOptions {
        sha256: false,
        checksum: None,
        max_size: 1 << 30,
    }
}

async fn put(store: &Store, bucket: &str, key: &str, body: &[u8]) -> Result<String, StoreError> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(100_000)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let staged = match store.stage(bucket, stream::iter(chunks), &options()).await {
        Ok(staged) => staged,
        Err(strata_store::StageError::Store(err)) => return Err(err),
        Err(strata_store::StageError::Body(err)) => panic!("{err}"),
    };
    let info = store
        .put_object(
            bucket,
            key,
            staged,
            ObjectMeta::default(),
            None,
            PutConditions::default(),
        )
        .await?;
    Ok(info.etag)
}

async fn get(store: &Store, bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    let info = store.head_object(bucket, key).await?;
    let mut reader = store.read(&info, None);
    let mut out = Vec::new();
    while let Some(piece) = reader.next().await {
        out.extend_from_slice(&piece?);
    }
    assert_eq!(out.len() as u64, info.size);
    Ok(out)
}

fn keys_of(entries: &[ListEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| match entry {
            ListEntry::Object(info) => info.key.clone(),
            ListEntry::CommonPrefix(prefix) => format!("P:{prefix}"),
        })
        .collect()
}

#[tokio::test]
async fn objects_survive_reopen_and_ranges_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..9_000_000u32).map(|n| (n % 251) as u8).collect();
    {
        let store = open(dir.path());
        store.create_bucket("acct", "b", "us-east-1").await.unwrap();
        put(&store, "b", "small", b"hello").await.unwrap();
        let etag = put(&store, "b", "big", &big).await.unwrap();
        assert_eq!(etag, hex::encode(<md5::Md5 as md5::Digest>::digest(&big)));
    }
    let store = reopen(dir.path()).await;
    assert_eq!(get(&store, "b", "small").await.unwrap(), b"hello");
    assert_eq!(get(&store, "b", "big").await.unwrap(), big);
    let info = store.head_object("b", "big").await.unwrap();
    let range = 4_194_000..4_195_000u64;
    let mut reader = store.read(&info, Some(range.clone()));
    let mut got = Vec::new();
    while let Some(piece) = reader.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(got, &big[range.start as usize..range.end as usize]);
}

/// Leaves the extents of `body` staged for `bucket` with no record naming
/// them, as a crash after staging and before commit does: the staged body
/// is forgotten, so its drop does not delete them.
async fn orphan(store: &Store, bucket: &str, body: &[u8]) {
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(body))]);
    let staged = store.stage(bucket, body, &options()).await.ok().unwrap();
    std::mem::forget(staged);
}

#[tokio::test]
async fn orphaned_extents_are_swept_and_referenced_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|n| n as u8).collect();
    put(&store, "b", "kept", &body).await.unwrap();
    orphan(&store, "b", &body).await;
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    assert_eq!(
        store.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
        1
    );
    assert_eq!(
        store.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
        0
    );
    assert_eq!(get(&store, "b", "kept").await.unwrap(), body);
}

/// Unfinished uploads list from their key marker on, and with a delimiter
/// roll up into common prefixes that page as one upload each.
#[tokio::test]
async fn uploads_list_by_marker_and_roll_up_by_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    for key in ["a/1", "a/2", "b", "c/x", "d"] {
        store
            .create_upload("b", key, ObjectMeta::default(), None)
            .await
            .unwrap();
    }
    let list = |key_marker: Option<&str>, delimiter: Option<&str>, max_uploads| {
        let query = strata_store::UploadListQuery {
            prefix: String::new(),
            key_marker: key_marker.map(str::to_owned),
            upload_id_marker: None,
            max_uploads,
            delimiter: delimiter.map(str::to_owned),
        };
        let store = store.clone();
        async move { store.list_uploads("b", query).await.unwrap() }
    };
    let keys = |page: &strata_store::UploadListPage| -> Vec<String> {
        page.uploads
            .iter()
            .map(|upload| upload.key.clone())
            .collect()
    };

    let after = list(Some("a/1"), None, 10).await;
    assert_eq!(keys(&after), ["a/2", "b", "c/x", "d"]);
    assert!(!after.is_truncated);

    let first = list(None, Some("/"), 2).await;
    assert_eq!(first.common_prefixes, ["a/"]);
    assert_eq!(keys(&first), ["b"]);
    assert!(first.is_truncated);
    assert_eq!(first.next_key_marker.as_deref(), Some("b"));
    let second = list(first.next_key_marker.as_deref(), Some("/"), 2).await;
    assert_eq!(second.common_prefixes, ["c/"]);
    assert_eq!(keys(&second), ["d"]);
    assert!(!second.is_truncated);
    // A marker at a common prefix goes past everything under it.
    let past = list(Some("a/"), Some("/"), 10).await;
    assert_eq!(past.common_prefixes, ["c/"]);
    assert_eq!(keys(&past), ["b", "d"]);
}

/// A sweep over a pool larger than its batch takes it a span of first bytes
/// at a time: every orphan of every span goes, and every extent a record
/// names stays, whether an object's, an upload's part's, or a replaced
/// object's waiting out its grace.
#[tokio::test]
async fn a_sweep_in_spans_deletes_every_orphan_and_keeps_every_reference() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_in(dir.path());
    let mut config = config_in(dir.path());
    config.orphan_sweep_batch = 3;
    let store = Store::open(config, pool.clone()).unwrap();
    store.create_bucket("a", "b", "r").await.unwrap();
    // Above the inline limit: each body is an extent of its own.
    let body = |n: u32| -> Vec<u8> { (0..20_000u32).map(|at| (at ^ n) as u8).collect() };
    for n in 0..24 {
        put(&store, "b", &format!("kept/{n}"), &body(n))
            .await
            .unwrap();
    }
    put(&store, "b", "replaced", &body(100)).await.unwrap();
    put(&store, "b", "replaced", &body(101)).await.unwrap();
    let upload = store
        .create_upload("b", "mp", ObjectMeta::default(), None)
        .await
        .unwrap();
    let part = store
        .stage_part(
            "b",
            stream::iter([Ok::<_, std::io::Error>(Bytes::from(body(200)))]),
            &options(),
        )
        .await
        .ok()
        .unwrap();
    store.put_part(&upload, 1, part, None).await.unwrap();
    for n in 0..12 {
        orphan(&store, "b", &body(300 + n)).await;
    }
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let counts = pool
        .count_extents(&ExtentFilter::older_than(later))
        .await
        .unwrap();
    assert_eq!(counts.iter().sum::<u64>(), 24 + 2 + 1 + 12);
    assert!(
        counts.iter().filter(|&&count| count > 0).count() > 4,
        "the extents share too few first bytes for several spans: {counts:?}"
    );

    let swept = store.sweep_orphans(later, ALL_TAGS).await.unwrap();
    // More than four first bytes hold extents, and a span holds three at
    // most unless a single first byte holds more.
    assert!(swept.spans >= 2, "{swept:?}");
    assert_eq!(swept.deleted, 12);
    assert_eq!(
        store.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
        0
    );
    let left = pool.list_extents(&ExtentFilter::older_than(later)).await;
    assert_eq!(left.unwrap().len(), 24 + 2 + 1);
    for n in 0..24 {
        assert_eq!(
            get(&store, "b", &format!("kept/{n}")).await.unwrap(),
            body(n)
        );
    }
    assert_eq!(get(&store, "b", "replaced").await.unwrap(), body(101));
}

/// A staging dropped while an extent was being written (its caller was
/// cancelled: a client went away, an FTP upload was aborted) deletes that
/// extent once it has landed, rather than leaving it to the orphan sweep.
#[tokio::test]
async fn a_cancelled_staging_deletes_the_extent_it_was_writing() {
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_in(dir.path());
    let store = Store::open(StoreConfig::new(dir.path().join("meta")), pool.clone()).unwrap();
    // A whole extent, then a body that never goes on.
    let first = Bytes::from(vec![7u8; strata_pool::MAX_EXTENT_LEN]);
    let body = stream::iter([Ok::<_, std::io::Error>(first)]).chain(stream::pending());
    let options = options();
    let staging = store.stage("b", body, &options);
    let cancelled = tokio::time::timeout(std::time::Duration::from_millis(300), staging).await;
    assert!(cancelled.is_err(), "a body that never ends was staged");

    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    for _ in 0..500 {
        if pool
            .list_extents(&ExtentFilter::older_than(later))
            .await
            .unwrap()
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the extent being written was left behind");
}

#[tokio::test]
async fn catalog_records_are_durable_and_announced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut feed = store.subscribe();
    store
        .catalog_put("users", "acme:ann", b"v1".to_vec())
        .await
        .unwrap();
    store
        .catalog_put("users", "acme:bob", b"v1".to_vec())
        .await
        .unwrap();
    store
        .catalog_put("domains", "st.example.com", b"d".to_vec())
        .await
        .unwrap();
    // Only the update that wins the compare writes.
    let created = store
        .catalog_update("users", "acme:ann", |current| {
            Ok(match current {
                Some(_) => (CatalogWrite::Keep, false),
                None => (CatalogWrite::Put(b"v2".to_vec()), true),
            })
        })
        .await
        .unwrap();
    assert!(!created);
    assert!(store.catalog_delete("users", "acme:bob").await.unwrap());
    assert!(!store.catalog_delete("users", "acme:bob").await.unwrap());
    let kinds: Vec<_> = (0..4)
        .map(|_| {
            let event = feed.try_recv().unwrap();
            (event.kind, event.bucket, event.key.unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (
                ChangeKind::CatalogPut,
                "users".to_owned(),
                "acme:ann".to_owned()
            ),
            (
                ChangeKind::CatalogPut,
                "users".to_owned(),
                "acme:bob".to_owned()
            ),
            (
                ChangeKind::CatalogPut,
                "domains".to_owned(),
                "st.example.com".to_owned()
            ),
            (
                ChangeKind::CatalogDeleted,
                "users".to_owned(),
                "acme:bob".to_owned()
            ),
        ]
    );
    assert!(
        feed.try_recv().is_err(),
        "a Keep or a no-op delete made an event"
    );
    drop(store);

    let store = reopen(dir.path()).await;
    assert_eq!(
        store.catalog_list("users").await.unwrap(),
        [("acme:ann".to_owned(), b"v1".to_vec())]
    );
    assert_eq!(
        store
            .catalog_get("domains", "st.example.com")
            .await
            .unwrap(),
        Some(b"d".to_vec())
    );
    assert_eq!(store.catalog_get("domains", "other").await.unwrap(), None);
    assert!(store.catalog_put("", "k", Vec::new()).await.is_err());
    assert!(store.catalog_put("users", "", Vec::new()).await.is_err());
}

#[tokio::test]
async fn bucket_settings_change_durably_and_keep_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let attrs = BTreeMap::from([("swift-read".to_owned(), ".r:*".to_owned())]);
    store
        .create_bucket_with("acme", "site", "r", attrs.clone())
        .await
        .unwrap();
    assert_eq!(store.bucket("site").await.unwrap().attrs, attrs);
    let mut feed = store.subscribe();
    let updated = store
        .update_bucket("site", |info| {
            info.attrs.remove("swift-read");
            info.attrs.insert("meta-color".into(), "blue".into());
            info.account = "thief".into();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(updated.account, "acme");
    let event = feed.try_recv().unwrap();
    assert_eq!(
        (event.kind, event.bucket.as_str()),
        (ChangeKind::BucketUpdated, "site")
    );
    assert!(matches!(
        store.update_bucket("missing", |_| Ok(())).await,
        Err(StoreError::NoSuchBucket)
    ));
    drop(store);
    let store = reopen(dir.path()).await;
    let info = store.bucket("site").await.unwrap();
    assert_eq!(info.account, "acme");
    assert_eq!(
        info.attrs,
        BTreeMap::from([("meta-color".to_owned(), "blue".to_owned())])
    );
}

#[tokio::test]
async fn bucket_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("alice", "b", "r").await.unwrap();
    assert!(matches!(
        store.create_bucket("alice", "b", "r").await,
        Err(StoreError::BucketAlreadyOwnedByYou)
    ));
    assert!(matches!(
        store.create_bucket("bob", "b", "r").await,
        Err(StoreError::BucketAlreadyExists)
    ));
    put(&store, "b", "k", b"x").await.unwrap();
    assert!(matches!(
        store.delete_bucket("b").await,
        Err(StoreError::BucketNotEmpty)
    ));
    assert!(matches!(
        put(&store, "nope", "k", b"x").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(store.delete_object("b", "k").await.unwrap().is_some());
    assert!(store.delete_object("b", "k").await.unwrap().is_none());
    store.delete_bucket("b").await.unwrap();
    assert!(store.list_buckets("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn conditional_puts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    let first = put(&store, "b", "k", b"one").await.unwrap();
    let staged = store
        .stage(
            "b",
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"two"))]),
            &options(),
        )
        .await
        .ok()
        .unwrap();
    let refused = store
        .put_object(
            "b",
            "k",
            staged,
            ObjectMeta::default(),
            None,
            PutConditions {
                if_none_match_any: true,
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(refused, Err(StoreError::PreconditionFailed)));
    assert_eq!(store.head_object("b", "k").await.unwrap().etag, first);
}

#[tokio::test]
async fn a_write_checked_against_one_owner_does_not_land_in_anothers_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("first", "b", "r").await.unwrap();
    let options = options();
    let stage = |body: &'static [u8]| {
        store.stage(
            "b",
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]),
            &options,
        )
    };
    // The writer checked that "first" owns the bucket; meanwhile the bucket
    // was deleted and "second" created one of the same name.
    let staged = stage(b"meant for first").await.ok().unwrap();
    store.delete_bucket("b").await.unwrap();
    store.create_bucket("second", "b", "r").await.unwrap();
    let refused = store
        .put_object(
            "b",
            "k",
            staged,
            ObjectMeta::default(),
            None,
            PutConditions::owned_by("first"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::NoSuchBucket)),
        "{refused:?}"
    );
    assert!(matches!(
        store.head_object("b", "k").await,
        Err(StoreError::NoSuchKey)
    ));
    // The owner's own write goes in.
    let staged = stage(b"for second").await.ok().unwrap();
    store
        .put_object(
            "b",
            "k",
            staged,
            ObjectMeta::default(),
            None,
            PutConditions::owned_by("second"),
        )
        .await
        .unwrap();
    assert_eq!(get(&store, "b", "k").await.unwrap(), b"for second");
}

#[tokio::test]
async fn a_write_checked_against_one_incarnation_does_not_land_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.create_bucket("acct", "b", "r").await.unwrap();
    let other = store.create_bucket("acct", "other", "r").await.unwrap();
    assert!(first.incarnation > 0, "{first:?}");
    assert!(other.incarnation > first.incarnation);
    // Settings change the bucket, not its incarnation.
    let updated = store
        .update_bucket("b", |info| {
            info.attrs.insert("acl".into(), "public-read".into());
            info.incarnation = 99;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(updated.incarnation, first.incarnation);
    // The writer decided against `first`; meanwhile the same account
    // deleted the bucket and created it again.
    store.delete_bucket("b").await.unwrap();
    let second = store.create_bucket("acct", "b", "r").await.unwrap();
    assert!(second.incarnation > other.incarnation);
    let mut conditions = PutConditions {
        if_none_match_any: true,
        ..Default::default()
    };
    conditions.pin_bucket(&first);
    let refused = put_pinned(&store, "b", "k", conditions).await;
    assert!(
        matches!(refused, Err(StoreError::NoSuchBucket)),
        "{refused:?}"
    );
    assert!(matches!(
        store.head_object("b", "k").await,
        Err(StoreError::NoSuchKey)
    ));
    put_pinned(&store, "b", "k", PutConditions::for_bucket(&second))
        .await
        .unwrap();
    assert_eq!(get(&store, "b", "k").await.unwrap(), b"pinned");
    // The count survives a restart.
    drop(store);
    let store = reopen(dir.path()).await;
    let third = store.create_bucket("acct", "c", "r").await.unwrap();
    assert!(third.incarnation > second.incarnation);
}

#[tokio::test]
async fn changes_pinned_to_one_incarnation_leave_the_next_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    pinned_changes_leave_a_later_incarnation_alone(&store, "b", "c").await;
}

#[tokio::test]
async fn changes_pinned_to_one_incarnation_leave_the_next_alone_across_index_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    // Two buckets of two groups, so that a rename between them is a copy
    // and a delete.
    let mut group_of = BTreeMap::new();
    for n in 0..12 {
        let name = format!("bucket-{n}");
        store.create_bucket("acct", &name, "r").await.unwrap();
        put(&store, &name, "probe", b"").await.unwrap();
        group_of.insert(holders(&groups, &name, "probe").await[0], name.clone());
        store.delete_object(&name, "probe").await.unwrap();
        store.delete_bucket(&name).await.unwrap();
    }
    let mut names = group_of.values();
    let (b, c) = (names.next().unwrap(), names.next().expect("two groups"));
    pinned_changes_leave_a_later_incarnation_alone(&store, b, c).await;
}

/// Deletes (of objects and of the bucket), renames, metadata replacements
/// and bucket setting changes pinned to bucket `b` as it was before it was deleted and created again,
/// or to another owner, are refused and change nothing; pinned to the
/// buckets as they are, they go through.
async fn pinned_changes_leave_a_later_incarnation_alone(store: &Store, b: &str, c: &str) {
    let first = store.create_bucket("acct", b, "r").await.unwrap();
    let other = BucketPin::of(&store.create_bucket("acct", c, "r").await.unwrap());
    store.delete_bucket(b).await.unwrap();
    let second = store.create_bucket("acct", b, "r").await.unwrap();
    put(store, b, "k", b"second's").await.unwrap();
    put(store, c, "x", b"c's").await.unwrap();
    let stale_meta = ObjectMeta {
        content_type: Some("text/stale".into()),
        ..ObjectMeta::default()
    };
    for pin in [BucketPin::of(&first), BucketPin::owned_by("stranger")] {
        let outcomes = [
            store.delete_object_pinned(b, "k", &pin).await.map(drop),
            store
                .replace_object_meta_pinned((b, &pin), "k", stale_meta.clone(), None)
                .await
                .map(drop),
            store
                .rename_object_pinned((b, "k", &pin), (c, "k", &other))
                .await
                .map(drop),
            store
                .rename_object_pinned((c, "x", &other), (b, "x", &pin))
                .await
                .map(drop),
            store
                .update_bucket_pinned(b, pin.clone(), |bucket| {
                    bucket.attrs.insert("setting".into(), "stale".into());
                    Ok(())
                })
                .await
                .map(drop),
        ];
        for outcome in outcomes {
            assert!(
                matches!(outcome, Err(StoreError::NoSuchBucket)),
                "{pin:?}: {outcome:?}"
            );
        }
    }
    assert_eq!(get(store, b, "k").await.unwrap(), b"second's");
    let kept = store.head_object(b, "k").await.unwrap();
    assert_ne!(kept.meta.content_type.as_deref(), Some("text/stale"));
    assert_eq!(get(store, c, "x").await.unwrap(), b"c's");
    assert!(!store.bucket(b).await.unwrap().attrs.contains_key("setting"));
    for (bucket, key) in [(c, "k"), (b, "x")] {
        let absent = store.head_object(bucket, key).await;
        assert!(matches!(absent, Err(StoreError::NoSuchKey)), "{absent:?}");
    }
    let current = BucketPin::of(&second);
    let updated = store
        .update_bucket_pinned(b, current.clone(), |bucket| {
            bucket.attrs.insert("setting".into(), "current".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(updated.attrs["setting"], "current");
    store
        .rename_object_pinned((c, "x", &other), (b, "x", &current))
        .await
        .unwrap();
    store
        .replace_object_meta_pinned((b, &current), "x", stale_meta, None)
        .await
        .unwrap();
    let deleted = store.delete_object_pinned(b, "x", &current).await.unwrap();
    assert_eq!(
        deleted.and_then(|info| info.meta.content_type).as_deref(),
        Some("text/stale")
    );
    let owner = BucketPin::owned_by("acct");
    assert!(
        store
            .delete_object_pinned(b, "k", &owner)
            .await
            .unwrap()
            .is_some()
    );
    // Now empty, the bucket is still not the one a stale pin names.
    for pin in [BucketPin::of(&first), BucketPin::owned_by("stranger")] {
        let outcome = store.delete_bucket_pinned(b, &pin).await;
        assert!(
            matches!(outcome, Err(StoreError::NoSuchBucket)),
            "{pin:?}: {outcome:?}"
        );
    }
    assert_eq!(
        store.bucket(b).await.unwrap().incarnation,
        second.incarnation
    );
    store.delete_bucket_pinned(b, &current).await.unwrap();
    assert!(matches!(
        store.bucket(b).await,
        Err(StoreError::NoSuchBucket)
    ));
}

/// Creates bucket `name` of account `acct` in `root`, marked in `group`.
async fn create_grouped(root: &Store, group: &Store, name: &str) -> Result<BucketInfo, StoreError> {
    grouped::create_bucket(root, group, "acct", name, "r", BTreeMap::new()).await
}

/// A root store and the store of one index group beside it.
fn root_and_group(dir: &std::path::Path) -> (Store, Store) {
    let root = open(dir);
    let mut config = StoreConfig::new(dir.join("unused"));
    config.min_part_size = 8;
    let group = root.open_group(1, config).unwrap();
    (root, group)
}

#[tokio::test]
async fn a_group_marks_the_roots_buckets_by_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let (root, group) = root_and_group(dir.path());
    let attrs = BTreeMap::from([("acl".to_owned(), "public-read".to_owned())]);
    let first = grouped::create_bucket(&root, &group, "acct", "b", "r", attrs)
        .await
        .unwrap();
    assert_eq!(root.bucket("b").await.unwrap(), first);

    // The marker: the root's identity of the bucket, not its settings.
    let marker = group.bucket("b").await.unwrap();
    assert!(marker.attrs.is_empty(), "{marker:?}");
    assert_eq!(
        (&marker.account, marker.incarnation, marker.created_ms),
        (&first.account, first.incarnation, first.created_ms)
    );
    assert_eq!(group.put_bucket_marker(&first).await.unwrap(), marker);
    assert_eq!(grouped::marker(&root, &group, "b").await.unwrap(), marker);
    put(&group, "b", "k", b"in the group").await.unwrap();
    assert!(matches!(
        root.head_object("b", "k").await,
        Err(StoreError::NoSuchKey)
    ));
    let upload = group
        .create_upload("b", "mp", ObjectMeta::default(), None)
        .await
        .unwrap();

    // Deleting refuses a bucket with objects, and changes nothing.
    assert!(matches!(
        grouped::delete_bucket(&root, &group, "b", None).await,
        Err(StoreError::BucketNotEmpty)
    ));
    assert_eq!(root.bucket("b").await.unwrap(), first);
    assert_eq!(get(&group, "b", "k").await.unwrap(), b"in the group");
    // An earlier incarnation's deletion leaves this one alone.
    group
        .delete_bucket_incarnation("b", first.incarnation - 1)
        .await
        .unwrap();
    assert_eq!(group.bucket("b").await.unwrap(), marker);

    group.delete_object("b", "k").await.unwrap();
    grouped::delete_bucket(&root, &group, "b", None)
        .await
        .unwrap();
    for store in [&root, &group] {
        assert!(matches!(
            store.bucket("b").await,
            Err(StoreError::NoSuchBucket)
        ));
    }
    assert!(matches!(
        group.upload("b", "mp", &upload.upload_id).await,
        Err(StoreError::NoSuchUpload | StoreError::NoSuchBucket)
    ));
    assert!(matches!(
        put(&group, "b", "k", b"late").await,
        Err(StoreError::NoSuchBucket)
    ));
    // A marker put that comes after the deletion (a repair that read the
    // root just before it) does not bring the bucket back.
    assert!(matches!(
        group.put_bucket_marker(&first).await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(matches!(
        group.bucket("b").await,
        Err(StoreError::NoSuchBucket)
    ));
    // Retried, each step is done already.
    group
        .delete_bucket_incarnation("b", first.incarnation)
        .await
        .unwrap();

    // Created again: a later incarnation, which the fence does not stop,
    // and which a write decided against the first does not reach.
    let second = create_grouped(&root, &group, "b").await.unwrap();
    assert!(second.incarnation > first.incarnation);
    assert!(matches!(
        group.put_bucket_marker(&first).await,
        Err(StoreError::NoSuchBucket)
    ));
    let refused = put_pinned(&group, "b", "k", PutConditions::for_bucket(&first)).await;
    assert!(
        matches!(refused, Err(StoreError::NoSuchBucket)),
        "{refused:?}"
    );
    put_pinned(&group, "b", "k", PutConditions::for_bucket(&second))
        .await
        .unwrap();
    assert_eq!(get(&group, "b", "k").await.unwrap(), b"pinned");
}

#[tokio::test]
async fn a_bucket_life_cut_short_is_finished_by_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let (root, group) = root_and_group(dir.path());

    // Created in the root, never marked: the first call marks it.
    let created = root.create_bucket("acct", "b", "r").await.unwrap();
    assert!(matches!(
        group.bucket("b").await,
        Err(StoreError::NoSuchBucket)
    ));
    let marker = grouped::marker(&root, &group, "b").await.unwrap();
    assert_eq!(marker.incarnation, created.incarnation);
    put(&group, "b", "k", b"x").await.unwrap();
    group.delete_object("b", "k").await.unwrap();

    // Deleted in the group, not yet in the root: the next call finishes
    // the deletion rather than marking the bucket again.
    group
        .delete_bucket_incarnation("b", created.incarnation)
        .await
        .unwrap();
    assert_eq!(root.bucket("b").await.unwrap(), created);
    assert!(matches!(
        grouped::marker(&root, &group, "b").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(matches!(
        root.bucket("b").await,
        Err(StoreError::NoSuchBucket)
    ));

    // The same, met by a creation of the name: the deletion is finished,
    // and the name taken by a new bucket.
    let before = create_grouped(&root, &group, "e").await.unwrap();
    group
        .delete_bucket_incarnation("e", before.incarnation)
        .await
        .unwrap();
    let after = create_grouped(&root, &group, "e").await.unwrap();
    assert!(after.incarnation > before.incarnation);
    assert_eq!(
        group.bucket("e").await.unwrap().incarnation,
        after.incarnation
    );
    assert!(matches!(
        create_grouped(&root, &group, "e").await,
        Err(StoreError::BucketAlreadyOwnedByYou)
    ));

    // Deleted before its marker was ever written: the group still fences
    // the incarnation.
    let unmarked = root.create_bucket("acct", "c", "r").await.unwrap();
    grouped::delete_bucket(&root, &group, "c", None)
        .await
        .unwrap();
    assert!(matches!(
        group.put_bucket_marker(&unmarked).await,
        Err(StoreError::NoSuchBucket)
    ));

    // A marker an earlier bucket of the name left (the root deleted it by
    // other means) is not written over while it holds objects.
    let stale = root.create_bucket("acct", "d", "r").await.unwrap();
    group.put_bucket_marker(&stale).await.unwrap();
    put(&group, "d", "left", b"earlier").await.unwrap();
    root.delete_bucket("d").await.unwrap();
    let later = root.create_bucket("acct", "d", "r").await.unwrap();
    assert!(matches!(
        group.put_bucket_marker(&later).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(get(&group, "d", "left").await.unwrap(), b"earlier");
    group.delete_object("d", "left").await.unwrap();
    let replaced = group.put_bucket_marker(&later).await.unwrap();
    assert_eq!(replaced.incarnation, later.incarnation);
}

/// The root store in `dir`, the stores of `count` index groups beside it,
/// and a store routed over all of them.
async fn routed(
    dir: &std::path::Path,
    count: u16,
) -> (Store, Vec<Store>, Result<Store, StoreError>) {
    let root = reopen(dir).await;
    let mut config = StoreConfig::new(dir.join("unused"));
    config.min_part_size = 8;
    let groups: Vec<Store> = (1..=count)
        .map(|group| root.open_group(group, config.clone()).unwrap())
        .collect();
    let store = Store::route(root.clone(), groups.clone()).await;
    (root, groups, store)
}

/// Uploads `bucket/key` in parts of `parts`, completed.
async fn put_multipart(store: &Store, bucket: &str, key: &str, parts: &[&[u8]]) -> ObjectInfo {
    let upload = store
        .create_upload(bucket, key, ObjectMeta::default(), None)
        .await
        .unwrap();
    let mut chosen = Vec::new();
    for (number, body) in (1u32..).zip(parts) {
        let body = Bytes::copy_from_slice(body);
        let staged = store
            .stage_part(
                bucket,
                stream::iter([Ok::<_, std::io::Error>(body)]),
                &options(),
            )
            .await
            .ok()
            .unwrap();
        let part = store.put_part(&upload, number, staged, None).await.unwrap();
        chosen.push(CompletedPart {
            part_number: number,
            etag: part.etag,
        });
    }
    store
        .complete_upload(&upload, chosen, PutConditions::default())
        .await
        .unwrap()
}

/// Which of `groups` holds `bucket/key`.
async fn holders(groups: &[Store], bucket: &str, key: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        if group.head_object(bucket, key).await.is_ok() {
            found.push(index);
        }
    }
    found
}

/// Each index group sweeps the extents tagged with its buckets' hashes
/// (`group_tags`) against its own records only: it deletes its orphans,
/// and no extent that another group's records name.
#[tokio::test]
async fn each_index_group_sweeps_its_own_orphans_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    let big = vec![5u8; 100_000];
    let names: Vec<String> = (0..12).map(|n| format!("bucket-{n}")).collect();
    let mut group_of = BTreeMap::new();
    for name in &names {
        store.create_bucket("acct", name, "r").await.unwrap();
        put(&store, name, "kept", &big).await.unwrap();
        group_of.insert(name.clone(), holders(&groups, name, "kept").await[0]);
    }
    let used: BTreeSet<usize> = group_of.values().copied().collect();
    assert_eq!(used.len(), 3, "twelve buckets in every group: {group_of:?}");
    // In the first bucket's group.
    orphan(&store, &names[0], &big).await;
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    for (index, group) in groups.iter().enumerate() {
        let tags = group_tags(index, groups.len()).unwrap();
        let swept = group.sweep_orphans(later, tags).await.unwrap().deleted;
        let expected = usize::from(index == group_of[&names[0]]);
        assert_eq!(swept, expected, "group {index}");
    }
    for name in &names {
        assert_eq!(get(&store, name, "kept").await.unwrap(), big);
    }
    assert_eq!(
        store.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
        0
    );
}

/// An index group takes only the markers of buckets that its root's count
/// of groups places in it, and one that holds no bucket sweeps nothing,
/// whatever its tags hold: a gateway counting the groups otherwise (nodes
/// given another `--index-groups`) writes nothing there, and a group
/// founded beside a pool in use deletes nothing.
#[tokio::test]
async fn a_group_takes_only_its_own_buckets_and_sweeps_only_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let (root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    store.create_bucket("acct", "bucket-0", "r").await.unwrap();
    let bucket = root.bucket("bucket-0").await.unwrap();
    let held = holders_of_marker(&groups, "bucket-0").await;
    assert_eq!(held.len(), 1, "{held:?}");
    for (index, group) in groups.iter().enumerate() {
        let taken = group.put_bucket_marker(&bucket).await;
        match index == held[0] {
            true => assert!(taken.is_ok(), "{taken:?}"),
            false => assert!(
                matches!(&taken, Err(StoreError::InvalidArgument(why)) if why.contains("belongs to index group")),
                "group {index}: {taken:?}"
            ),
        }
    }

    // An orphan of bucket-0, under its group's tags: the group without a
    // bucket that sweeps those tags (as if it counted otherwise) keeps it.
    let big = vec![3u8; 100_000];
    orphan(&store, "bucket-0", &big).await;
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    let empty = (0..groups.len()).find(|index| *index != held[0]).unwrap();
    let tags = group_tags(held[0], groups.len()).unwrap();
    let swept = groups[empty]
        .sweep_orphans(later, tags.clone())
        .await
        .unwrap();
    assert_eq!(swept.deleted, 0);
    let swept = groups[held[0]].sweep_orphans(later, tags).await.unwrap();
    assert_eq!(swept.deleted, 1);
}

/// The groups (by index) that hold a marker of `bucket`.
async fn holders_of_marker(groups: &[Store], bucket: &str) -> Vec<usize> {
    let mut holding = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        if group.bucket(bucket).await.is_ok() {
            holding.push(index);
        }
    }
    holding
}

#[tokio::test]
async fn a_routed_store_keeps_each_buckets_objects_in_one_group() {
    let dir = tempfile::tempdir().unwrap();
    let (root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    let mut changes = store.subscribe();
    let names: Vec<String> = (0..12).map(|n| format!("bucket-{n}")).collect();
    let mut group_of = BTreeMap::new();
    for name in &names {
        store.create_bucket("acct", name, "r").await.unwrap();
        put(&store, name, "k", name.as_bytes()).await.unwrap();
        // In one group, not in the root, which keeps the bucket record.
        let holding = holders(&groups, name, "k").await;
        assert_eq!(holding.len(), 1, "{name}: {holding:?}");
        group_of.insert(name.clone(), holding[0]);
        assert!(matches!(
            root.head_object(name, "k").await,
            Err(StoreError::NoSuchKey)
        ));
        assert_eq!(
            groups[holding[0]].bucket(name).await.unwrap().attrs.len(),
            0
        );
    }
    let used: BTreeSet<usize> = group_of.values().copied().collect();
    assert_eq!(used.len(), 3, "twelve buckets in every group: {group_of:?}");
    for name in &names {
        assert_eq!(get(&store, name, "k").await.unwrap(), name.as_bytes());
        let query = ListQuery {
            max_keys: 100,
            ..Default::default()
        };
        let page = store.list_objects(name, query).await.unwrap();
        assert_eq!(keys_of(&page.entries), ["k"]);
    }
    // Every group's changes reach the routed store's subscribers.
    let mut puts = BTreeSet::new();
    while let Ok(event) = changes.try_recv() {
        if event.kind == ChangeKind::ObjectPut {
            puts.insert(event.bucket);
        }
    }
    assert_eq!(puts, names.iter().cloned().collect::<BTreeSet<_>>());
    let usage = store.account_usage("acct").await.unwrap();
    assert_eq!(usage.len(), 12);
    assert!(
        usage
            .iter()
            .all(|(bucket, usage)| usage.objects == 1 && usage.bytes == bucket.name.len() as u64)
    );

    // Multipart uploads, in the bucket's group.
    put_multipart(&store, &names[0], "mp", &[b"0123456789", b"xyz"]).await;
    assert_eq!(
        get(&store, &names[0], "mp").await.unwrap(),
        b"0123456789xyz"
    );
    assert_eq!(
        holders(&groups, &names[0], "mp").await,
        [group_of[&names[0]]]
    );

    // Renames within a group are one batch (across groups: the next test).
    let same = names[1..]
        .iter()
        .find(|name| group_of[*name] == group_of[&names[0]])
        .expect("two buckets in one group");
    let source = store.head_object(&names[0], "mp").await.unwrap();
    let moved = store
        .rename_object(&names[0], "mp", same, "moved")
        .await
        .unwrap();
    assert_eq!(moved.extents, source.extents, "moved without a copy");
    assert_eq!(get(&store, same, "moved").await.unwrap(), b"0123456789xyz");

    // Deleting goes through both.
    assert!(matches!(
        store.delete_bucket(&names[0]).await,
        Err(StoreError::BucketNotEmpty)
    ));
    store.delete_object(&names[0], "k").await.unwrap();
    store.delete_bucket(&names[0]).await.unwrap();
    assert!(matches!(
        root.bucket(&names[0]).await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(matches!(
        groups[group_of[&names[0]]].bucket(&names[0]).await,
        Err(StoreError::NoSuchBucket)
    ));

    // The number of groups is the store's for good.
    drop((store, root, groups));
    let (_, _, refused) = routed(dir.path(), 2).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidArgument(ref text)) if text.contains("over 3")),
        "{:?}",
        refused.as_ref().err()
    );
    drop(refused);
    let (root, _, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    assert_eq!(
        get(&store, &names[5], "k").await.unwrap(),
        names[5].as_bytes()
    );
    assert_eq!(store.list_buckets("acct").await.unwrap().len(), 11);

    // The account's usage, one call per group: a bucket its group has not
    // marked yet (a creation cut short) counts nothing.
    root.create_bucket("acct", "unmarked", "r").await.unwrap();
    let usage = store.account_usage("acct").await.unwrap();
    let counted: BTreeMap<&str, u64> = usage
        .iter()
        .map(|(bucket, usage)| (bucket.name.as_str(), usage.objects))
        .collect();
    assert_eq!(counted.len(), 12, "{counted:?}");
    assert_eq!(counted["unmarked"], 0);
    for name in &names[1..] {
        // `same` holds its own object and the one moved in.
        let expected = if name == same { 2 } else { 1 };
        assert_eq!(counted[name.as_str()], expected, "{name}");
    }
}

/// A rename into a bucket of another index group copies the bytes into
/// extents of the destination's tag, commits the same object there (ETag,
/// parts, time, metadata) and deletes the source; only the version copied:
/// a later write of the source's key stays.
#[tokio::test]
async fn a_rename_across_index_groups_copies_then_deletes_the_version_copied() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    let names: Vec<String> = (0..12).map(|n| format!("bucket-{n}")).collect();
    for name in &names {
        store.create_bucket("acct", name, "r").await.unwrap();
        put(&store, name, "k", name.as_bytes()).await.unwrap();
    }
    let group_of = |name: &str| {
        let (groups, name) = (groups.clone(), name.to_owned());
        async move { holders(&groups, &name, "k").await[0] }
    };
    let from = &names[0];
    let mut to = None;
    for name in &names[1..] {
        if group_of(name).await != group_of(from).await {
            to = Some(name.clone());
            break;
        }
    }
    let to = to.expect("a bucket in another group");

    // A body in extents, with metadata; the destination's key is taken.
    // Three extents.
    let body: Vec<u8> = (0..9_000_000u32).map(|n| (n % 253) as u8).collect();
    let chunks = body
        .chunks(700_000)
        .map(|chunk| Ok::<_, std::io::Error>(Bytes::copy_from_slice(chunk)));
    let staged = store
        .stage(from, stream::iter(chunks.collect::<Vec<_>>()), &options())
        .await
        .ok()
        .unwrap();
    let meta = ObjectMeta {
        content_type: Some("image/gif".into()),
        user: BTreeMap::from([("colour".into(), "blue".into())]),
        ..ObjectMeta::default()
    };
    store
        .put_object(
            from,
            "big",
            staged,
            meta.clone(),
            None,
            PutConditions::default(),
        )
        .await
        .unwrap();
    put(&store, &to, "moved", b"to be replaced").await.unwrap();
    let source = store.head_object(from, "big").await.unwrap();
    let before = (
        store.bucket_usage(from).await.unwrap(),
        store.bucket_usage(&to).await.unwrap(),
    );
    let mut changes = store.subscribe();

    let moved = store
        .rename_object(from, "big", &to, "moved")
        .await
        .unwrap();
    assert_eq!(
        (moved.bucket.as_str(), moved.key.as_str()),
        (to.as_str(), "moved")
    );
    assert_eq!(
        (&moved.etag, moved.size, moved.last_modified_ms),
        (&source.etag, source.size, source.last_modified_ms)
    );
    assert_eq!(moved.meta, meta);
    assert_eq!(moved.extents.len(), 3);
    assert!(
        moved
            .extents
            .iter()
            .all(|extent| !source.extents.contains(extent)),
        "two records name one extent"
    );
    assert_eq!(store.head_object(&to, "moved").await.unwrap(), moved);
    assert_eq!(get(&store, &to, "moved").await.unwrap(), body);
    assert!(matches!(
        store.head_object(from, "big").await,
        Err(StoreError::NoSuchKey)
    ));
    assert_eq!(holders(&groups, &to, "moved").await, [group_of(&to).await]);
    let after = (
        store.bucket_usage(from).await.unwrap(),
        store.bucket_usage(&to).await.unwrap(),
    );
    assert_eq!(
        (after.0.objects, after.0.bytes),
        (before.0.objects - 1, before.0.bytes - body.len() as u64)
    );
    assert_eq!(
        (after.1.objects, after.1.bytes),
        (before.1.objects, before.1.bytes - 14 + body.len() as u64)
    );
    let mut seen = Vec::new();
    while let Ok(event) = changes.try_recv() {
        seen.push((event.kind, event.bucket, event.key.unwrap_or_default()));
    }
    assert!(
        seen.contains(&(ChangeKind::ObjectPut, to.clone(), "moved".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(ChangeKind::ObjectDeleted, from.clone(), "big".into())),
        "{seen:?}"
    );

    // Each group's sweep judges the copy by its own tag: it stays.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    for (index, group) in groups.iter().enumerate() {
        group
            .sweep_orphans(later, group_tags(index, groups.len()).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(get(&store, &to, "moved").await.unwrap(), body);

    // A multipart object keeps its ETag and parts; and it comes back.
    let multipart = put_multipart(&store, &to, "mp", &[b"0123456789", b"xyz"]).await;
    let back = store.rename_object(&to, "mp", from, "mp").await.unwrap();
    assert_eq!(
        (&back.etag, &back.part_sizes),
        (&multipart.etag, &vec![10, 3])
    );
    assert!(back.etag.ends_with("-2"), "{}", back.etag);
    assert_eq!(get(&store, from, "mp").await.unwrap(), b"0123456789xyz");

    // What is missing changes nothing.
    assert!(matches!(
        store.rename_object(from, "nothing", &to, "x").await,
        Err(StoreError::NoSuchKey)
    ));
    assert!(matches!(
        store.rename_object(from, "mp", "no-such-bucket", "x").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert_eq!(get(&store, from, "mp").await.unwrap(), b"0123456789xyz");

    // The source's deletion takes the version copied only, as a group's
    // member is asked it: not the same bytes written again since (only the
    // time tells them apart), and not a copy of the copy (two opposite
    // renames at once: only the copy's nonce tells it from its source).
    let group = &groups[group_of(from).await];
    let delete = |version: &ObjectInfo| {
        let call = serde_json::json!({
            "op": "delete_object_version", "bucket": from, "key": "k", "version": version,
        });
        let group = group.clone();
        async move {
            let answer = group.serve_meta(call.to_string().as_bytes(), None).await;
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            answer["outcome"].clone()
        }
    };
    let copied = store.head_object(from, "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    put(&store, from, "k", from.as_bytes()).await.unwrap();
    let rewritten = store.head_object(from, "k").await.unwrap();
    assert_eq!(rewritten.etag, copied.etag);
    assert_eq!(delete(&copied).await, serde_json::json!({"Ok": null}));
    store.rename_object(from, "k", &to, "k").await.unwrap();
    store.rename_object(&to, "k", from, "k").await.unwrap();
    let copy_of_copy = store.head_object(from, "k").await.unwrap();
    assert_eq!(
        (
            &copy_of_copy.etag,
            copy_of_copy.last_modified_ms,
            &copy_of_copy.extents
        ),
        (
            &rewritten.etag,
            rewritten.last_modified_ms,
            &rewritten.extents
        )
    );
    assert_eq!(delete(&rewritten).await, serde_json::json!({"Ok": null}));
    assert_eq!(get(&store, from, "k").await.unwrap(), from.as_bytes());
    let deleted = delete(&copy_of_copy).await;
    assert_eq!(
        deleted["Ok"]["etag"],
        copy_of_copy.etag.as_str(),
        "{deleted}"
    );
    assert!(matches!(
        store.head_object(from, "k").await,
        Err(StoreError::NoSuchKey)
    ));
}

#[tokio::test]
async fn a_root_routed_over_groups_refuses_the_object_calls_of_a_gateway_that_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (root, groups, store) = routed(dir.path(), 2).await;
    let store = store.unwrap();
    store.create_bucket("acct", "b", "r").await.unwrap();
    put(&store, "b", "k", b"in its group").await.unwrap();
    // What another gateway sends the root when it does not route: its
    // objects would go where no routed gateway looks.
    let ask = |call: serde_json::Value| {
        let root = root.clone();
        async move {
            let answer = root.serve_meta(call.to_string().as_bytes(), None).await;
            serde_json::from_slice::<serde_json::Value>(&answer).unwrap()
        }
    };
    for call in [
        serde_json::json!({"op": "head_object", "bucket": "b", "key": "k"}),
        serde_json::json!({"op": "list_objects", "bucket": "b", "query": ListQuery::default()}),
        serde_json::json!({"op": "delete_bucket", "name": "b"}),
    ] {
        let answer = ask(call.clone()).await;
        let refusal = answer["outcome"]["Err"]["InvalidArgument"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(refusal.contains("set index_groups = 2"), "{call}: {answer}");
    }
    // Bucket records and the count are the root's to answer.
    let answer = ask(serde_json::json!({"op": "bucket", "name": "b"})).await;
    assert_eq!(answer["outcome"]["Ok"]["name"], "b", "{answer}");
    let answer = ask(serde_json::json!({"op": "index_groups"})).await;
    assert_eq!(answer["outcome"]["Ok"], 2, "{answer}");
    assert_eq!(get(&store, "b", "k").await.unwrap(), b"in its group");
    // The groups' own stores take them, as their gateways send them.
    let mut marked = Vec::new();
    for group in &groups {
        if group.bucket("b").await.is_ok() {
            marked.push(group);
        }
    }
    assert_eq!(marked.len(), 1);
    let answer = marked[0]
        .serve_meta(
            serde_json::json!({"op": "head_object", "bucket": "b", "key": "k"})
                .to_string()
                .as_bytes(),
            None,
        )
        .await;
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["outcome"]["Ok"]["key"], "k", "{answer}");
}

/// A store that kept its buckets' objects itself moves them into their
/// index groups the first time it is routed (`split.rs`): objects with
/// their bytes, expiry and usage, uploads under way with their parts. The
/// root keeps the buckets and nothing of their objects, and the count is
/// the store's for good.
#[tokio::test]
async fn a_store_with_buckets_moves_their_objects_into_index_groups_when_first_routed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let names: Vec<String> = (0..9).map(|n| format!("bucket-{n}")).collect();
    let big = vec![7u8; 150_000];
    let mut expected: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for name in &names {
        store.create_bucket("acct", name, "r").await.unwrap();
        for (key, body) in [("a/small", b"tiny".to_vec()), ("a/big", big.clone())] {
            put(&store, name, key, &body).await.unwrap();
            expected.insert((name.clone(), key.to_owned()), body);
        }
        let object = put_multipart(&store, name, "whole", &[b"first part", b"second"]).await;
        assert_eq!(object.size, 16);
        expected.insert((name.clone(), "whole".into()), b"first partsecond".to_vec());
    }
    let now = expire_in_an_hour(&store, &names[0], "a/small").await;
    let pending = store
        .create_upload(&names[1], "later", ObjectMeta::default(), None)
        .await
        .unwrap();
    let staged = store
        .stage_part(
            &names[1],
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(
                b"uploaded early",
            ))]),
            &options(),
        )
        .await
        .ok()
        .unwrap();
    let early = store.put_part(&pending, 1, staged, None).await.unwrap();
    let usage_before = store.account_usage("acct").await.unwrap();
    drop(store);

    let (root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    assert!(
        !store.index_extents_tagged(),
        "the moved extents carry no tags"
    );
    let mut used = BTreeSet::new();
    for ((bucket, key), body) in &expected {
        assert_eq!(
            &get(&store, bucket, key).await.unwrap(),
            body,
            "{bucket}/{key}"
        );
        let holding = holders(&groups, bucket, key).await;
        assert_eq!(holding.len(), 1, "{bucket}/{key} in groups {holding:?}");
        used.extend(holding);
    }
    assert_eq!(used.len(), 3, "nine buckets in all three groups");
    for name in &names {
        let page = store
            .list_objects(
                name,
                ListQuery {
                    max_keys: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(keys_of(&page.entries), ["a/big", "a/small", "whole"]);
    }
    assert_eq!(store.account_usage("acct").await.unwrap(), usage_before);
    // The root holds no object, and not its objects' expiry either.
    assert!(!root.expiry_due(now + 3600).await.unwrap());
    let expiring_group = holders(&groups, &names[0], "a/small").await[0];
    assert_eq!(
        groups[expiring_group].expire_due(now + 3600).await.unwrap(),
        1
    );
    assert!(matches!(
        store.head_object(&names[0], "a/small").await,
        Err(StoreError::NoSuchKey)
    ));
    // The upload under way goes on where its bucket now is.
    let pending = store
        .upload(&names[1], "later", &pending.upload_id)
        .await
        .unwrap();
    let parts = vec![CompletedPart {
        part_number: 1,
        etag: early.etag,
    }];
    store
        .complete_upload(&pending, parts, PutConditions::default())
        .await
        .unwrap();
    assert_eq!(
        get(&store, &names[1], "later").await.unwrap(),
        b"uploaded early"
    );
    drop((root, groups, store));

    // Started again: everything where it was.
    let (root, groups, store) = routed(dir.path(), 3).await;
    let store = store.unwrap();
    assert_eq!(get(&store, &names[1], "a/big").await.unwrap(), big);
    assert_eq!(
        get(&store, &names[1], "later").await.unwrap(),
        b"uploaded early"
    );
    drop((root, groups, store));
    let (_, _, refused) = routed(dir.path(), 2).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidArgument(ref text)) if text.contains("over 3 index groups, not 2")),
        "{:?}",
        refused.as_ref().err()
    );
}

/// The root records who holds its index groups with their count: groups
/// held elsewhere (the storage nodes of a list) are routed to again only
/// with the same list, never as the root's own, and the other way round;
/// such a root sweeps no orphans, as it sees none of the groups' records.
#[tokio::test]
async fn a_root_records_who_holds_its_index_groups() {
    let nodes = Some("the storage nodes a:1,b:1,c:1".to_owned());
    let dir = tempfile::tempdir().unwrap();
    let root = reopen(dir.path()).await;
    let groups: Vec<Store> = (1..=2)
        .map(|group| {
            root.open_group(group, StoreConfig::new(dir.path().join("unused")))
                .unwrap()
        })
        .collect();
    Store::route_held_by(root.clone(), groups.clone(), nodes.clone())
        .await
        .unwrap();
    Store::route_held_by(root.clone(), groups.clone(), nodes.clone())
        .await
        .unwrap();
    let refused = |outcome: Result<Store, StoreError>, why: &str| match outcome {
        Err(StoreError::InvalidArgument(text)) => assert!(text.contains(why), "{text}"),
        other => panic!("{:?}", other.map(|_| "routed")),
    };
    refused(
        Store::route(root.clone(), groups.clone()).await,
        "by the storage nodes a:1,b:1,c:1, not with the root group",
    );
    refused(
        Store::route_held_by(
            root.clone(),
            groups.clone(),
            Some("the storage nodes a:1".into()),
        )
        .await,
        "not by the storage nodes a:1",
    );
    let swept = root
        .sweep_orphans(std::time::SystemTime::now(), strata_pool::ALL_TAGS)
        .await;
    assert!(
        matches!(swept, Err(StoreError::InvalidArgument(_))),
        "{swept:?}"
    );
    drop((root, groups));

    let other = tempfile::tempdir().unwrap();
    let (root, groups, routed) = routed(other.path(), 2).await;
    routed.unwrap();
    refused(
        Store::route_held_by(root, groups, nodes).await,
        "with the root group, not by the storage nodes",
    );
}

/// Puts the body `pinned` at `bucket/key` under `conditions`.
async fn put_pinned(
    store: &Store,
    bucket: &str,
    key: &str,
    conditions: PutConditions,
) -> Result<(), StoreError> {
    let staged = store
        .stage(
            bucket,
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"pinned"))]),
            &options(),
        )
        .await
        .ok()
        .unwrap();
    store
        .put_object(bucket, key, staged, ObjectMeta::default(), None, conditions)
        .await
        .map(drop)
}

#[tokio::test]
async fn delimiter_listing_pages_through_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    for key in ["a", "d/1", "d/2", "e/x/1", "f"] {
        put(&store, "b", key, b"x").await.unwrap();
    }
    let mut query = ListQuery {
        delimiter: Some("/".into()),
        max_keys: 2,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_objects("b", query.clone()).await.unwrap();
        seen.extend(keys_of(&page.entries));
        if !page.is_truncated {
            break;
        }
        query.start_after = page.next_marker;
    }
    assert_eq!(seen, ["a", "P:d/", "P:e/", "f"]);
    let page = store
        .list_objects(
            "b",
            ListQuery {
                prefix: "e/".into(),
                max_keys: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&page.entries), ["e/x/1"]);
}

#[tokio::test]
async fn multipart_assembles_chosen_parts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    let upload = store
        .create_upload("b", "mp", ObjectMeta::default(), None)
        .await
        .unwrap();
    let mut etags = Vec::new();
    for (number, body) in [(1u32, &b"0123456789"[..]), (2, b"abcdefghij"), (3, b"xyz")] {
        let staged = store
            .stage_part(
                "b",
                stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(body))]),
                &options(),
            )
            .await
            .ok()
            .unwrap();
        etags.push(
            store
                .put_part(&upload, number, staged, None)
                .await
                .unwrap()
                .etag,
        );
    }
    let wrong_order = vec![
        CompletedPart {
            part_number: 2,
            etag: etags[1].clone(),
        },
        CompletedPart {
            part_number: 1,
            etag: etags[0].clone(),
        },
    ];
    assert!(matches!(
        store
            .complete_upload(&upload, wrong_order, PutConditions::default())
            .await,
        Err(StoreError::InvalidPartOrder)
    ));
    let wrong_etag = vec![CompletedPart {
        part_number: 1,
        etag: "00".into(),
    }];
    assert!(matches!(
        store
            .complete_upload(&upload, wrong_etag, PutConditions::default())
            .await,
        Err(StoreError::InvalidPart(1, _))
    ));
    let chosen = vec![
        CompletedPart {
            part_number: 1,
            etag: etags[0].clone(),
        },
        CompletedPart {
            part_number: 3,
            etag: format!("\"{}\"", etags[2]),
        },
    ];
    let info = store
        .complete_upload(&upload, chosen, PutConditions::default())
        .await
        .unwrap();
    assert!(info.etag.ends_with("-2"));
    assert_eq!(get(&store, "b", "mp").await.unwrap(), b"0123456789xyz");
    assert!(matches!(
        store.upload("b", "mp", &upload.upload_id).await,
        Err(StoreError::NoSuchUpload)
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, prop::collection::vec(any::<u8>(), 0..40_000)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..12).prop_map(Op::Delete),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// The store behaves like a map from key to bytes, across reopens.
    #[test]
    fn behaves_like_a_map(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            store.create_bucket("a", "b", "r").await.unwrap();
            let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let key = format!("k/{k:02}");
                        put(&store, "b", &key, &v).await.unwrap();
                        model.insert(key, v);
                    }
                    Op::Delete(k) => {
                        let key = format!("k/{k:02}");
                        let deleted = store.delete_object("b", &key).await.unwrap();
                        assert_eq!(deleted.is_some(), model.remove(&key).is_some());
                    }
                    Op::Reopen => {
                        drop(store);
                        store = reopen(dir.path()).await;
                    }
                }
            }
            let page = store
                .list_objects("b", ListQuery { max_keys: 1000, ..Default::default() })
                .await
                .unwrap();
            let listed = keys_of(&page.entries);
            let expected: Vec<String> = model.keys().cloned().collect();
            assert_eq!(listed, expected);
            let usage = store.bucket_usage("b").await.unwrap();
            assert_eq!(usage.objects, model.len() as u64);
            assert_eq!(usage.bytes, model.values().map(|v| v.len() as u64).sum::<u64>());
            for (key, value) in &model {
                assert_eq!(&get(&store, "b", key).await.unwrap(), value);
            }
        });
    }
}

/// What a listing must return, computed from the whole key set.
fn model_listing(keys: &BTreeSet<String>, query: &ListQuery) -> Vec<String> {
    let ordered: Vec<&String> = if query.reverse {
        keys.iter().rev().collect()
    } else {
        keys.iter().collect()
    };
    let (marker, end) = (query.start_after.as_deref(), query.end_before.as_deref());
    let mut out: Vec<String> = Vec::new();
    for key in ordered {
        if !key.starts_with(&query.prefix) {
            continue;
        }
        let (before_marker, past_end) = if query.reverse {
            (
                marker.is_some_and(|m| key.as_str() >= m),
                end.is_some_and(|e| key.as_str() <= e),
            )
        } else {
            (
                marker.is_some_and(|m| key.as_str() <= m),
                end.is_some_and(|e| key.as_str() >= e),
            )
        };
        if before_marker {
            continue;
        }
        if past_end {
            break;
        }
        let rolled = query.delimiter.as_deref().and_then(|delim| {
            key[query.prefix.len()..]
                .find(delim)
                .map(|pos| key[..query.prefix.len() + pos + delim.len()].to_owned())
        });
        let entry = match rolled {
            Some(prefix) => {
                if !query.reverse && marker.is_some_and(|m| prefix.as_str() <= m) {
                    continue;
                }
                if query.reverse && end.is_some_and(|e| prefix.as_str() <= e) {
                    break;
                }
                format!("P:{prefix}")
            }
            None => key.clone(),
        };
        if out.last() == Some(&entry) {
            continue;
        }
        if out.len() >= query.max_keys {
            break;
        }
        out.push(entry);
    }
    out
}

fn listing_query() -> impl Strategy<Value = ListQuery> {
    let bound = prop::option::of("[ab/]{0,4}");
    (
        "[ab]{0,2}",
        prop::option::of(Just("/".to_owned())),
        bound.clone(),
        bound,
        1usize..8,
        any::<bool>(),
    )
        .prop_map(
            |(prefix, delimiter, start_after, end_before, max_keys, reverse)| ListQuery {
                prefix,
                delimiter,
                start_after,
                end_before,
                max_keys,
                reverse,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Every listing — forwards or reversed, with prefix, delimiter, both
    /// markers and a page size — is the model's.
    #[test]
    fn listings_match_the_model(
        keys in prop::collection::btree_set("[ab]{1,2}(/[ab]{1,2}){0,2}", 1..20),
        queries in prop::collection::vec(listing_query(), 1..8),
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path());
            store.create_bucket("a", "b", "r").await.unwrap();
            for key in &keys {
                put(&store, "b", key, b"x").await.unwrap();
            }
            for query in queries {
                let page = store.list_objects("b", query.clone()).await.unwrap();
                assert_eq!(keys_of(&page.entries), model_listing(&keys, &query), "{query:?}");
            }
        });
    }
}

/// The clock, in seconds since the epoch.
fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Gives `bucket/key` an expiry time an hour from now; answers now, in
/// seconds.
async fn expire_in_an_hour(store: &Store, bucket: &str, key: &str) -> u64 {
    let now = unix_now_secs();
    let expiring = ObjectMeta {
        delete_at: Some(now + 3600),
        ..ObjectMeta::default()
    };
    store
        .replace_object_meta(bucket, key, expiring, None)
        .await
        .unwrap();
    now
}

#[tokio::test]
async fn expired_objects_are_hidden_then_swept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    put(&store, "b", "stays", b"1").await.unwrap();
    put(&store, "b", "goes", b"22").await.unwrap();
    let now = expire_in_an_hour(&store, "b", "goes").await;
    // Not due yet: nothing is swept, the object reads.
    assert_eq!(store.expire_due(now).await.unwrap(), 0);
    assert_eq!(get(&store, "b", "goes").await.unwrap(), b"22");

    // Due: swept, gone from reads, listings and usage, announced on the feed.
    let mut feed = store.subscribe();
    assert_eq!(store.expire_due(now + 3600).await.unwrap(), 1);
    assert!(matches!(
        store.head_object("b", "goes").await,
        Err(StoreError::NoSuchKey)
    ));
    let page = store
        .list_objects(
            "b",
            ListQuery {
                max_keys: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&page.entries), ["stays"]);
    let usage = store.bucket_usage("b").await.unwrap();
    assert_eq!((usage.objects, usage.bytes), (1, 1));
    let event = feed.recv().await.unwrap();
    assert_eq!(
        (event.kind, event.key.as_deref()),
        (ChangeKind::ObjectDeleted, Some("goes"))
    );

    // A stale index entry (the object was overwritten without expiry) deletes nothing.
    let expiring = ObjectMeta {
        delete_at: Some(now + 10),
        ..ObjectMeta::default()
    };
    store
        .replace_object_meta("b", "stays", expiring, None)
        .await
        .unwrap();
    put(&store, "b", "stays", b"333").await.unwrap();
    assert_eq!(store.expire_due(now + 20).await.unwrap(), 0);
    assert_eq!(get(&store, "b", "stays").await.unwrap(), b"333");
}

/// Objects that expire faster than one sweep takes are not left behind: a
/// round sweeps while some are due (the embedded store runs one per tick,
/// a replicated service's leader logs one sweep per entry as many times).
#[tokio::test]
async fn an_expiry_round_takes_more_than_one_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("acct", "logs", "r").await.unwrap();
    let now = unix_now_secs();
    let count = 1_050;
    for n in 0..count {
        let staged = store
            .stage(
                "logs",
                stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"line"))]),
                &options(),
            )
            .await
            .ok()
            .unwrap();
        let meta = ObjectMeta {
            delete_at: Some(now + 60),
            ..ObjectMeta::default()
        };
        let key = format!("log-{n:05}");
        let conditions = PutConditions::default();
        store
            .put_object("logs", &key, staged, meta, None, conditions)
            .await
            .unwrap();
    }
    assert_eq!(store.expire_round(now + 60).await.unwrap(), count);
    assert!(!store.expiry_due(now + 60).await.unwrap());
    let usage = store.bucket_usage("logs").await.unwrap();
    assert_eq!(usage.objects, 0);
}

/// An object past its X-Delete-At that the sweep has not removed yet is
/// absent to conditional writes as to reads: `If-None-Match: *` creates
/// the key, and a DELETE finds nothing there (Swift's 404), though it
/// removes the record.
#[tokio::test]
async fn an_expired_object_not_swept_yet_is_absent_to_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("acct", "b", "r").await.unwrap();
    let now = unix_now_secs();
    let expired = ObjectMeta {
        delete_at: Some(now - 1),
        ..ObjectMeta::default()
    };
    for key in ["created", "deleted"] {
        put(&store, "b", key, b"old").await.unwrap();
        store
            .replace_object_meta("b", key, expired.clone(), None)
            .await
            .unwrap();
        assert!(matches!(
            store.head_object("b", key).await,
            Err(StoreError::NoSuchKey)
        ));
    }
    let only_new = PutConditions {
        if_none_match_any: true,
        ..Default::default()
    };
    put_pinned(&store, "b", "created", only_new).await.unwrap();
    assert_eq!(get(&store, "b", "created").await.unwrap(), b"pinned");
    assert!(store.delete_object("b", "deleted").await.unwrap().is_none());
    let usage = store.bucket_usage("b").await.unwrap();
    assert_eq!((usage.objects, usage.bytes), (1, 6));
}

#[tokio::test]
async fn usage_follows_puts_overwrites_deletes_and_bucket_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    put(&store, "b", "x", &[0; 100]).await.unwrap();
    put(&store, "b", "x", &[0; 40]).await.unwrap();
    put(&store, "b", "y", &[0; 2]).await.unwrap();
    let usage = store.bucket_usage("b").await.unwrap();
    assert_eq!((usage.objects, usage.bytes), (2, 42));
    store.delete_object("b", "y").await.unwrap();
    store.delete_object("b", "x").await.unwrap();
    store.delete_bucket("b").await.unwrap();
    store.create_bucket("a", "b", "r").await.unwrap();
    let usage = store.bucket_usage("b").await.unwrap();
    assert_eq!(
        (usage.objects, usage.bytes),
        (0, 0),
        "a new bucket starts from zero"
    );
    let accounts = store.account_usage("a").await.unwrap();
    assert_eq!(accounts.len(), 1);
}

#[tokio::test]
async fn rename_moves_the_record_atomically_and_announces_both_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.create_bucket("a", "b", "r").await.unwrap();
    store.create_bucket("a", "c", "r").await.unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|n| (n % 253) as u8).collect();
    let etag = put(&store, "b", "upload.filepart", &big).await.unwrap();
    put(&store, "b", "final", b"old bytes").await.unwrap();
    let mut feed = store.subscribe();

    let moved = store
        .rename_object("b", "upload.filepart", "b", "final")
        .await
        .unwrap();
    assert_eq!(
        (moved.key.as_str(), moved.etag.as_str()),
        ("final", etag.as_str())
    );
    assert_eq!(get(&store, "b", "final").await.unwrap(), big);
    assert!(matches!(
        store.head_object("b", "upload.filepart").await,
        Err(StoreError::NoSuchKey)
    ));
    let deleted = feed.recv().await.unwrap();
    assert_eq!(
        (deleted.kind, deleted.key.as_deref()),
        (ChangeKind::ObjectDeleted, Some("upload.filepart"))
    );
    let written = feed.recv().await.unwrap();
    assert_eq!(
        (written.kind, written.key.as_deref()),
        (ChangeKind::ObjectPut, Some("final"))
    );
    // The replaced object's bytes are no longer counted.
    let usage = store.bucket_usage("b").await.unwrap();
    assert_eq!((usage.objects, usage.bytes), (1, big.len() as u64));

    // Across buckets, and the usage of both follows.
    store
        .rename_object("b", "final", "c", "dir/moved")
        .await
        .unwrap();
    assert_eq!(get(&store, "c", "dir/moved").await.unwrap(), big);
    let (from, to) = (
        store.bucket_usage("b").await.unwrap(),
        store.bucket_usage("c").await.unwrap(),
    );
    assert_eq!((from.objects, from.bytes), (0, 0));
    assert_eq!((to.objects, to.bytes), (1, big.len() as u64));

    // What cannot be renamed changes nothing.
    assert!(matches!(
        store.rename_object("b", "missing", "b", "x").await,
        Err(StoreError::NoSuchKey)
    ));
    assert!(matches!(
        store.rename_object("c", "dir/moved", "c", "../x").await,
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        store.rename_object("c", "dir/moved", "nope", "x").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert_eq!(get(&store, "c", "dir/moved").await.unwrap(), big);
    // The moved extents survive the old name's garbage collection.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    store.sweep_orphans(later, ALL_TAGS).await.unwrap();
    assert_eq!(get(&store, "c", "dir/moved").await.unwrap(), big);
}

#[tokio::test]
async fn a_replica_export_replaces_another_replicas_records() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, target) = (open(source_dir.path()), open(target_dir.path()));
    source.create_bucket("a", "kept", "r").await.unwrap();
    put(&source, "kept", "x", b"from the source").await.unwrap();
    target.create_bucket("a", "stale", "r").await.unwrap();
    put(&target, "stale", "y", b"only on the target")
        .await
        .unwrap();
    put(&target, "stale", "z", b"and more of it").await.unwrap();

    let checkpoint = source
        .checkpoint_replica(source_dir.path().join("checkpoint"))
        .await
        .unwrap();
    let source_feed = source.feed_since(0, 100).await.unwrap();
    // The export is of the instant of the checkpoint, not of its writing.
    put(&source, "kept", "later", b"after the checkpoint")
        .await
        .unwrap();
    let mut blob = Vec::new();
    checkpoint.export(&mut blob).unwrap();
    drop(checkpoint);
    assert!(!source_dir.path().join("checkpoint").exists());
    // An export cut anywhere (even between two records: without its end),
    // damaged, or with bytes after its end is refused by the check, which
    // changes nothing.
    let without_end = blob[..blob.len() - 13].to_vec();
    let mut damaged = blob.clone();
    damaged[blob.len() / 2] ^= 0x10;
    let mut trailing = blob.clone();
    trailing.push(0);
    for bad in [
        blob[..blob.len() - 3].to_vec(),
        without_end.clone(),
        damaged,
        trailing,
    ] {
        let checked = target.check_replica_export(std::io::Cursor::new(bad)).await;
        assert!(
            matches!(checked, Err(StoreError::Corrupt(_))),
            "{checked:?}"
        );
    }
    assert!(target.head_object("stale", "y").await.is_ok());
    // The format before exports had an end is still read.
    let mut without_end_format = without_end.clone();
    without_end_format[..8].copy_from_slice(b"STRATAR1");
    target
        .check_replica_export(std::io::Cursor::new(without_end_format))
        .await
        .unwrap();
    // One found bad while it is imported leaves the replica marked as cut
    // short, for the member to wipe it.
    assert!(
        target
            .import_replica(std::io::Cursor::new(without_end))
            .await
            .is_err()
    );
    assert!(target.replica_import_interrupted().await.unwrap());

    let mut events = target.subscribe();
    target
        .import_replica(std::io::Cursor::new(blob))
        .await
        .unwrap();
    assert_eq!(events.recv().await.unwrap().kind, ChangeKind::Resync);
    assert!(matches!(
        target.bucket("stale").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(target.head_object("kept", "x").await.is_ok());
    assert!(matches!(
        target.head_object("kept", "later").await,
        Err(StoreError::NoSuchKey)
    ));
    // The usage counters (merged records) travel as they read.
    let usage = target.bucket_usage("kept").await.unwrap();
    assert_eq!((usage.objects, usage.bytes), (1, 15));
    assert!(!target.replica_import_interrupted().await.unwrap());
    let target_feed = target.feed_since(0, 100).await.unwrap();
    assert_eq!(
        serde_json::to_string(&source_feed).unwrap(),
        serde_json::to_string(&target_feed).unwrap()
    );
    // New events follow the imported feed's numbers.
    put(&target, "kept", "w", b"after").await.unwrap();
    let after = target.feed_since(0, 100).await.unwrap();
    assert_eq!(after.len(), source_feed.len() + 1);
    assert_eq!(
        after.last().unwrap().seq,
        source_feed.last().unwrap().seq + 1
    );

    target.wipe_replica().await.unwrap();
    assert!(target.head_object("kept", "x").await.is_err());
    assert!(target.feed_since(0, 100).await.unwrap().is_empty());
}

/// Index groups (`docs/design/index-on-the-ring.md`) keep their records in
/// one database under keys of their own: the same bucket and key names in
/// three groups are three objects, each with its own listing, feed, usage
/// and catalog; the root's orphan sweep keeps the extents only a group
/// names; one group's export, import and wipe touch that group alone; and
/// all of it survives a restart.
#[tokio::test]
async fn groups_share_a_database_without_seeing_each_others_records() {
    let dir = tempfile::tempdir().unwrap();
    let big = |fill: u8| vec![fill; 100_000];
    let group_config = || {
        let mut config = StoreConfig::new(dir.path().join("unused"));
        config.min_part_size = 8;
        config
    };
    {
        let root = open(dir.path());
        let groups = [
            root.open_group(1, group_config()).unwrap(),
            root.open_group(2, group_config()).unwrap(),
        ];
        assert!(groups[0].open_group(3, group_config()).is_err());
        // A group opened again is the store already open: one feed.
        let again = root.open_group(1, group_config()).unwrap();
        again.create_bucket("other", "c", "r").await.unwrap();
        again.delete_bucket("c").await.unwrap();
        let stores = [&root, &groups[0], &groups[1]];
        for (n, store) in stores.iter().enumerate() {
            let account = format!("account-{n}");
            store.create_bucket(&account, "b", "r").await.unwrap();
            put(store, "b", "k", format!("body {n}").as_bytes())
                .await
                .unwrap();
            put(store, "b", "big", &big(n as u8)).await.unwrap();
            store
                .catalog_put("users", "alice", vec![n as u8])
                .await
                .unwrap();
        }
        put(&groups[0], "b", "only-in-1", b"x").await.unwrap();
        // Numbered by one counter, the two handles' events are all kept.
        let feed = groups[0].feed_since(0, 100).await.unwrap();
        assert!(feed.iter().any(|event| event.bucket == "c"), "{feed:?}");
        let upload = groups[0]
            .create_upload("b", "parts", ObjectMeta::default(), None)
            .await
            .unwrap();
        assert!(root.upload("b", "parts", &upload.upload_id).await.is_err());
        assert_group_state(&stores, &big).await;

        // A deletion in one group leaves the others' records as they were.
        groups[1].delete_object("b", "only-in-1").await.unwrap();
        groups[0].delete_object("b", "only-in-1").await.unwrap();
        put(&groups[0], "b", "only-in-1", b"x").await.unwrap();
        assert_group_state(&stores, &big).await;

        // Every group's extents are referenced: none is an orphan.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(
            root.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
            0
        );
        assert_group_state(&stores, &big).await;
    }

    // After a restart, each group finds its records and numbers its events on.
    let root = reopen(dir.path()).await;
    let groups = [
        root.open_group(1, group_config()).unwrap(),
        root.open_group(2, group_config()).unwrap(),
    ];
    let stores = [&root, &groups[0], &groups[1]];
    assert_group_state(&stores, &big).await;
    for store in stores {
        let next = store.feed_since(0, 100).await.unwrap().len() as u64 + 1;
        put(store, "b", "after", b"y").await.unwrap();
        let feed = store.feed_since(0, 100).await.unwrap();
        assert_eq!(feed.last().unwrap().seq, next);
    }

    // An orphan of a bucket only group 1 holds, for its sweep below.
    groups[0].create_bucket("a", "only-1", "r").await.unwrap();
    orphan(&groups[0], "only-1", &big(1)).await;
    // An extent's tag: the top 32 bits of its bucket name's MD5.
    let digest = <md5::Md5 as md5::Digest>::digest(b"only-1");
    let only_1 = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);

    // Group 1's export replaces group 2's records, and no one else's.
    let checkpoint = groups[0]
        .checkpoint_replica(dir.path().join("checkpoint"))
        .await
        .unwrap();
    let mut blob = Vec::new();
    checkpoint.export(&mut blob).unwrap();
    drop(checkpoint);
    // An import cut short leaves group 2 half replaced: no sweep reads it
    // (it lacks records it is about to name again); group 1's own sweep,
    // of the tag of a bucket only it holds, goes on.
    let cut_short = blob[..blob.len() - 13].to_vec();
    let imported = groups[1].import_replica(std::io::Cursor::new(cut_short));
    assert!(imported.await.is_err());
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    for refused in [
        root.sweep_orphans(later, ALL_TAGS).await,
        groups[1].sweep_orphans(later, ALL_TAGS).await,
    ] {
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(why)) if why.contains("import")),
            "{refused:?}"
        );
    }
    assert_eq!(
        groups[0]
            .sweep_orphans(later, only_1..=only_1)
            .await
            .unwrap()
            .deleted,
        1
    );
    groups[1]
        .import_replica(std::io::Cursor::new(blob))
        .await
        .unwrap();
    // Group 2's own big body is named by nothing now; group 1's, which
    // both name, is kept.
    assert_eq!(
        root.sweep_orphans(later, ALL_TAGS).await.unwrap().deleted,
        1
    );
    assert_eq!(get(&groups[1], "b", "big").await.unwrap(), big(1));
    assert_eq!(get(&groups[1], "b", "k").await.unwrap(), b"body 1");
    assert_eq!(
        serde_json::to_string(&groups[1].feed_since(0, 100).await.unwrap()).unwrap(),
        serde_json::to_string(&groups[0].feed_since(0, 100).await.unwrap()).unwrap()
    );
    groups[0].delete_object("b", "after").await.unwrap();
    assert!(groups[1].head_object("b", "after").await.is_ok());
    assert!(groups[1].head_object("b", "only-in-1").await.is_ok());
    assert_eq!(get(&root, "b", "k").await.unwrap(), b"body 0");
    assert_eq!(root.bucket("b").await.unwrap().account, "account-0");

    // Wiping group 2 leaves it empty and the others whole.
    groups[1].wipe_replica().await.unwrap();
    assert!(matches!(
        groups[1].bucket("b").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(groups[1].feed_since(0, 100).await.unwrap().is_empty());
    assert_eq!(groups[1].catalog_get("users", "alice").await.unwrap(), None);
    assert_eq!(get(&groups[0], "b", "k").await.unwrap(), b"body 1");
    assert_eq!(get(&root, "b", "big").await.unwrap(), big(0));
    assert_eq!(
        root.catalog_get("users", "alice").await.unwrap(),
        Some(vec![0])
    );
}

/// What `groups_share_a_database_without_seeing_each_others_records`
/// expects of each group: its own bucket owner, bodies, listing, catalog
/// record, usage and feed.
async fn assert_group_state(stores: &[&Store; 3], big: &impl Fn(u8) -> Vec<u8>) {
    for (n, store) in stores.iter().enumerate() {
        let bucket = store.bucket("b").await.unwrap();
        assert_eq!(bucket.account, format!("account-{n}"));
        assert_eq!(
            store
                .list_buckets(&format!("account-{n}"))
                .await
                .unwrap()
                .len(),
            1
        );
        let other = format!("account-{}", (n + 1) % 3);
        assert!(store.list_buckets(&other).await.unwrap().is_empty());
        assert_eq!(
            get(store, "b", "k").await.unwrap(),
            format!("body {n}").as_bytes()
        );
        assert_eq!(get(store, "b", "big").await.unwrap(), big(n as u8));
        let everything = ListQuery {
            max_keys: 1000,
            ..ListQuery::default()
        };
        let listed = store.list_objects("b", everything).await.unwrap();
        let mut expected = vec!["big", "k"];
        if n == 1 {
            expected.push("only-in-1");
        }
        assert_eq!(keys_of(&listed.entries), expected, "group {n}");
        assert_eq!(
            store.catalog_get("users", "alice").await.unwrap(),
            Some(vec![n as u8])
        );
        assert_eq!(
            store.catalog_list("users").await.unwrap(),
            vec![("alice".to_owned(), vec![n as u8])]
        );
        let usage = store.bucket_usage("b").await.unwrap();
        assert_eq!(usage.objects, expected.len() as u64, "group {n}");
        // Each group numbers its own events, and has only its own.
        let feed = store.feed_since(0, 100).await.unwrap();
        assert_eq!(feed.first().unwrap().seq, 1, "group {n}");
        let names_only_in_1 = feed
            .iter()
            .any(|event| event.key.as_deref() == Some("only-in-1"));
        assert_eq!(names_only_in_1, n == 1, "group {n}");
    }
}
