//! The lines a new version of a file adds to the old one, as runs of consecutive lines (the
//! `+` side of `git diff -U0` hunks).
//!
//! Most edits touch one region of a file (appends above all), so the common prefix and suffix
//! lines are cut first with plain byte comparisons; when one side of what remains is empty
//! (a pure insertion or deletion) the answer needs no diff at all. Only when both middles are
//! non-empty does xdiff (libgit2's copy of git's) run, and then on the middles alone. git's
//! xdiff trims the same common ends before diffing, so the added lines are the same; only
//! where xdiff would slide a hunk of repeated lines across the cut can a line number differ.

use git2::{DiffOptions, Patch};

use crate::scanner::bytes::{common_prefix, common_suffix};

/// One run of added lines: `text` starts at 1-based line `start_line` of the new file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Run<'a> {
    pub(crate) start_line: u32,
    pub(crate) text: std::borrow::Cow<'a, [u8]>,
}

/// The runs of lines in `new` that are not in `old`, in order.
pub(crate) fn added_runs<'a>(old: &[u8], new: &'a [u8]) -> Result<Vec<Run<'a>>, git2::Error> {
    let prefix = common_prefix_lines(old, new);
    let suffix = common_suffix_lines(&old[prefix..], &new[prefix..]);
    let old_mid = &old[prefix..old.len() - suffix];
    let new_mid = &new[prefix..new.len() - suffix];
    if new_mid.is_empty() {
        return Ok(Vec::new());
    }
    let lines_before = count_lines(&new[..prefix]);
    if old_mid.is_empty() {
        return Ok(vec![Run {
            start_line: lines_before.saturating_add(1),
            text: new_mid.into(),
        }]);
    }
    let mut opts = DiffOptions::new();
    opts.context_lines(0);
    // No paths: a path makes libgit2 look up .gitattributes diff drivers for every file.
    let patch = Patch::from_buffers(old_mid, None, new_mid, None, Some(&mut opts))?;
    let mut runs = Vec::new();
    for h in 0..patch.num_hunks() {
        let mut buf: Vec<u8> = Vec::new();
        let mut first = None;
        for l in 0..patch.num_lines_in_hunk(h)? {
            let line = patch.line_in_hunk(h, l)?;
            if line.origin() != '+' {
                continue;
            }
            first = first.or(line.new_lineno());
            buf.extend_from_slice(line.content());
        }
        if let Some(first) = first {
            runs.push(Run {
                start_line: lines_before.saturating_add(first),
                text: buf.into(),
            });
        }
    }
    Ok(runs)
}

/// Bytes of the whole lines (newline included) that `old` and `new` start with.
fn common_prefix_lines(old: &[u8], new: &[u8]) -> usize {
    let same = common_prefix(old, new);
    // A line is common only with its newline: "b" at the end of one file and "b\n" in the
    // other are different lines to git.
    memchr::memrchr(b'\n', &new[..same]).map_or(0, |p| p + 1)
}

/// Bytes of the whole lines that `old` and `new` end with (both start at a line start).
fn common_suffix_lines(old: &[u8], new: &[u8]) -> usize {
    let same = common_suffix(old, new);
    // The suffix must begin at a line start on both sides: just after a newline, or at the
    // start of the (trimmed) text.
    let starts_line = |text: &[u8], at: usize| at == 0 || text[at - 1] == b'\n';
    let mut len = same;
    while len > 0 && !(starts_line(old, old.len() - len) && starts_line(new, new.len() - len)) {
        len -= 1;
    }
    len
}

fn count_lines(text: &[u8]) -> u32 {
    u32::try_from(memchr::memchr_iter(b'\n', text).count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn runs(old: &str, new: &str) -> Vec<(u32, String)> {
        added_runs(old.as_bytes(), new.as_bytes())
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.start_line,
                    String::from_utf8(r.text.into_owned()).unwrap(),
                )
            })
            .collect()
    }

    /// What `git diff -U0` reports as added, for the same pair, through libgit2 on whole files.
    fn xdiff_runs(old: &str, new: &str) -> Vec<(u32, String)> {
        let mut opts = DiffOptions::new();
        opts.context_lines(0);
        let patch =
            Patch::from_buffers(old.as_bytes(), None, new.as_bytes(), None, Some(&mut opts))
                .unwrap();
        let mut out = Vec::new();
        for h in 0..patch.num_hunks() {
            let mut text = String::new();
            let mut first = None;
            for l in 0..patch.num_lines_in_hunk(h).unwrap() {
                let line = patch.line_in_hunk(h, l).unwrap();
                if line.origin() == '+' {
                    first = first.or(line.new_lineno());
                    text.push_str(std::str::from_utf8(line.content()).unwrap());
                }
            }
            if let Some(first) = first {
                out.push((first, text));
            }
        }
        out
    }

    #[test]
    fn appends_inserts_and_deletes_need_no_diff() {
        assert_eq!(runs("a\nb\n", "a\nb\nc\nd\n"), vec![(3, "c\nd\n".into())]);
        assert_eq!(runs("a\nc\n", "a\nb\nc\n"), vec![(2, "b\n".into())]);
        assert_eq!(runs("b\n", "a\nb\n"), vec![(1, "a\n".into())]);
        assert_eq!(runs("a\nb\nc\n", "a\nc\n"), vec![]);
        assert_eq!(runs("", "x\n"), vec![(1, "x\n".into())]);
    }

    #[test]
    fn a_missing_final_newline_makes_the_last_line_differ() {
        assert_eq!(runs("a\nb", "a\nb\nc\n"), vec![(2, "b\nc\n".into())]);
        assert_eq!(runs("a\nb\n", "a\nb"), vec![(2, "b".into())]);
        // Partial-line common ends are not lines: "xb\n" vs "yb\n" shares "b\n" only as bytes.
        assert_eq!(runs("xb\n", "yb\n"), vec![(1, "yb\n".into())]);
    }

    #[test]
    fn edits_in_the_middle_match_xdiff_on_whole_files() {
        let cases = [
            ("a\nb\nc\nd\ne\n", "a\nB\nc\nD\ne\n"),
            ("a\nb\nc\n", "a\nx\ny\nc\nz\n"),
            ("k1\nk2\nk3\nk4\n", "k0\nk1\nk3\nk5\nk4\n"),
            (
                "fn a() {\n}\n",
                "fn a() {\n    let s = 1;\n}\nfn b() {\n}\n",
            ),
            ("same\nsame\nold\nsame\n", "same\nnew\nsame\nsame\n"),
            ("x", "y"),
        ];
        for (old, new) in cases {
            assert_eq!(runs(old, new), xdiff_runs(old, new), "{old:?} -> {new:?}");
        }
    }
}
