//! Ordering keys for drag-and-drop.
//!
//! A rank is a non-empty string over `0-9a-z` that does not end in `0`; items sort by rank
//! byte-wise (then by id). Between any two distinct ranks there is always another, so a move
//! rewrites only the moved item. New items get [`for_new_item`], which grows with the
//! tenant's change number, so they land after everything created or moved before them.

use crate::error::{Error, Result};

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const BASE: u8 = 36;

fn digit_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'z' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Checks that `rank` is a well-formed rank.
pub fn check(rank: &str) -> Result<()> {
    let valid =
        !rank.is_empty() && rank.bytes().all(|b| digit_value(b).is_some()) && !rank.ends_with('0');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "rank",
            "must be non-empty, use only 0-9 and a-z, and not end in 0",
        ))
    }
}

/// The rank of a newly created item whose change will have sequence number `seq`.
///
/// Fixed width, so it sorts numerically; the final `v` keeps it from ending in `0`.
pub fn for_new_item(seq: u64) -> String {
    format!("{seq:020}v")
}

/// The rank of an imported item at `position` in its column, `tiebreak` (its number)
/// ordering items of equal position.
///
/// Fixed width, so ranks sort like `(position, tiebreak)`. The 20 leading zeros keep every
/// imported rank below every [`for_new_item`] rank (a seq is at least 1), so items created
/// after an import land after the imported ones, as they would have upstream.
pub fn for_position(position: u32, tiebreak: u32) -> String {
    format!("{:020}{position:010}{tiebreak:010}i", 0)
}

/// A rank strictly between `before` and `after` (either may be open).
///
/// Errors if a bound is malformed or `before >= after`.
pub fn between(before: Option<&str>, after: Option<&str>) -> Result<String> {
    for bound in [before, after].into_iter().flatten() {
        check(bound)?;
    }
    if let (Some(a), Some(b)) = (before, after) {
        if a >= b {
            return Err(Error::invalid(
                "after_id",
                "the item to place after must come before the item to place before",
            ));
        }
    }
    let digits = match (before, after) {
        // After the last item: extend the last rank by one digit, so the key stays just above
        // it and below every rank that is greater at an earlier position (later new items).
        (Some(a), None) => {
            let mut d = to_digits(a);
            d.push(BASE / 2);
            d
        }
        (a, b) => midpoint(&to_digits(a.unwrap_or("")), b.map(to_digits).as_deref()),
    };
    Ok(digits
        .into_iter()
        .map(|d| DIGITS[d as usize] as char)
        .collect())
}

fn to_digits(s: &str) -> Vec<u8> {
    s.bytes()
        .map(|b| digit_value(b).expect("ranks are checked before conversion"))
        .collect()
}

/// Digits strictly between `a` and `b` (`b = None` is +infinity), never ending in 0.
/// `a` may be empty (-infinity); requires `a < b`, and neither ends in 0.
fn midpoint(a: &[u8], b: Option<&[u8]>) -> Vec<u8> {
    if let Some(b) = b {
        // Skip the common prefix, reading `a` as padded with zeros.
        let n = b
            .iter()
            .enumerate()
            .take_while(|(i, d)| a.get(*i).copied().unwrap_or(0) == **d)
            .count();
        if n > 0 {
            let mut out = b[..n].to_vec();
            out.extend(midpoint(a.get(n..).unwrap_or(&[]), Some(&b[n..])));
            return out;
        }
    }
    let da = a.first().copied().unwrap_or(0);
    let db = b.map_or(BASE, |b| b[0]);
    if db - da > 1 {
        return vec![(da + db) / 2];
    }
    // Consecutive first digits.
    if let Some(b) = b {
        if b.len() > 1 {
            // `b[0]` alone is below `b` (whose tail is non-zero) and above `a`.
            return vec![b[0]];
        }
    }
    let mut out = vec![da];
    out.extend(midpoint(a.get(1..).unwrap_or(&[]), None));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn simple_cases() {
        assert_eq!(between(None, None).unwrap(), "i");
        assert_eq!(between(Some("i"), None).unwrap(), "ii");
        assert_eq!(between(None, Some("i")).unwrap(), "9");
        assert_eq!(between(Some("a"), Some("c")).unwrap(), "b");
        assert_eq!(between(Some("a"), Some("b")).unwrap(), "ai");
        assert_eq!(between(Some("a1"), Some("a2")).unwrap(), "a1i");
    }

    #[test]
    fn errors() {
        assert!(between(Some("b"), Some("a")).is_err());
        assert!(between(Some("a"), Some("a")).is_err());
        assert!(between(Some("A"), None).is_err());
        assert!(between(Some("a0"), None).is_err());
        assert!(check("").is_err());
    }

    #[test]
    fn new_items_sort_after_items_moved_to_the_end() {
        let last = for_new_item(41);
        let moved = between(Some(&last), None).unwrap();
        let next = for_new_item(42);
        assert!(last < moved && moved < next, "{last} < {moved} < {next}");
        assert!(check(&next).is_ok());
    }

    #[test]
    fn imported_ranks_keep_position_order_and_sort_before_new_items() {
        let ranks = [
            for_position(0, 7),
            for_position(1, 3),
            for_position(1, 12),
            for_position(2, 1),
            for_position(u32::MAX, u32::MAX),
        ];
        assert!(ranks.iter().all(|r| check(r).is_ok()));
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        assert!(ranks[4] < for_new_item(1));
        // Dropping an item after the last imported one stays below new items too.
        let after = between(Some(&ranks[4]), None).unwrap();
        assert!(ranks[4] < after && after < for_new_item(1));
    }

    fn rank() -> impl Strategy<Value = String> {
        "[0-9a-z]{0,6}[1-9a-z]"
    }

    proptest! {
        #[test]
        fn between_is_strictly_between(a in rank(), b in rank()) {
            prop_assume!(a != b);
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            let mid = between(Some(&lo), Some(&hi)).unwrap();
            prop_assert!(check(&mid).is_ok());
            prop_assert!(lo < mid && mid < hi, "{} < {} < {}", lo, mid, hi);
        }

        #[test]
        fn open_ends(a in rank()) {
            let above = between(Some(&a), None).unwrap();
            let below = between(None, Some(&a)).unwrap();
            prop_assert!(check(&above).is_ok() && check(&below).is_ok());
            prop_assert!(below < a && a < above);
        }

        #[test]
        fn repeated_inserts_keep_a_total_order(moves in proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..60)) {
            // Simulate drag-and-drop: insert at a random place in an ordered list many times.
            let mut ranks: Vec<String> = vec![for_new_item(1)];
            for (index, before) in moves {
                let i = index.index(ranks.len());
                let new = if before {
                    between(if i == 0 { None } else { Some(ranks[i - 1].as_str()) }, Some(&ranks[i])).unwrap()
                } else {
                    between(Some(&ranks[i]), ranks.get(i + 1).map(String::as_str)).unwrap()
                };
                let at = if before { i } else { i + 1 };
                ranks.insert(at, new);
                prop_assert!(ranks.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}
