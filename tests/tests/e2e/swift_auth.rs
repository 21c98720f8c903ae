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
