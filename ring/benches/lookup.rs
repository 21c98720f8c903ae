//! What finding a record's devices costs: done for every read and write.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use strata_ring::{DeviceSpec, RingBuilder};

fn lookup(c: &mut Criterion) {
    // 2^16 partitions, 3 replicas, 12 devices in 4 zones: a mid-sized cluster.
    let mut builder = RingBuilder::new("bench-cluster", 16, 3).expect("shape");
    for device in 0..12u32 {
        builder
            .add_device(DeviceSpec {
                node: format!("10.0.{}.{}:7001", device % 4, device / 4),
                region: 1,
                zone: device % 4,
                weight: 1_000 + u64::from(device) * 100,
                name: None,
            })
            .expect("device");
    }
    builder.rebalance().expect("rebalance");
    let ring = builder.ring().expect("ring");
    let key = *b"bucket-0001/objects/2024/07/photo-000042";
    assert_eq!(key.len(), 40);
    c.bench_function("partition_of + primaries, 40-byte key", |b| {
        b.iter(|| {
            let part = ring.partition_of(black_box(&key));
            black_box(ring.primaries(part)[0])
        })
    });
    c.bench_function("handoffs, first two", |b| {
        let part = ring.partition_of(&key);
        b.iter(|| black_box(ring.handoffs(black_box(part)).take(2).count()))
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
