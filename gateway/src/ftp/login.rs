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
            Ok((principal, _)) => Ok(FtpPrincipal {
                username: format!("{}:{}", principal.account, principal.user),
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

    async fn provide_user_detail(&self, login: &FtpPrincipal) -> Result<FtpUser, UserDetailError> {
        let (principal, generation) = login
            .username
            .split_once(':')
            .and_then(|(account, user)| self.directory.principal(account, user))
            .ok_or_else(|| UserDetailError::UserNotFound {
                username: login.username.clone(),
            })?;
        Ok(FtpUser {
            principal,
            generation,
        })
    }
}
