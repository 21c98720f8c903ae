//! Two stores over one metadata database: the second reaches the first through
//! `Store::serve_meta` (in process here; the gateway carries the same bytes
//! over signed HTTP). Real RocksDB, a real local pool shared by both.

#![allow(clippy::unwrap_used)] // a test binary: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt, stream};
use parking_lot::Mutex;
use strata_pool::{LocalPool, LocalPoolConfig, Pool};
use strata_store::{
    CatalogWrite, ChangeEvent, ChangeKind, CompletedPart, FollowerTag, ListQuery, MetaTransport,
    ObjectMeta, PutConditions, StageOptions, Store, StoreConfig, StoreError, TransportError,
};

/// Hands each call to the service's `serve_meta`. Cut off, calls go
/// unanswered (as a link that drops everything: they may have arrived);
/// refusing, they are refused before anything is sent. Counts the calls
/// sent, by operation.
struct Direct {
    service: Store,
    cut: AtomicBool,
    refusing: AtomicBool,
    sent: Mutex<std::collections::HashMap<String, u64>>,
}

impl Direct {
    fn new(service: Store) -> Direct {
        Direct {
            service,
            cut: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            sent: Mutex::default(),
        }
    }

    /// The calls of operation `op` (`"bucket_usages"`, …) sent so far.
    fn sent(&self, op: &str) -> u64 {
        self.sent.lock().get(op).copied().unwrap_or(0)
    }
}

#[async_trait]
impl MetaTransport for Direct {
    async fn call(&self, request: Bytes, _timeout: Duration) -> Result<Bytes, TransportError> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(TransportError::NotSent("connection refused".into()));
        }
        if self.cut.load(Ordering::SeqCst) {
            return Err(TransportError::Unknown("no answer".into()));
        }
        let call: serde_json::Value = serde_json::from_slice(&request).unwrap_or_default();
        let op = call["op"].as_str().unwrap_or_default().to_owned();
        *self.sent.lock().entry(op).or_default() += 1;
        Ok(Bytes::from(self.service.serve_meta(&request, None).await))
    }
}

struct Pair {
    service: Store,
    client: Store,
    transport: Arc<Direct>,
    pool: Arc<dyn Pool>,
    _dir: tempfile::TempDir,
}

/// A local pool in `dir`.
fn local_pool(dir: &std::path::Path) -> Arc<dyn Pool> {
    Arc::new(
        LocalPool::open(LocalPoolConfig {
            dir: dir.join("pool"),
        })
        .unwrap(),
    )
}

async fn pair() -> Pair {
    pair_with(|_| {}).await
}

/// A pair whose service runs with `tune`'s settings.
async fn pair_with(tune: impl FnOnce(&mut StoreConfig)) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let pool = local_pool(dir.path());
    let mut config = StoreConfig::new(dir.path().join("meta"));
    config.min_part_size = 8;
    tune(&mut config);
    let service = Store::open(config.clone(), pool.clone()).unwrap();
    let transport = Arc::new(Direct::new(service.clone()));
    config.dir = dir.path().join("unused");
    let client = Store::connect(config, pool.clone(), transport.clone())
        .await
        .unwrap();
    Pair {
        service,
        client,
        transport,
        pool,
        _dir: dir,
    }
}

fn options() -> StageOptions {
    StageOptions {
        sha256: false,
        checksum: None,
        max_size: 1 << 30,
    }
}

fn body(bytes: &'static [u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    stream::iter([Ok(Bytes::from_static(bytes))])
}

async fn put(
    store: &Store,
    key: &str,
    bytes: &'static [u8],
    conditions: PutConditions,
) -> Result<String, StoreError> {
    let staged = store.stage("b", body(bytes), &options()).await.unwrap();
    let info = store
        .put_object("b", key, staged, ObjectMeta::default(), None, conditions)
        .await?;
    Ok(info.etag)
}

async fn get(store: &Store, key: &str) -> Result<Vec<u8>, StoreError> {
    let info = store.head_object("b", key).await?;
    let mut reader = store.read(&info, None);
    let mut out = Vec::new();
    while let Some(piece) = reader.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

fn record_events(store: &Store) -> Arc<Mutex<Vec<ChangeEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.on_change(Arc::new(move |event: &ChangeEvent| {
        sink.lock().push(event.clone())
    }));
    seen
}

