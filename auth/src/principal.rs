//! Who a request acts as once it is authenticated, and what their role lets them do.

use std::fmt;

/// What a user may do within their own account. Access to other accounts'
/// containers comes only from those containers' ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads every container of the account; writes nothing.
    Reader,
    /// Reads and writes objects in every container of the account.
    Writer,
    /// Everything within the account: containers, their ACLs and metadata,
    /// the account's metadata (TempURL keys).
    AccountAdmin,
    /// The operator: every account, and the admin API (accounts, users, keys).
    ResellerAdmin,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Reader,
        Role::Writer,
        Role::AccountAdmin,
        Role::ResellerAdmin,
    ];

    /// The name used in the admin API, the CLI and tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::AccountAdmin => "admin",
            Role::ResellerAdmin => "reseller-admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// May write objects in containers of the user's own account.
    pub fn can_write(self) -> bool {
        self >= Role::Writer
    }

    /// May manage containers and metadata of the user's own account.
    pub fn is_account_admin(self) -> bool {
        self >= Role::AccountAdmin
    }

    /// The byte a token carries for the role.
    pub(crate) fn code(self) -> u8 {
        match self {
            Role::Reader => 1,
            Role::Writer => 2,
            Role::AccountAdmin => 3,
            Role::ResellerAdmin => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.code() == code)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated user: the account they belong to, their name and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub account: String,
    pub user: String,
    pub role: Role,
}

impl Principal {
    /// May act on `account` as its owner would: its own account for account
    /// admins, every account for reseller admins.
    pub fn administers(&self, account: &str) -> bool {
        self.role == Role::ResellerAdmin
            || (self.role.is_account_admin() && self.account == account)
    }

    /// May read every container of `account` without an ACL.
    pub fn reads_account(&self, account: &str) -> bool {
        self.role == Role::ResellerAdmin || self.account == account
    }

    /// May write objects in every container of `account` without an ACL.
    pub fn writes_account(&self, account: &str) -> bool {
        self.role == Role::ResellerAdmin || (self.role.can_write() && self.account == account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(account: &str, role: Role) -> Principal {
        Principal {
            account: account.into(),
            user: "u".into(),
            role,
        }
    }

    #[test]
    fn roles_round_trip_and_order() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(Role::from_code(role.code()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
        assert!(!Role::Reader.can_write());
        assert!(Role::Writer.can_write() && !Role::Writer.is_account_admin());
    }

    #[test]
    fn account_scope() {
        let check = |role, account: &str, administers, reads, writes| {
            let who = principal("a", role);
            assert_eq!(who.administers(account), administers, "{role} on {account}");
            assert_eq!(who.reads_account(account), reads, "{role} on {account}");
            assert_eq!(who.writes_account(account), writes, "{role} on {account}");
        };
        check(Role::Reader, "a", false, true, false);
        check(Role::Writer, "a", false, true, true);
        check(Role::AccountAdmin, "a", true, true, true);
        check(Role::AccountAdmin, "b", false, false, false);
        check(Role::Writer, "b", false, false, false);
        check(Role::ResellerAdmin, "b", true, true, true);
    }
}
