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
    if old_mid.len() + new_mid.len() > ANCHOR_FROM_BYTES
        && let Some(runs) = anchored_runs(old_mid, new_mid, lines_before)?
    {
        return Ok(runs);
    }
    xdiff_runs(old_mid, new_mid, lines_before)
}

/// Above this many bytes of middles (both sides), the middles are first split at anchors:
/// libgit2 hashes both buffers it diffs with collision-detecting SHA-1 (a quarter of a
/// history scan's instructions on the benchmark's multi-MB files) before xdiff hashes
/// every line again.
const ANCHOR_FROM_BYTES: usize = 256 << 10;

/// The added runs of two large middles, diffed piecewise: lines that occur exactly once in
/// each side, in the same order in both (the longest such sequence, as patience diff picks
/// them), are taken as unchanged, and only the stretches between them are diffed (xdiff
/// again, on small buffers). `None` when there is no such line. Where xdiff would align a
/// unique line differently (a moved block), the added lines can differ from xdiff's on the
/// whole middles; below [`ANCHOR_FROM_BYTES`] xdiff always sees the whole middles.
fn anchored_runs<'a>(
    old: &[u8],
    new: &'a [u8],
    lines_before: u32,
) -> Result<Option<Vec<Run<'a>>>, git2::Error> {
    let old_lines = line_starts(old);
    let new_lines = line_starts(new);
    fn line<'t>(text: &'t [u8], starts: &[usize], i: usize) -> &'t [u8] {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        &text[starts[i]..end]
    }
    // line -> (times in old, times in new, index in old). foldhash: SipHash was a tenth of
    // a history scan here; it is still keyed per process, so crafted lines cannot collide.
    let mut seen: std::collections::HashMap<&[u8], (u32, u32, usize), foldhash::fast::RandomState> =
        std::collections::HashMap::with_capacity_and_hasher(old_lines.len(), Default::default());
    for i in 0..old_lines.len() {
        let e = seen.entry(line(old, &old_lines, i)).or_insert((0, 0, i));
        e.0 += 1;
    }
    for i in 0..new_lines.len() {
        if let Some(e) = seen.get_mut(line(new, &new_lines, i)) {
            e.1 += 1;
        }
    }
    // (old index, new index) of the lines unique on both sides, in new order.
    let pairs: Vec<(usize, usize)> = (0..new_lines.len())
        .filter_map(|j| match seen.get(line(new, &new_lines, j)) {
            Some(&(1, 1, i)) => Some((i, j)),
            _ => None,
        })
        .collect();
    let anchors = longest_increasing(&pairs);
    if anchors.is_empty() {
        return Ok(None);
    }
    let byte = |starts: &[usize], len: usize, i: usize| starts.get(i).copied().unwrap_or(len);
    let mut runs = Vec::new();
    let (mut o, mut n) = (0usize, 0usize);
    for &(ao, an) in anchors
        .iter()
        .chain(std::iter::once(&(old_lines.len(), new_lines.len())))
    {
        let old_seg = &old[byte(&old_lines, old.len(), o)..byte(&old_lines, old.len(), ao)];
        let new_seg = &new[byte(&new_lines, new.len(), n)..byte(&new_lines, new.len(), an)];
        let before = lines_before.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if !new_seg.is_empty() {
            runs.extend(added_runs(old_seg, new_seg)?.into_iter().map(|r| Run {
                start_line: r.start_line.saturating_add(before),
                text: r.text,
            }));
        }
        (o, n) = (ao + 1, an + 1);
    }
    Ok(Some(runs))
}

/// Where each line of `text` starts.
fn line_starts(text: &[u8]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(text.len() / 32 + 1);
    if !text.is_empty() {
        starts.push(0);
    }
    starts.extend(
        memchr::memchr_iter(b'\n', text)
            .map(|i| i + 1)
            .filter(|&i| i < text.len()),
    );
    starts
}

/// The longest subsequence of `pairs` (increasing in their second field) whose first fields
/// increase too (patience sorting, O(n log n)).
fn longest_increasing(pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
    // tails[k]: index in `pairs` of the smallest tail of an increasing run of length k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; pairs.len()];
    for (i, &(o, _)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].0 < o);
        prev[i] = k.checked_sub(1).map(|k| tails[k]);
        match tails.get_mut(k) {
            Some(t) => *t = i,
            None => tails.push(i),
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(i) = at {
        out.push(pairs[i]);
        at = prev[i];
    }
    out.reverse();
    out
}

/// xdiff (libgit2's) on two middles; line numbers offset by `lines_before`.
fn xdiff_runs<'a>(
    old_mid: &[u8],
    new_mid: &'a [u8],
    lines_before: u32,
) -> Result<Vec<Run<'a>>, git2::Error> {
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
    fn whole_xdiff_runs(old: &str, new: &str) -> Vec<(u32, String)> {
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

    /// Large middles are diffed between anchor lines; on edits of a large file of distinct
    /// lines (data, generated files) that gives exactly xdiff's runs on the whole files.
    #[test]
    fn large_edits_split_at_anchors_match_xdiff() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..20 {
            let mut lines: Vec<String> = (0..20_000)
                .map(|i| format!("{i},row,{}\n", i * 7))
                .collect();
            let old = lines.concat();
            for _ in 0..1 + next(6) {
                let at = next(lines.len());
                match next(3) {
                    0 => lines[at] = format!("changed {round} {at}\n"),
                    1 => lines.insert(at, format!("inserted {round} {at}\n")),
                    _ => {
                        lines.remove(at);
                    }
                }
            }
            // Repeated lines too, which are never anchors.
            lines.insert(next(lines.len()), "}\n".into());
            lines.insert(next(lines.len()), "}\n".into());
            let new = lines.concat();
            assert!(old.len() + new.len() > ANCHOR_FROM_BYTES);
            assert_eq!(
                runs(&old, &new),
                whole_xdiff_runs(&old, &new),
                "round {round}"
            );
        }
        assert_eq!(
            longest_increasing(&[(3, 0), (0, 1), (1, 2), (5, 3), (2, 4)]),
            vec![(0, 1), (1, 2), (2, 4)]
        );
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
            assert_eq!(
                runs(old, new),
                whole_xdiff_runs(old, new),
                "{old:?} -> {new:?}"
            );
        }
    }
}
