//! Keyset pagination: a page of any entity ordered by a unique list of sort keys, and the
//! opaque page tokens that carry the last row's keys to the next request. Rows inserted
//! between two pages are never skipped or repeated.

use pm_core::rules::page;
use pm_proto::v1;
use sqlx::{QueryBuilder, Row};

use super::dialect::{Conn, Db};
use super::records;
use crate::entity::Entity;
use crate::error::{Error, Result};

/// A sort key value in a page token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

const SEPARATOR: char = '\u{1f}';

/// Page tokens are the sort keys of the last row, typed and hex-encoded: opaque to clients,
/// stable across inserts (keyset pagination never skips or repeats a row).
pub(crate) fn encode_token(keys: &[Key]) -> String {
    let plain = keys
        .iter()
        .map(|k| match k {
            Key::Int(v) => format!("i{v}"),
            Key::Text(s) => format!("t{s}"),
        })
        .collect::<Vec<_>>()
        .join(&SEPARATOR.to_string());
    plain.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn bad_token() -> Error {
    Error::invalid("page.page_token", "is not a token from this list")
}

pub(crate) fn decode_token(token: &str, expected: usize) -> Result<Option<Vec<Key>>> {
    if token.is_empty() {
        return Ok(None);
    }
    if !token.len().is_multiple_of(2) || token.len() > 8_192 {
        return Err(bad_token());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(token.get(i..i + 2).ok_or_else(bad_token)?, 16)
                .map_err(|_| bad_token())
        })
        .collect::<Result<Vec<u8>>>()?;
    let plain = String::from_utf8(bytes).map_err(|_| bad_token())?;
    let keys = plain
        .split(SEPARATOR)
        .map(|part| match part.split_at_checked(1) {
            Some(("i", v)) => v.parse().map(Key::Int).map_err(|_| bad_token()),
            Some(("t", s)) => Ok(Key::Text(s.to_owned())),
            _ => Err(bad_token()),
        })
        .collect::<Result<Vec<_>>>()?;
    if keys.len() != expected {
        return Err(bad_token());
    }
    Ok(Some(keys))
}

/// One keyset page of `T`, ordered by the `order` expressions (ascending, unique together).
pub(crate) async fn list<T: Entity>(
    conn: &mut Conn,
    order: &[&str],
    page: Option<&v1::PageRequest>,
    filters: impl FnOnce(&mut QueryBuilder<'_, Db>),
) -> Result<(Vec<T>, String)> {
    let size = page::size(page.map_or(0, |p| p.page_size))?;
    let cursor = decode_token(page.map_or("", |p| p.page_token.as_str()), order.len())?;
    let keys: String = order
        .iter()
        .enumerate()
        .map(|(i, expr)| format!(", {expr} AS _k{i}"))
        .collect();
    let mut b = QueryBuilder::<Db>::new(format!(
        "SELECT {}{keys} FROM {} AS t WHERE 1 = 1",
        records::select_columns::<T>("t"),
        T::TABLE
    ));
    filters(&mut b);
    let order_list = order.join(", ");
    if let Some(cursor) = cursor {
        b.push(format_args!(" AND ({order_list}) > ("));
        let mut values = b.separated(", ");
        for key in cursor {
            match key {
                Key::Int(v) => values.push_bind(v),
                Key::Text(s) => values.push_bind(s),
            };
        }
        b.push(")");
    }
    b.push(format_args!(" ORDER BY {order_list} LIMIT "))
        .push_bind(i64::from(size) + 1);
    let mut rows = b.build().fetch_all(&mut *conn).await?;
    let next_page_token = if rows.len() > size as usize {
        rows.truncate(size as usize);
        let last = rows.last().expect("a full page has a last row");
        let keys = (0..order.len())
            .map(|i| {
                let column = format!("_k{i}");
                match last.try_get::<i64, _>(column.as_str()) {
                    Ok(v) => Ok(Key::Int(v)),
                    Err(_) => Ok(Key::Text(last.try_get(column.as_str())?)),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        encode_token(&keys)
    } else {
        String::new()
    };
    let items = rows
        .iter()
        .map(records::from_row::<T>)
        .collect::<Result<Vec<_>>>()?;
    Ok((items, next_page_token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn tokens_round_trip(a in any::<i64>(), s in "\\PC{0,40}") {
            let keys = vec![Key::Int(a), Key::Text(s.replace(SEPARATOR, ""))];
            let token = encode_token(&keys);
            prop_assert_eq!(decode_token(&token, 2).unwrap(), Some(keys));
        }

        #[test]
        fn garbage_tokens_are_refused_not_panicked(token in "\\PC{0,60}") {
            let _ = decode_token(&token, 2);
        }
    }

    #[test]
    fn bad_tokens() {
        assert!(decode_token("zz", 1).is_err());
        assert!(decode_token("6", 1).is_err());
        assert!(decode_token(&encode_token(&[Key::Int(1)]), 2).is_err());
    }
}