fn saw(events: &Mutex<Vec<ChangeEvent>>, kind: ChangeKind, key: &str) -> bool {
    events
        .lock()
        .iter()
        .any(|event| event.kind == kind && event.key.as_deref() == Some(key))
}

#[tokio::test]
async fn the_second_store_reads_and_writes_the_first_ones_metadata() {
    let Pair {
        service,
        client,
        _dir,
        ..
    } = pair().await;
    let client_events = record_events(&client);
    client.create_bucket("acct", "b", "r").await.unwrap();
    assert_eq!(service.bucket("b").await.unwrap().account, "acct");

    // A large body (extents) and a small one (inline), written by the client.
    let large: &'static [u8] = Box::leak(vec![7u8; 3 << 20].into_boxed_slice());
    put(&client, "large", large, PutConditions::default())
        .await
        .unwrap();
    put(&client, "dir/small", b"small", PutConditions::default())
        .await
        .unwrap();
    assert_eq!(get(&service, "large").await.unwrap(), large);
    assert_eq!(get(&service, "dir/small").await.unwrap(), b"small");
    // The client's listeners heard of its own writes before they returned.
    assert!(saw(&client_events, ChangeKind::ObjectPut, "large"));

    let page = client
        .list_objects(
            "b",
            ListQuery {
                delimiter: Some("/".into()),
                max_keys: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 2, "{page:?}");

    // Errors keep their kind on the way back.
    assert!(matches!(
        client.head_object("b", "nothing").await,
        Err(StoreError::NoSuchKey)
    ));
    assert!(matches!(
        client.bucket("nope").await,
        Err(StoreError::NoSuchBucket)
    ));
    let exclusive = PutConditions {
        if_none_match_any: true,
        ..Default::default()
    };
    assert!(matches!(
        put(&client, "large", b"x", exclusive).await,
        Err(StoreError::PreconditionFailed)
    ));
    assert!(matches!(
        client.delete_bucket("b").await,
        Err(StoreError::BucketNotEmpty)
    ));

    // Multipart through the client, read on the service.
    let upload = client
        .create_upload("b", "mp", ObjectMeta::default(), None)
        .await
        .unwrap();
    let mut parts = Vec::new();
    for (number, bytes) in [(1u32, &b"0123456789"[..]), (2, b"tail")] {
        let staged = client
            .stage_part(
                "b",
                stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(bytes))]),
                &options(),
            )
            .await
            .ok()
            .unwrap();
        let part = client
            .put_part(&upload, number, staged, None)
            .await
            .unwrap();
        parts.push(CompletedPart {
            part_number: number,
            etag: part.etag,
        });
    }
    assert_eq!(client.list_parts(&upload, 0, 10).await.unwrap().0.len(), 2);
    client
        .complete_upload(&upload, parts, PutConditions::default())
        .await
        .unwrap();
    assert_eq!(get(&service, "mp").await.unwrap(), b"0123456789tail");

    client.rename_object("b", "mp", "b", "moved").await.unwrap();
    assert_eq!(get(&service, "moved").await.unwrap(), b"0123456789tail");
    assert_eq!(client.bucket_usage("b").await.unwrap().objects, 3);
}

