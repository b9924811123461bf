//! Validated identifier newtypes. Deserialization validates, so a record carrying a malformed
//! symbol or account never reaches a processor core.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    /// Which identifier kind (symbol, account).
    pub kind: &'static str,
    /// The refused input.
    pub value: String,
    /// What rule it broke.
    pub reason: &'static str,
}

/// A canonical instrument symbol: 1–32 characters of `A-Z 0-9 . - _ ^ = /`, upper case.
/// `Symbol::canonical` upper-cases and trims user input before validating.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

impl Symbol {
    /// Validates an already-canonical symbol.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        let err = |reason| InvalidId {
            kind: "symbol",
            value: value.clone(),
            reason,
        };
        if value.is_empty() || value.len() > 32 {
            return Err(err("must be 1 to 32 characters"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || ".-_^=/".contains(c))
        {
            return Err(err(
                "only A-Z, 0-9 and . - _ ^ = / are allowed (upper case)",
            ));
        }
        Ok(Self(value))
    }

    /// Trims and upper-cases user or provider input, then validates it.
    pub fn canonical(raw: &str) -> Result<Self, InvalidId> {
        Self::new(raw.trim().to_ascii_uppercase())
    }

    /// The symbol text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An account identifier: 1–64 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Validates an account id.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        let err = |reason| InvalidId {
            kind: "account",
            value: value.clone(),
            reason,
        };
        if value.is_empty() || value.len() > 64 {
            return Err(err("must be 1 to 64 characters"));
        }
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err("only A-Z, a-z, 0-9, _ and - are allowed"));
        }
        Ok(Self(value))
    }

    /// The account text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }
        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_newtype_impls!(Symbol);
string_newtype_impls!(AccountId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols() {
        assert!(Symbol::new("AAPL").is_ok());
        assert!(Symbol::new("^IXIC").is_ok());
        assert!(Symbol::new("BRK.B").is_ok());
        assert!(Symbol::new("aapl").is_err());
        assert!(Symbol::new("").is_err());
        assert!(Symbol::new("A B").is_err());
        assert_eq!(
            Symbol::canonical(" msft ").map(|s| s.to_string()),
            Ok("MSFT".to_string())
        );
    }

    #[test]
    fn accounts() {
        assert!(AccountId::new("acct-1_A").is_ok());
        assert!(AccountId::new("bad account").is_err());
        assert!(AccountId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn deserialization_validates() {
        let r: Result<Symbol, _> = serde_json::from_str("\"lower\"");
        assert!(r.is_err());
        let r: Result<AccountId, _> = serde_json::from_str("\"ok-1\"");
        assert!(r.is_ok());
    }
}
