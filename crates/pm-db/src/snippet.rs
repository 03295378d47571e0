//! Search snippets as both engines mark them, split into the parts the wire carries.

use pm_proto::v1;

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
