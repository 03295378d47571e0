//! Search text as both engines take it (the user's words, cleaned and bounded) and their
//! snippets as they mark them, split into the parts the wire carries.

use pm_proto::v1;

use crate::error::{Error, Result};

/// Most words a search may hold.
const MAX_WORDS: usize = 32;

/// One word of a search: what is left of it without quotes, stars and control characters,
/// and whether it ended with `*` (a prefix).
pub(crate) struct Word {
    pub(crate) text: String,
    pub(crate) prefix: bool,
}

/// The words of `input`, each turned into a term of the engine's query by `term`, which
/// every engine joins with AND. Fails if no word is left or there are too many.
pub(crate) fn search_terms(input: &str, term: impl Fn(Word) -> String) -> Result<Vec<String>> {
    let terms: Vec<String> = input
        .split_whitespace()
        .filter_map(|word| {
            let prefix = word.ends_with('*');
            let text: String = word
                .chars()
                .filter(|c| *c != '"' && *c != '*' && !c.is_control())
                .collect();
            (!text.is_empty()).then(|| term(Word { text, prefix }))
        })
        .collect();
    if terms.is_empty() {
        return Err(Error::invalid("text", "has no words to search for"));
    }
    if terms.len() > MAX_WORDS {
        return Err(Error::invalid(
            "text",
            format!("may hold at most {MAX_WORDS} words"),
        ));
    }
    Ok(terms)
}

/// Where a snippet's match starts and ends: private-use characters, which the indexed text
/// is not expected to hold (if it does, the snippet only shows the wrong words as matched).
pub(crate) const MATCH_START: char = '\u{e000}';
pub(crate) const MATCH_END: char = '\u{e001}';

/// Splits a snippet marked with [`MATCH_START`]/[`MATCH_END`] into parts.
pub(crate) fn snippet_parts(marked: &str) -> Vec<v1::SnippetPart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut matched = false;
    let mut flush = |text: &mut String, matched: bool| {
        if !text.is_empty() {
            parts.push(v1::SnippetPart {
                text: std::mem::take(text),
                matched,
            });
        }
    };
    for c in marked.chars() {
        match c {
            MATCH_START | MATCH_END => {
                flush(&mut text, matched);
                matched = c == MATCH_START;
            }
            c => text.push(c),
        }
    }
    flush(&mut text, matched);
    parts
}
