//! Identifiers: tenants, entities and users.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::error::{Error, Result};

/// A tenant id: `^[a-z0-9][a-z0-9_-]{0,62}$`.
///
/// It names a directory, so nothing else gets through: no dots, slashes, percent signs,
/// upper case, unicode or NUL. Construct it only with [`TenantId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    /// Longest accepted tenant id, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Checks `raw` against the tenant id rule.
    pub fn parse(raw: &str) -> Result<Self> {
        let bytes = raw.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(Error::invalid("tenant_id", "must not be empty"));
        };
        if bytes.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                "tenant_id",
                format_args!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !lower_alnum(first) {
            return Err(Error::invalid(
                "tenant_id",
                "must start with a lower-case letter or digit",
            ));
        }
        if !bytes[1..]
            .iter()
            .all(|&b| lower_alnum(b) || b == b'_' || b == b'-')
        {
            return Err(Error::invalid(
                "tenant_id",
                "may contain only a-z, 0-9, '_' and '-'",
            ));
        }
        Ok(TenantId(raw.to_owned()))
    }

    /// The id as text; safe to use as a single path component.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An entity id. New ids are UUIDv7 (time ordered); any UUID is accepted on input so that
/// data imported from other systems keeps its ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId(Uuid);

impl EntityId {
    /// A fresh UUIDv7 id.
    pub fn new() -> Self {
        EntityId(Uuid::now_v7())
    }

    /// Parses the hyphenated form of a UUID, reporting errors against `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        // Only the canonical 36-character form: one spelling per id keeps lookups exact.
        if raw.len() != 36 {
            return Err(Error::invalid(
                field,
                "must be a UUID like 0190f0c4-...-...",
            ));
        }
        Uuid::from_str(raw)
            .map(EntityId)
            .map_err(|_| Error::invalid(field, "must be a UUID like 0190f0c4-...-..."))
    }

    /// The canonical lower-case hyphenated text.
    pub fn to_text(self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl Default for EntityId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// A user id, as the `sub` claim of a token: 1 to 128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Longest accepted user id, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Checks `raw` against the user id rule, reporting errors against `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "is required"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(Error::invalid(
                field,
                format_args!("must be at most {} bytes", Self::MAX_LEN),
            ));
        }
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::invalid(
                field,
                "must not contain whitespace or control characters",
            ));
        }
        Ok(UserId(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids_that_are_accepted() {
        for ok in ["a", "0", "acme", "acme-corp_2", &"a".repeat(63)] {
            assert_eq!(TenantId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn tenant_ids_that_are_rejected() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "/etc",
            "a\\b",
            "%2e%2e",
            "%2e",
            "Acme",
            "ACME",
            "-acme",
            "_acme",
            "acme.corp",
            "a b",
            "a\0b",
            "ａcme",
            "acmé",
            "аcme",
            "acme\n",
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        let long = "a".repeat(64);
        assert_eq!(
            TenantId::parse(&long).unwrap_err(),
            Error::invalid("tenant_id", "must be at most 63 characters")
        );
    }

    proptest! {
        #[test]
        fn accepted_tenant_ids_are_single_safe_path_components(raw in "\\PC{0,80}") {
            if let Ok(id) = TenantId::parse(&raw) {
                let s = id.as_str();
                prop_assert!(!s.is_empty() && s.len() <= 63);
                prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
                prop_assert!(!s.starts_with('-') && !s.starts_with('_'));
                let path = std::path::Path::new(s);
                prop_assert_eq!(path.components().count(), 1);
            }
        }

        #[test]
        fn tenant_id_pattern_is_matched_exactly(raw in "[a-z0-9][a-z0-9_-]{0,62}") {
            prop_assert!(TenantId::parse(&raw).is_ok());
        }
    }

    #[test]
    fn entity_ids_round_trip_in_canonical_form() {
        let id = EntityId::new();
        let text = id.to_text();
        assert_eq!(EntityId::parse("id", &text).unwrap(), id);
        assert_eq!(text.len(), 36);
        assert_eq!(
            EntityId::parse("id", "not-a-uuid").unwrap_err(),
            Error::invalid("id", "must be a UUID like 0190f0c4-...-...")
        );
        assert_eq!(
            EntityId::parse("parent_id", "").unwrap_err(),
            Error::invalid("parent_id", "is required")
        );
        // The simple (unhyphenated) form is another spelling of the same id: refused.
        assert!(EntityId::parse("id", &id.0.simple().to_string()).is_err());
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let a = EntityId::new();
        let b = EntityId::new();
        assert!(a.to_text() < b.to_text());
    }

    #[test]
    fn user_ids() {
        assert!(UserId::parse("sub", "user-1").is_ok());
        assert!(UserId::parse("sub", "").is_err());
        assert!(UserId::parse("sub", "a b").is_err());
        assert!(UserId::parse("sub", &"u".repeat(129)).is_err());
    }
}
