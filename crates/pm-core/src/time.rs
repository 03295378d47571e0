//! The clock every crate reads the same way: Unix milliseconds, the unit of every stored
//! and wire time.

/// Now, as Unix milliseconds (0 before 1970, `i64::MAX` past what fits).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
