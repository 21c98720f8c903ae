//! FTP logins: `account:user` (or a user name only one account has) with the
//! user's Swift key, checked against the directory like a token request.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use strata_auth::Principal;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal as FtpPrincipal, UserDetail,
    UserDetailError, UserDetailProvider,
};

use crate::directory::{Directory, Refusal};

/// A refused password costs this long, so guessing is slow even before the
/// per-address limit (libunftp's failed-logins policy) blocks the client.
const REFUSAL_DELAY: Duration = Duration::from_millis(750);

/// The user an FTP session acts as, as at its login.
#[derive(Debug, Clone)]
pub struct FtpUser {
    pub principal: Principal,
    /// The user's token generation at login: bumped (keys revoked), the
    /// session ends, as the user's Swift tokens do.
    pub generation: u32,
}

impl fmt::Display for FtpUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal.account, self.principal.user)
    }
}

impl UserDetail for FtpUser {}

/// Checks FTP passwords against the directory's Swift keys.
#[derive(Clone)]
pub struct FtpLogin {
    pub directory: Directory,
}

impl fmt::Debug for FtpLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FtpLogin")
    }
}

impl FtpLogin {
    /// `account:user`, or `user` when exactly one account has that user.
    fn resolve(&self, login: &str) -> Option<(String, String)> {
        if let Some((account, user)) = login.split_once(':') {
            return Some((account.to_owned(), user.to_owned()));
        }
        match self.directory.accounts_with_user(login).as_slice() {
            [account] => Some((account.clone(), login.to_owned())),
            _ => None,
        }
    }
}

#[async_trait]
impl Authenticator for FtpLogin {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<FtpPrincipal, AuthenticationError> {
        let password = creds.password.as_deref().unwrap_or_default();
        // A view being read again after a failover is waited for, a while.
        self.directory
            .current_within(crate::directory::STALE_PATIENCE)
            .await;
        let checked = self
            .resolve(username)
            .ok_or(AuthenticationError::BadUser)
            .and_then(|(account, user)| {
                self.directory
                    .check_swift_key(&account, &user, password)
                    .map_err(|refusal| match refusal {
                        Refusal::Stale => {
                            AuthenticationError::new("the metadata service is unreachable")
                        }
                        Refusal::UnknownUser | Refusal::WrongKey => {
                            AuthenticationError::BadPassword
                        }
                    })
            });
        match checked {
            Ok((principal, generation)) => Ok(FtpPrincipal {
                username: session_name(&principal, generation),
            }),
            Err(refusal) => {
                tracing::debug!(username, source = %creds.source_ip, "ftp login refused");
                tokio::time::sleep(REFUSAL_DELAY).await;
                Err(refusal)
            }
        }
    }

    fn name(&self) -> &str {
        "strata"
    }
}

#[async_trait]
impl UserDetailProvider for FtpLogin {
    type User = FtpUser;

    /// The session's user, as long as its token generation is still the
    /// one its password was checked against: a revocation or key rotation
    /// between the check and now ends the login here, where taking the
    /// current generation would let the old key's session outlive it.
    async fn provide_user_detail(&self, login: &FtpPrincipal) -> Result<FtpUser, UserDetailError> {
        let not_found = || UserDetailError::UserNotFound {
            username: login.username.clone(),
        };
        let (name, checked) = login.username.rsplit_once(':').ok_or_else(not_found)?;
        let checked: u32 = checked.parse().map_err(|_| not_found())?;
        let (principal, generation) = name
            .split_once(':')
            .and_then(|(account, user)| self.directory.principal(account, user))
            .filter(|(_, generation)| *generation == checked)
            .ok_or_else(not_found)?;
        Ok(FtpUser {
            principal,
            generation,
        })
    }
}

/// What a login hands libunftp for its session, whose principal is a name
/// only: `account:user:generation` (names have no `:`), the generation the
/// password was checked against.
fn session_name(principal: &Principal, generation: u32) -> String {
    format!("{}:{}:{generation}", principal.account, principal.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::tests::{open, root};

    /// Tokens revoked between a password's check and the session's start:
    /// no session. A login after it gets one, with the new generation.
    #[tokio::test]
    async fn a_login_raced_by_a_revocation_gets_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, directory) = open(dir.path(), &root()).await;
        let login = FtpLogin {
            directory: directory.clone(),
        };
        let password = Credentials::from(root().secret_key.as_str());
        let checked = login.authenticate("admin:admin", &password).await.unwrap();
        let (_, before) = directory.principal("admin", "admin").unwrap();
        directory.revoke_tokens("admin", "admin").await.unwrap();
        for _ in 0..200 {
            if directory.principal("admin", "admin").unwrap().1 != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(login.provide_user_detail(&checked).await.is_err());

        let again = login.authenticate("admin", &password).await.unwrap();
        let user = login.provide_user_detail(&again).await.unwrap();
        assert_eq!(user.to_string(), "admin:admin");
        assert_eq!(
            Some(user.generation),
            directory
                .principal("admin", "admin")
                .map(|(_, generation)| generation)
        );
        assert_ne!(user.generation, before);
    }
}
