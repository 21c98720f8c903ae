//! The Swift v1.0 token endpoint, driven with curl as TempAuth clients call it.

use anyhow::{Context, Result, ensure};
use strata_tests::{ROOT_SECRET_KEY, Server, Signing};

fn token_request(
    server: &Server,
    path: &str,
    user: &str,
    key: &str,
) -> Result<strata_tests::HttpResponse> {
    server.http(
        "GET",
        path,
        Signing::Anonymous,
        None,
        &[("X-Auth-User", user), ("X-Auth-Key", key)],
    )
}

#[test]
fn root_gets_a_token_and_storage_url() -> Result<()> {
    let mut server = Server::start()?;
    for path in ["/auth/v1.0", "/auth/v1.0/", "/v1.0"] {
        let response = token_request(&server, path, "admin:admin", ROOT_SECRET_KEY)?;
        response.expect_status(200)?;
        let token = response.header("x-auth-token").context("no X-Auth-Token")?;
        ensure!(token.starts_with("AUTH_"), "token {token:?}");
        ensure!(
            response.header("x-storage-token") == Some(token),
            "X-Storage-Token differs from X-Auth-Token"
        );
        let expected_url = format!("{}/v1/AUTH_admin", server.endpoint());
        ensure!(
            response.header("x-storage-url") == Some(expected_url.as_str()),
            "storage url {:?}, expected {expected_url}",
            response.header("x-storage-url")
        );
        let expires: u64 = response
            .header("x-auth-token-expires")
            .context("no X-Auth-Token-Expires")?
            .parse()?;
        ensure!((86_000..=86_400).contains(&expires), "expires in {expires}");
        ensure!(response.header("x-trans-id").is_some(), "no X-Trans-Id");
    }
    // The root user and the signing key are records in the data directory.
    server.restart()?;
    token_request(&server, "/auth/v1.0", "admin:admin", ROOT_SECRET_KEY)?.expect_status(200)?;
    Ok(())
}

#[test]
fn wrong_credentials_get_401() -> Result<()> {
    let mut server = Server::start()?;
    for (user, key) in [
        ("admin:admin", "wrong"),
        ("admin:admin", ""),
        ("admin:nobody", ROOT_SECRET_KEY),
        ("other:admin", ROOT_SECRET_KEY),
        ("admin", ROOT_SECRET_KEY),
        ("", ""),
    ] {
        let response = token_request(&server, "/auth/v1.0", user, key)?;
        response.expect_status(401)?;
        ensure!(
            response.header("x-auth-token").is_none(),
            "{user}/{key}: a refused request carried a token"
        );
    }
    let bare = server.http("GET", "/auth/v1.0", Signing::Anonymous, None, &[])?;
    bare.expect_status(401)?;
    let post = server.http(
        "POST",
        "/auth/v1.0",
        Signing::Anonymous,
        None,
        &[
            ("X-Auth-User", "admin:admin"),
            ("X-Auth-Key", ROOT_SECRET_KEY),
        ],
    )?;
    post.expect_status(405)?;
    server.assert_healthy()?;
    Ok(())
}

/// An address that sent `max_failed_logins` wrong keys, each within
/// `login_block_secs` of the last, is refused by both token endpoints (429,
/// with Retry-After) even with the right key, until `login_block_secs` have
/// passed since its last failure; right keys in between do not clear the
/// count (another user of the address could reset it between guesses).
#[test]
fn an_address_that_guesses_keys_is_blocked_for_a_while() -> Result<()> {
    let mut server =
        Server::start_with_config("[limits]\nmax_failed_logins = 3\nlogin_block_secs = 4\n")?;
    let guess = |count: usize| -> Result<()> {
        for _ in 0..count {
            token_request(&server, "/auth/v1.0", "admin:admin", "guess")?.expect_status(401)?;
        }
        Ok(())
    };
    let right_key = || token_request(&server, "/auth/v1.0", "admin:admin", ROOT_SECRET_KEY);
    let keystone_right_key = || {
        let body = format!(
            r#"{{"auth": {{"identity": {{"methods": ["password"], "password": {{"user": {{"name": "admin", "password": "{ROOT_SECRET_KEY}"}}}}}}, "scope": {{"project": {{"name": "admin"}}}}}}}}"#
        );
        server.http(
            "POST",
            "/v3/auth/tokens",
            Signing::Anonymous,
            Some(body.as_bytes()),
            &[("Content-Type", "application/json")],
        )
    };

    guess(2)?;
    right_key()?.expect_status(200)?;
    keystone_right_key()?.expect_status(201)?;
    guess(1)?;
    let blocked = right_key()?;
    blocked.expect_status(429)?;
    ensure!(
        blocked.header("x-auth-token").is_none(),
        "a blocked address got a token"
    );
    ensure!(
        blocked.header("retry-after") == Some("4"),
        "Retry-After: {:?}",
        blocked.header("retry-after")
    );
    keystone_right_key()?.expect_status(429)?;

    // The block ends 4 s after the last failure (the 429s do not extend it).
    let mut waited = 0;
    while right_key()?.status == 429 {
        ensure!(waited < 40, "still blocked after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
        waited += 1;
    }
    right_key()?.expect_status(200)?;
    server.assert_healthy()?;
    Ok(())
}
