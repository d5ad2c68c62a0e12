//! Roles: who may do what (API.md). A platform token is an `admin`; a team token is a
//! `maintainer`, `member` or `viewer` of exactly one team.

use serde::{Deserialize, Serialize};

/// A token's role, ordered by power: each role may do everything the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Member,
    Maintainer,
    Admin,
}

impl Role {
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Maintainer => "maintainer",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = crate::ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "maintainer" => Ok(Role::Maintainer),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            other => Err(crate::ParseEnumError {
                kind: "role",
                value: other.to_owned(),
                expected: "admin maintainer member viewer",
            }),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn roles_are_ordered_by_power() {
        assert!(Role::Admin > Role::Maintainer);
        assert!(Role::Maintainer > Role::Member);
        assert!(Role::Member > Role::Viewer);
        assert_eq!("member".parse::<Role>().unwrap(), Role::Member);
        assert!("owner".parse::<Role>().unwrap_err().to_string().contains("admin maintainer"));
    }
}
