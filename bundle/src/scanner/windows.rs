//! Keyword windows: on a large fragment, a rule every match of which holds one of its
//! keywords runs its regex only around the places where those keywords occur, instead of over
//! the whole fragment.
//!
//! Why: short keywords occur all the time in random data (a 90 MB binary pushed through the
//! gate holds thousands of `sk`s and `eyj`s), and the prefilter then wakes the rule for the
//! whole fragment. Run over windows, the regex reads a few hundred bytes per keyword instead.
//!
//! Why the findings are the same: a match of length at most `L` that holds a keyword occurrence
//! `[s, e)` lies within `[e - L, s + L)`. Each window is searched from its start with the
//! fragment before it as context (`find_at`) and ends one byte past `s + L` of its last
//! occurrence, so every such match is found with its real neighbouring bytes, and a match the
//! cut-off end could fake holds no occurrence (it starts after the last one); matches that
//! hold none are skipped (the search goes on one byte further, so they hide nothing).

use regex::bytes::Regex;

/// Fragments larger than this are scanned in windows (for the rules that allow it).
pub(crate) const WINDOWED_FRAGMENT_BYTES: usize = 64 << 10;

/// A keyword occurring more often than once per this many bytes of the text is not worth
/// windowing (and its positions would cost memory): its rules read the whole fragment.
const DENSE_HIT_SPACING: usize = 256;

/// Where each keyword occurs in one text, or that one occurs too often to list.
#[derive(Debug)]
pub(crate) struct Hits {
    /// Per keyword pattern: the end offsets of its occurrences, ascending; `None` once dense.
    ends: Vec<Option<Vec<usize>>>,
    cap: usize,
}

impl Hits {
    pub(crate) fn new(patterns: usize, text_len: usize) -> Hits {
        Hits {
            ends: vec![Some(Vec::new()); patterns],
            cap: text_len / DENSE_HIT_SPACING + 16,
        }
    }

    /// Records that `pattern` occurs ending at `end`.
    pub(crate) fn push(&mut self, pattern: usize, end: usize) {
        let Some(slot) = self.ends.get_mut(pattern) else {
            return;
        };
        if let Some(list) = slot {
            if list.len() >= self.cap {
                *slot = None;
            } else {
                list.push(end);
            }
        }
    }

    /// The occurrences `[start, end)` of these patterns (with their lengths), sorted; `None`
    /// when one of them is dense.
    pub(crate) fn spans(&self, patterns: &[(usize, usize)]) -> Option<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        for &(pattern, len) in patterns {
            let list = self.ends.get(pattern)?.as_ref()?;
            out.extend(list.iter().map(|&end| (end.saturating_sub(len), end)));
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// One stretch of text to search, and the keyword occurrences in it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) spans: Vec<(usize, usize)>,
}

/// Merges the windows around sorted occurrences for a regex whose matches are at most
/// `max_len` long, within a text of `text_len` bytes.
pub(crate) fn windows(spans: &[(usize, usize)], max_len: usize, text_len: usize) -> Vec<Window> {
    let mut out: Vec<Window> = Vec::new();
    for &(s, e) in spans {
        let start = e.saturating_sub(max_len);
        let end = s.saturating_add(max_len).saturating_add(1).min(text_len);
        match out.last_mut() {
            Some(last) if start <= last.end => {
                last.end = last.end.max(end);
                last.spans.push((s, e));
            }
            _ => out.push(Window {
                start,
                end,
                spans: vec![(s, e)],
            }),
        }
    }
    out
}

/// Every match of `regex` in `text` that holds a keyword occurrence of `window`, in order,
/// as `(start, end)`: what `find_iter` over the whole text yields there.
pub(crate) fn matches_in(regex: &Regex, text: &[u8], window: &Window) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let hay = &text[..window.end.min(text.len())];
    let mut pos = window.start;
    while pos <= hay.len() {
        let Some(m) = regex.find_at(hay, pos) else {
            break;
        };
        let (start, end) = (m.start(), m.end());
        if holds_span(&window.spans, start, end) {
            out.push((start, end));
            pos = if end > start { end } else { end + 1 };
        } else {
            pos = start + 1;
        }
    }
    out
}

/// Whether `[start, end)` contains one of the sorted `spans` whole.
fn holds_span(spans: &[(usize, usize)], start: usize, end: usize) -> bool {
    let first = spans.partition_point(|&(s, _)| s < start);
    spans[first..]
        .iter()
        .take_while(|&&(s, _)| s < end)
        .any(|&(_, e)| e <= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_and_clip() {
        let w = windows(&[(10, 13), (20, 23), (500, 503)], 50, 520);
        assert_eq!(
            w,
            vec![
                Window {
                    start: 0,
                    end: 71,
                    spans: vec![(10, 13), (20, 23)]
                },
                Window {
                    start: 453,
                    end: 520,
                    spans: vec![(500, 503)]
                },
            ]
        );
    }

    #[test]
    fn dense_keywords_are_not_listed() {
        let mut hits = Hits::new(2, 0);
        for i in 0..17 {
            hits.push(0, i + 3);
        }
        hits.push(1, 9);
        assert_eq!(hits.spans(&[(1, 3)]), Some(vec![(6, 9)]));
        assert_eq!(hits.spans(&[(0, 3), (1, 3)]), None);
    }

    /// Window search gives what a whole-text search gives, for a keyword-anchored regex,
    /// with word boundaries at the window's edges and matches running up to them.
    #[test]
    fn window_matches_equal_whole_text_matches() {
        let re = Regex::new(r"\b(?:tok_)[a-z0-9]{4,12}\b").unwrap();
        let mut text = b"xx tok_abcd1 q".to_vec();
        text.extend(std::iter::repeat_n(b'a', 300));
        text.extend(b"tok_zzzzzzzzzzzz tok_short1 atok_no tok_abcdefghijklmnop tok_".to_vec());
        let kw: Vec<(usize, usize)> = memchr::memmem::find_iter(&text, b"tok_")
            .map(|s| (s, s + 4))
            .collect();
        let whole: Vec<(usize, usize)> =
            re.find_iter(&text).map(|m| (m.start(), m.end())).collect();
        let max_len = regex_syntax::parse(re.as_str())
            .unwrap()
            .properties()
            .maximum_len()
            .unwrap();
        let windowed: Vec<(usize, usize)> = windows(&kw, max_len, text.len())
            .iter()
            .flat_map(|w| matches_in(&re, &text, w))
            .collect();
        assert_eq!(windowed, whole);
        // `tok_abcd1` and `tok_short1`: the others lack a word boundary on one side.
        assert_eq!(whole.len(), 2);
    }
}
