//! Rules for text fields: lengths are counted in characters (Unicode scalar values).

use crate::error::{Error, Result};

/// Longest project name.
pub const MAX_NAME: usize = 200;
/// Longest work item title.
pub const MAX_TITLE: usize = 500;
/// Longest project, sprint or description-like text.
pub const MAX_SHORT_TEXT: usize = 10_000;
/// Longest work item description, comment or LLM context content.
pub const MAX_LONG_TEXT: usize = 100_000;
/// Longest time entry description.
pub const MAX_TIME_ENTRY_NOTE: usize = 1_000;
/// Longest swim lane name.
pub const MAX_LANE_NAME: usize = 100;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A required single-line text: 1..=`max` characters, not blank, no control characters,
/// no leading or trailing whitespace.
pub fn single_line(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be blank"));
    }
    if value.trim() != value {
        return Err(Error::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must be a single line of text"));
    }
    max_chars(field, value, max)
}

/// A multi-line text of at most `max` characters; may be empty. NUL is refused.
pub fn multi_line(field: &str, value: &str, max: usize) -> Result<()> {
    if value.contains('\0') {
        return Err(Error::invalid(field, "must not contain NUL characters"));
    }
    max_chars(field, value, max)
}

/// A multi-line text that must not be blank.
pub fn required_multi_line(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be blank"));
    }
    multi_line(field, value, max)
}

fn max_chars(field: &str, value: &str, max: usize) -> Result<()> {
    // Bytes bound characters from above: skip the count for the common short case.
    if value.len() > max && value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format_args!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// A project key: 2 to 10 characters, an upper-case ASCII letter then upper-case letters or
/// digits, e.g. `PM` or `WEB2`.
pub fn project_key(field: &str, key: &str) -> Result<()> {
    let ok = (2..=10).contains(&key.len())
        && key.as_bytes()[0].is_ascii_uppercase()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 2 to 10 characters: an upper-case letter, then upper-case letters or digits",
        ))
    }
}

/// An idempotency key: at most 128 bytes of printable ASCII.
pub fn idempotency_key(field: &str, key: &str) -> Result<()> {
    if key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(Error::invalid(
            field,
            format_args!("must be at most {MAX_IDEMPOTENCY_KEY} bytes"),
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(field, "must be printable ASCII"));
    }
    Ok(())
}

/// Parses `PM-42` into its project key and number.
pub fn parse_display_key(field: &str, raw: &str) -> Result<(String, u64)> {
    let bad = || Error::invalid(field, "must look like PM-42");
    let (key, number) = raw.rsplit_once('-').ok_or_else(bad)?;
    project_key(field, key).map_err(|_| bad())?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) || number.starts_with('0') {
        return Err(bad());
    }
    let number = number.parse().map_err(|_| bad())?;
    Ok((key.to_owned(), number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_line_rules() {
        assert!(single_line("title", "Fix login", MAX_TITLE).is_ok());
        assert_eq!(
            single_line("title", "  ", MAX_TITLE).unwrap_err(),
            Error::invalid("title", "must not be blank")
        );
        assert_eq!(
            single_line("title", " x", MAX_TITLE).unwrap_err(),
            Error::invalid("title", "must not start or end with whitespace")
        );
        assert_eq!(
            single_line("title", "a\nb", MAX_TITLE).unwrap_err(),
            Error::invalid("title", "must be a single line of text")
        );
        // 500 multi-byte characters are fine; 501 are not.
        assert!(single_line("title", &"é".repeat(500), MAX_TITLE).is_ok());
        assert_eq!(
            single_line("title", &"é".repeat(501), MAX_TITLE).unwrap_err(),
            Error::invalid("title", "must be at most 500 characters")
        );
    }

    #[test]
    fn multi_line_rules() {
        assert!(multi_line("description", "", MAX_LONG_TEXT).is_ok());
        assert!(multi_line("description", "a\n\nb", MAX_LONG_TEXT).is_ok());
        assert!(multi_line("description", "a\0", MAX_LONG_TEXT).is_err());
        assert!(required_multi_line("content", "\n ", MAX_LONG_TEXT).is_err());
    }

    #[test]
    fn project_keys() {
        for ok in ["PM", "WEB2", "ABCDEFGHIJ"] {
            assert!(project_key("key", ok).is_ok(), "{ok}");
        }
        for bad in ["P", "pm", "2PM", "PM-1", "ABCDEFGHIJK", "", "ÄB"] {
            assert!(project_key("key", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_keys() {
        assert_eq!(parse_display_key("k", "PM-42").unwrap(), ("PM".into(), 42));
        for bad in [
            "PM42",
            "PM-",
            "PM-04",
            "pm-1",
            "PM-x",
            "-1",
            "PM-99999999999999999999999",
        ] {
            assert!(parse_display_key("k", bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn single_line_never_accepts_what_it_documents_as_refused(s in "\\PC{0,40}|[ \\t\\n]{0,3}[a-z]{0,5}[ \\t\\n]{0,3}") {
            if single_line("f", &s, 20).is_ok() {
                prop_assert!(!s.trim().is_empty());
                prop_assert_eq!(s.trim(), s.as_str());
                prop_assert!(!s.chars().any(char::is_control));
                prop_assert!(s.chars().count() <= 20);
            }
        }

        #[test]
        fn display_keys_round_trip(key in "[A-Z][A-Z0-9]{1,9}", n in 1u64..u64::MAX) {
            let raw = format!("{key}-{n}");
            prop_assert_eq!(parse_display_key("k", &raw).unwrap(), (key, n));
        }
    }
}