#[tokio::test]
async fn changes_made_on_the_service_reach_the_second_stores_listeners() {
    let Pair {
        service,
        client,
        _dir,
        ..
    } = pair().await;
    let client_events = record_events(&client);
    service.create_bucket("acct", "b", "r").await.unwrap();
    put(&service, "k", b"v1", PutConditions::default())
        .await
        .unwrap();
    service.delete_object("b", "k").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !saw(&client_events, ChangeKind::ObjectDeleted, "k") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the delete never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw(&client_events, ChangeKind::ObjectPut, "k"));
    let feed = client.feed_since(0, 100).await.unwrap();
    assert!(
        feed.iter()
            .any(|event| event.kind == ChangeKind::ObjectDeleted)
    );

    // The client keeps bucket records it read; a change through the service
    // drops them (well within their 10 s lifetime), one of its own at once.
    assert!(client.bucket("b").await.unwrap().attrs.is_empty());
    let set = |name: &'static str| {
        move |bucket: &mut strata_store::BucketInfo| {
            bucket.attrs.insert(name.into(), "1".into());
            Ok(())
        }
    };
    service.update_bucket("b", set("by-service")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !client
        .bucket("b")
        .await
        .unwrap()
        .attrs
        .contains_key("by-service")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a stale bucket record was kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.update_bucket("b", set("by-client")).await.unwrap();
    assert!(
        client
            .bucket("b")
            .await
            .unwrap()
            .attrs
            .contains_key("by-client")
    );
    service.delete_bucket("b").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.bucket("b").await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a deleted bucket stayed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn concurrent_decisions_through_both_stores_lose_no_update() {
    let Pair {
        service,
        client,
        _dir,
        ..
    } = pair().await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let increment = |current: Option<&[u8]>| {
        let n: u64 = current
            .map(|raw| std::str::from_utf8(raw).unwrap().parse().unwrap())
            .unwrap_or(0);
        Ok((CatalogWrite::Put((n + 1).to_string().into_bytes()), ()))
    };
    let bump = |bucket: &mut strata_store::BucketInfo| {
        let n: u64 = bucket.attrs.get("n").map_or(0, |n| n.parse().unwrap());
        bucket.attrs.insert("n".into(), (n + 1).to_string());
        Ok(())
    };
    let mut tasks = Vec::new();
    for store in [&service, &client].into_iter().cycle().take(16) {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                store
                    .catalog_update("counters", "n", increment)
                    .await
                    .unwrap();
                store.update_bucket("b", bump).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        client.catalog_get("counters", "n").await.unwrap().unwrap(),
        b"64"
    );
    assert_eq!(service.bucket("b").await.unwrap().attrs["n"], "64");
    // The owner is not the decision's to change.
    let stolen = client
        .update_bucket("b", |bucket| {
            bucket.account = "thief".into();
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(stolen.account, "acct");
}

#[tokio::test]
async fn a_service_that_does_not_answer_makes_calls_unavailable_until_it_does() {
    let Pair {
        service,
        client,
        transport,
        _dir,
        ..
    } = pair().await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    transport.cut.store(true, Ordering::SeqCst);
    assert!(matches!(
        client.head_object("b", "k").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        put(&client, "k", b"v", PutConditions::default()).await,
        Err(StoreError::Unavailable(_))
    ));
    // Back: calls work again once the feed answered (the follower retries
    // each second; until then calls fail, at once this long into the
    // outage).
    transport.cut.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match put(&client, "k", b"v", PutConditions::default()).await {
            Ok(_) => break,
            Err(StoreError::Unavailable(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("the service answers again, the client does not: {err}"),
        }
    }
    assert_eq!(get(&service, "k").await.unwrap(), b"v");
}

/// The service's feed as read while the commit holding number `hidden` is
/// still in flight (later numbers already readable): the follower must not
/// step past it.
struct HidingFeed {
    inner: Arc<Direct>,
    hidden: Mutex<Option<(u64, std::time::Instant)>>,
}

#[async_trait]
impl MetaTransport for HidingFeed {
    async fn call(&self, request: Bytes, timeout: Duration) -> Result<Bytes, TransportError> {
        let answer = self.inner.call(request.clone(), timeout).await?;
        let call: serde_json::Value = serde_json::from_slice(&request).unwrap();
        let hidden = *self.hidden.lock();
        match hidden {
            Some((seq, until))
                if call["op"] == "feed_wait" && std::time::Instant::now() < until =>
            {
                let mut answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                if let Some(events) = answer["outcome"]["Ok"].as_array_mut() {
                    events.retain(|event| event["seq"] != seq);
                    if events.is_empty() {
                        // As the service would: a long poll finds nothing yet.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(Bytes::from(serde_json::to_vec(&answer).unwrap()))
            }
            _ => Ok(answer),
        }
    }
}

#[tokio::test]
async fn the_follower_waits_for_an_event_committed_after_a_later_one() {
    let Pair {
        service,
        transport,
        pool,
        _dir,
        ..
    } = pair().await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let hiding = Arc::new(HidingFeed {
        inner: transport,
        hidden: Mutex::new(None),
    });
    let config = StoreConfig::new(_dir.path().join("unused-2"));
    let client = Store::connect(config, pool, hiding.clone()).await.unwrap();
    let events = record_events(&client);
    let next = service
        .feed_since(0, 1000)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq
        + 1;
    let reveal_at = std::time::Instant::now() + Duration::from_secs(3);
    *hiding.hidden.lock() = Some((next, reveal_at));
    put(&service, "first", b"1", PutConditions::default())
        .await
        .unwrap();
    put(&service, "second", b"2", PutConditions::default())
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !saw(&events, ChangeKind::ObjectPut, "second") {
        assert!(
            std::time::Instant::now() < deadline,
            "the later event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !saw(&events, ChangeKind::ObjectPut, "first"),
        "the hidden event was seen while hidden"
    );
    while !saw(&events, ChangeKind::ObjectPut, "first") {
        assert!(
            std::time::Instant::now() < deadline,
            "the event committed late was skipped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(std::time::Instant::now() >= reveal_at);
    assert!(
        !events
            .lock()
            .iter()
            .any(|event| event.kind == ChangeKind::Resync),
        "a hole in the feed's numbers was taken for lost events"
    );
}

fn resyncs(events: &Mutex<Vec<ChangeEvent>>) -> usize {
    events
        .lock()
        .iter()
        .filter(|event| event.kind == ChangeKind::Resync)
        .count()
}

/// Waits until `extents` counts none: a dropped body's extents are deleted
/// by a spawned task, after the call that dropped it has returned.
async fn until_no_extents<F: std::future::Future<Output = usize>>(
    what: &str,
    extents: impl Fn() -> F,
) {
    poll_until(what, || async { extents().await == 0 }).await;
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    poll_until(what, || std::future::ready(done())).await;
}

/// Polls `done` every 20 ms; fails the test after 20 s.
async fn poll_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_service_keeps_what_a_follower_cut_off_has_not_confirmed() {
    let Pair {
        service,
        client,
        transport,
        _dir,
        ..
    } = pair_with(|config| {
        config.feed_retention = 4;
        config.follower = FollowerTag {
            id: "7d1e".into(),
            name: "edge-b:8080".into(),
        };
    })
    .await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let events = record_events(&client);
    put(&service, "before", b"0", PutConditions::default())
        .await
        .unwrap();
    let follower = || service.feed_followers();
    wait_until("the follower confirmed the change before the cut", || {
        follower()
            .first()
            .is_some_and(|follower| follower.behind == 0)
    })
    .await;
    let [named] = &follower()[..] else {
        panic!("followers: {:?}", follower())
    };
    assert_eq!(
        (named.id.as_str(), named.name.as_str()),
        ("7d1e", "edge-b:8080")
    );
    let position = named.position;

    transport.cut.store(true, Ordering::SeqCst);
    wait_until("a resync after the feed failed", || resyncs(&events) == 1).await;
    for n in 0..12 {
        put(
            &service,
            &format!("during-{n}"),
            b"1",
            PutConditions::default(),
        )
        .await
        .unwrap();
    }
    assert_eq!(follower()[0].position, position);
    assert!(follower()[0].behind >= 12, "{:?}", follower());
    // Trimming goes as far as the retention allows, but not past what the
    // follower confirmed.
    let oldest = || async { service.feed_since(0, 1).await.unwrap()[0].seq };
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while oldest().await <= position {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed was not trimmed up to the follower"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Another trimming round (one each 5 s): it still holds them.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(oldest().await, position + 1);

    // Back: every change made meanwhile is purged one by one, with no
    // second resync (which would revalidate every copy).
    transport.cut.store(false, Ordering::SeqCst);
    wait_until("the changes made while cut off", || {
        (0..12).all(|n| saw(&events, ChangeKind::ObjectPut, &format!("during-{n}")))
    })
    .await;
    assert_eq!(resyncs(&events), 1);
    wait_until("the follower confirmed everything", || {
        follower()[0].behind == 0
    })
    .await;
}

#[tokio::test]
async fn a_follower_that_lost_the_feed_or_fell_behind_it_tells_its_listeners() {
    let Pair {
        service,
        client,
        transport,
        _dir,
        ..
    } = pair_with(|config| {
        config.feed_retention = 4;
        // Events held for the follower cut off: no more than the retention.
        config.feed_hold_max = 4;
    })
    .await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let events = record_events(&client);
    assert!(client.feed_lease().holds());
    put(&service, "before", b"0", PutConditions::default())
        .await
        .unwrap();
    wait_until("the change before the cut", || {
        saw(&events, ChangeKind::ObjectPut, "before")
    })
    .await;
    assert_eq!(resyncs(&events), 0);

    // Cut off: the next poll fails, and the listeners hear of it.
    transport.cut.store(true, Ordering::SeqCst);
    put(&service, "during-1", b"1", PutConditions::default())
        .await
        .unwrap();
    wait_until("a resync after the feed failed", || resyncs(&events) == 1).await;

    // Meanwhile the service moves on and drops the events the follower needs.
    for n in 0..12 {
        put(
            &service,
            &format!("during-{n}"),
            b"2",
            PutConditions::default(),
        )
        .await
        .unwrap();
    }
    let missed = service.feed_since(0, 1).await.unwrap()[0].seq - 1;
    // Trimming waits for followers to poll after the service's start.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while service.feed_since(0, 1).await.unwrap()[0].seq <= missed + 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed was not trimmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_reconnect = events.lock().len();

    // Back: the gap is told as a second resync, and following goes on.
    transport.cut.store(false, Ordering::SeqCst);
    wait_until("a resync for the trimmed events", || resyncs(&events) == 2).await;
    put(&service, "after", b"3", PutConditions::default())
        .await
        .unwrap();
    wait_until("the change after the gap", || {
        saw(&events, ChangeKind::ObjectPut, "after")
    })
    .await;
    let resync_at = events
        .lock()
        .iter()
        .rposition(|event| event.kind == ChangeKind::Resync)
        .unwrap();
    assert!(resync_at >= before_reconnect);
    assert!(client.feed_lease().holds());
}

/// A call made just after the feed failed waits for its next poll rather
/// than fail (the gap an election leaves between a failed poll and the
/// next); once the outage has lasted a few seconds, calls fail at once.
#[tokio::test]
async fn calls_ride_out_a_short_feed_outage_and_fail_at_once_in_a_long_one() {
    let Pair {
        service,
        client,
        transport,
        pool: _pool,
        _dir,
    } = pair().await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let events = record_events(&client);

    transport.cut.store(true, Ordering::SeqCst);
    wait_until("the follower noticed the cut", || resyncs(&events) > 0).await;
    let healing = {
        let transport = transport.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            transport.cut.store(false, Ordering::SeqCst);
        })
    };
    put(
        &client,
        "k",
        b"during a short outage",
        PutConditions::default(),
    )
    .await
    .unwrap();
    healing.await.unwrap();

    transport.cut.store(true, Ordering::SeqCst);
    wait_until("the follower noticed the second cut", || {
        resyncs(&events) > 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Refused without waiting: answered at its first poll.
    let refused = client.head_object("b", "k").now_or_never();
    assert!(
        matches!(refused, Some(Err(StoreError::Unavailable(_)))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_commit_that_never_left_deletes_its_staged_body_and_an_unanswered_one_keeps_it() {
    let Pair {
        service,
        client,
        transport,
        pool,
        _dir,
    } = pair().await;
    service.create_bucket("acct", "b", "r").await.unwrap();
    let events = record_events(&client);
    let extents = || async {
        let far_future = std::time::SystemTime::now() + Duration::from_secs(3600);
        pool.list_extents(&strata_pool::ExtentFilter::older_than(far_future))
            .await
            .unwrap()
            .len()
    };
    static BIG: [u8; 100_000] = [7; 100_000];

    // Cut off, and the follower noticed: the call fails before it is sent,
    // so nothing can have been committed and the staged body goes.
    transport.cut.store(true, Ordering::SeqCst);
    wait_until("the follower noticed the cut", || resyncs(&events) > 0).await;
    let refused = put(&client, "big", &BIG, PutConditions::default()).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );
    until_no_extents("a body whose commit never left was kept", extents).await;

    // A call the transport could not deliver (connection refused) before
    // the follower noticed anything: nothing was committed, the body goes.
    transport.cut.store(false, Ordering::SeqCst);
    wait_until("the follower is back", || client.feed_lease().holds()).await;
    let failing = Arc::new(Direct::new(service.clone()));
    let blind = Store::connect(
        StoreConfig::new(_dir.path().join("blind")),
        pool.clone(),
        failing.clone(),
    )
    .await
    .unwrap();
    // Its follower is in a long poll by now: the failure shows to the put first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    failing.refusing.store(true, Ordering::SeqCst);
    let not_sent = put(&blind, "big", &BIG, PutConditions::default()).await;
    assert!(
        matches!(not_sent, Err(StoreError::Unavailable(_))),
        "{not_sent:?}"
    );
    until_no_extents("a body whose commit was never delivered was kept", extents).await;

    // A call that was sent but got no answer may have been applied: its
    // body stays (a leak at worst, never an object without its bytes).
    failing.refusing.store(false, Ordering::SeqCst);
    failing.cut.store(true, Ordering::SeqCst);
    let unknown = put(&blind, "big", &BIG, PutConditions::default()).await;
    assert!(
        matches!(unknown, Err(StoreError::Unavailable(_))),
        "{unknown:?}"
    );
    // Time for a background deletion to have run, were there one. There is
    // no event to wait for here (nothing is deleted), so this check is
    // best-effort: a wrongful deletion slower than this would pass it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        extents().await > 0,
        "a body whose commit may have landed was deleted"
    );
}

/// A signed change is taken once by a service of its own too, across a
/// restart (a gateway's memory of the signatures it took goes with its
/// process): replayed, it is refused and changes nothing. A read is never
/// refused, and a change signed too long ago is not taken.
#[tokio::test]
async fn a_signed_change_replayed_after_a_restart_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = local_pool(dir.path());
    let config = StoreConfig::new(dir.path().join("meta"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = |id: u8, signed_at: u64| {
        Some(strata_store::CallSignature {
            signed_at,
            id: [id; 16],
        })
    };
    let create = br#"{"op":"create_bucket","account":"acct","name":"b","region":"r1","attrs":{}}"#;
    let delete = br#"{"op":"delete_bucket","name":"b"}"#;
    let outcome = |answer: Vec<u8>| -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&answer).unwrap()["outcome"].clone()
    };
    {
        let service = Store::open(config.clone(), pool.clone()).unwrap();
        assert!(outcome(service.serve_meta(create, signed(1, now)).await)["Ok"].is_object());
        let replayed = outcome(service.serve_meta(create, signed(1, now)).await);
        assert!(replayed.to_string().contains("replay"), "{replayed}");
        let deleted = outcome(service.serve_meta(delete, None).await);
        assert!(deleted.get("Ok").is_some(), "{deleted}");
        // Reads carry no record.
        let read = br#"{"op":"feed_head"}"#;
        for _ in 0..2 {
            assert!(outcome(service.serve_meta(read, signed(2, now)).await)["Ok"].is_number());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let service = Store::open(config, pool).unwrap();
    let replayed = outcome(service.serve_meta(create, signed(1, now)).await);
    assert!(replayed.to_string().contains("replay"), "{replayed}");
    let stale = outcome(service.serve_meta(create, signed(3, now - 3600)).await);
    assert!(stale.to_string().contains("too old"), "{stale}");
    assert!(matches!(
        service.bucket("b").await,
        Err(StoreError::NoSuchBucket)
    ));
    assert!(outcome(service.serve_meta(create, signed(4, now)).await)["Ok"].is_object());
}

/// A long poll of the feed is answered by the time its caller stops
/// waiting (an attempt sent to a new leader part-way through its call), not
/// after the whole wait it asks.
#[tokio::test]
async fn a_long_poll_answers_by_the_time_its_caller_stops_waiting() {
    let Pair { service, _dir, .. } = pair().await;
    let head = br#"{"op":"feed_head"}"#;
    let answer: serde_json::Value =
        serde_json::from_slice(&service.serve_meta(head, None).await).unwrap();
    let after = answer["outcome"]["Ok"].as_u64().unwrap();
    let poll = format!(r#"{{"op":"feed_wait","after":{after},"limit":10,"wait_ms":20000}}"#);
    let asked = std::time::Instant::now();
    let by = asked + Duration::from_millis(300);
    let answer: serde_json::Value =
        serde_json::from_slice(&service.serve_meta_by(poll.as_bytes(), None, Some(by)).await)
            .unwrap();
    assert_eq!(answer["outcome"]["Ok"], serde_json::json!([]), "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "held {:?} past its caller's wait",
        asked.elapsed()
    );
}

/// Only the process that holds a store moves its buckets' objects into
/// index groups (`split.rs`): a gateway connected to it with groups
/// configured is refused, and the store keeps its objects and its count.
#[tokio::test]
async fn a_connected_store_with_buckets_is_not_split_by_its_client() {
    let Pair {
        service,
        client,
        _dir,
        ..
    } = pair().await;
    client.create_bucket("acct", "b", "r").await.unwrap();
    put(&client, "k", b"kept", PutConditions::default())
        .await
        .unwrap();
    let refused = Store::route(client.clone(), vec![client.clone()]).await;
    assert!(
        matches!(refused, Err(StoreError::InvalidArgument(ref text)) if text.contains("alone")),
        "{:?}",
        refused.as_ref().err()
    );
    assert_eq!(service.index_groups().await.unwrap(), 0);
    assert_eq!(get(&client, "k").await.unwrap(), b"kept");
}

/// A store holding its metadata over `groups` index groups, and a
/// client routed over one connected store per group, each over its own
/// link (the root's first).
struct RoutedPair {
    holder: Store,
    client: Store,
    links: Vec<Arc<Direct>>,
    _dir: tempfile::TempDir,
}

async fn routed_pair(groups: u16) -> RoutedPair {
    let dir = tempfile::tempdir().unwrap();
    let pool = local_pool(dir.path());
    let config = StoreConfig::new(dir.path().join("meta"));
    let holder_root = Store::open(config.clone(), pool.clone()).unwrap();
    let holder_groups: Vec<Store> = (1..=groups)
        .map(|group| holder_root.open_group(group, config.clone()).unwrap())
        .collect();
    let holder = Store::route(holder_root, holder_groups).await.unwrap();
    let mut client_config = config.clone();
    client_config.dir = dir.path().join("unused");
    let mut stores = Vec::new();
    let mut links = Vec::new();
    for group in 0..=groups {
        let link = Arc::new(Direct::new(holder.group_store(group).unwrap().clone()));
        let connected = Store::connect(client_config.clone(), pool.clone(), link.clone());
        stores.push(connected.await.unwrap());
        links.push(link);
    }
    let root = stores.remove(0);
    let client = Store::route(root, stores).await.unwrap();
    RoutedPair {
        holder,
        client,
        links,
        _dir: dir,
    }
}

/// An account's usage over index groups costs the root's list of its
/// buckets and one call per group that holds any, not one per bucket.
#[tokio::test]
async fn an_accounts_usage_over_index_groups_is_one_call_per_group() {
    let RoutedPair {
        client,
        links,
        _dir,
        ..
    } = routed_pair(3).await;
    for n in 0..12 {
        let bucket = format!("b{n}");
        client.create_bucket("acct", &bucket, "r").await.unwrap();
        let staged = client
            .stage(&bucket, body(b"xyz"), &options())
            .await
            .unwrap();
        let meta = ObjectMeta::default();
        let put = client.put_object(&bucket, "k", staged, meta, None, PutConditions::default());
        put.await.unwrap();
    }
    let before: Vec<u64> = links
        .iter()
        .map(|link| link.sent("bucket_usages"))
        .collect();
    let listed_before = links[0].sent("list_buckets");
    let usage = client.account_usage("acct").await.unwrap();
    assert_eq!(usage.len(), 12);
    for (bucket, used) in &usage {
        assert_eq!((used.objects, used.bytes), (1, 3), "{}", bucket.name);
    }
    assert_eq!(links[0].sent("list_buckets"), listed_before + 1);
    // The groups that took a bucket's object are those asked, once each.
    let mut holding = 0;
    for (group, link) in links.iter().enumerate().skip(1) {
        let holds = u64::from(link.sent("put_object") > 0);
        holding += holds;
        let asked = link.sent("bucket_usages") - before[group];
        assert_eq!(asked, holds, "group {group}");
    }
    assert!(holding >= 2, "twelve buckets in {holding} group");
}

/// A routed store's feed lease holds while every group's feed answers;
/// its catalog store's (what the directory of accounts and keys follows)
/// while the root group's does, whatever an index group's feed does.
#[tokio::test]
async fn an_index_groups_feed_outage_leaves_the_catalogs_lease_holding() {
    let RoutedPair {
        holder,
        client,
        links,
        _dir,
    } = routed_pair(2).await;
    let second_link = &links[2];
    let (lease, catalog_lease) = (client.feed_lease(), client.catalog_store().feed_lease());
    assert!(lease.holds() && catalog_lease.holds());

    second_link.cut.store(true, Ordering::SeqCst);
    // A change in every group answers the polls held, so the next ones go
    // out over the cut link.
    for n in 0..8 {
        let bucket = format!("b{n}");
        holder.create_bucket("acct", &bucket, "r").await.unwrap();
        let staged = holder.stage(&bucket, body(b"x"), &options()).await.unwrap();
        let meta = ObjectMeta::default();
        let put = holder.put_object(&bucket, "k", staged, meta, None, PutConditions::default());
        put.await.unwrap();
    }
    let started = std::time::Instant::now();
    while lease.holds() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the lease held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        catalog_lease.holds(),
        "an index group's outage lapsed the catalog's lease"
    );
}
