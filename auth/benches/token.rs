//! What verifying a Swift token costs a gateway on every request.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use strata_auth::{Principal, Role, TokenClaims, TokenKey, TokenKeyring};

fn token_verify(c: &mut Criterion) {
    let mut ring = TokenKeyring::new(vec![TokenKey {
        id: 1,
        secret: [1; 32],
        retires_at: None,
    }]);
    ring.rotate([2; 32], 1_000, 3_600);
    let token = ring
        .issue(&TokenClaims {
            principal: Principal {
                account: "acme-hosting".into(),
                user: "webmaster".into(),
                role: Role::Writer,
            },
            expires_at: 2_000_000_000,
            generation: 1,
        })
        .expect("names fit");
    c.bench_function("token verify", |b| {
        b.iter(|| ring.verify(black_box(&token), 1_500).expect("valid"))
    });
}

criterion_group!(benches, token_verify);
criterion_main!(benches);
