//! The detection core: a fragment (one hunk's added lines, a file, a message) in, findings
//! out. Keyword prefilter (Aho-Corasick), then each selected rule's regex, secret group,
//! entropy, `gitleaks:allow`, global and per-rule allowlists; then decoding passes. Pure: no IO.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use aho_corasick::automaton::Automaton;
use aho_corasick::nfa::contiguous;
use aho_corasick::{Anchored, MatchKind, dfa};

use crate::scanner::decode::{Layer, decode_pass};
use crate::scanner::finding::Finding;
use crate::scanner::rules::{Allowlist, Condition, RegexTarget, Rule, Rules};
use crate::scanner::windows::{self, Hits, WINDOWED_FRAGMENT_BYTES, Window};

/// A line containing this is never reported (gitleaks' inline opt-out).
const ALLOW_SIGNATURE: &str = "gitleaks:allow";

/// Rules with this tag yield to a specific rule that found the same secret.
const GENERIC_TAG: &str = "generic";

/// One piece of text to scan and where it came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fragment<'a> {
    pub(crate) text: &'a [u8],
    pub(crate) path: &'a str,
    /// Commit id, or "" outside git.
    pub(crate) commit: &'a str,
    /// Line number of the first line of `text` in its file (1-based).
    pub(crate) start_line: u32,
}

/// Compiled rules plus the keyword automaton.
#[derive(Debug)]
pub(crate) struct Engine {
    rules: Rules,
    keywords: Keywords,
    /// For each keyword pattern, the rules that listed it.
    pattern_rules: Vec<Vec<usize>>,
    /// Rules without keywords: they always run.
    always: Vec<usize>,
    /// For each rule, its keyword patterns and their lengths.
    rule_patterns: Vec<Vec<(usize, usize)>>,
    max_decode_depth: usize,
    /// Layers larger than this run windowed rules in windows (`scanner::windows`).
    windowed_above: usize,
}

impl Engine {
    pub(crate) fn new(rules: Rules, max_decode_depth: usize) -> Engine {
        let mut patterns: Vec<String> = Vec::new();
        let mut pattern_rules: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let mut rule_patterns = Vec::with_capacity(rules.rules.len());
        for (i, rule) in rules.rules.iter().enumerate() {
            if rule.keywords.is_empty() {
                always.push(i);
            }
            let mut own = Vec::with_capacity(rule.keywords.len());
            for kw in &rule.keywords {
                let at = match patterns.iter().position(|p| p == kw) {
                    Some(at) => {
                        pattern_rules[at].push(i);
                        at
                    }
                    None => {
                        patterns.push(kw.clone());
                        pattern_rules.push(vec![i]);
                        patterns.len() - 1
                    }
                };
                own.push((at, kw.len()));
            }
            rule_patterns.push(own);
        }
        let keywords = Keywords::new(&patterns);
        Engine {
            rules,
            keywords,
            pattern_rules,
            always,
            rule_patterns,
            max_decode_depth,
            windowed_above: WINDOWED_FRAGMENT_BYTES,
        }
    }

    /// Sets the size above which windowed rules run in windows (tests compare both ways).
    #[cfg(test)]
    fn keywords_patterns(&self) -> &[String] {
        match &self.keywords {
            Keywords::Automata(a) => &a.patterns,
            _ => &[],
        }
    }

    #[cfg(test)]
    pub(crate) fn set_windowed_above(&mut self, bytes: usize) {
        self.windowed_above = bytes;
    }

    pub(crate) fn set_decode_depth(&mut self, depth: usize) {
        self.max_decode_depth = depth;
    }

    pub(crate) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// All findings in one fragment.
    pub(crate) fn detect(&self, frag: &Fragment<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        if fragment_allowed(frag, &self.rules.allowlists) {
            return out;
        }
        let mut layer = Layer::original(frag.text);
        self.detect_layer(frag, &layer, 0, &mut out);
        for depth in 1..=self.max_decode_depth {
            match decode_pass(&layer, depth) {
                Some(next) => layer = next,
                None => break,
            }
            self.detect_layer(frag, &layer, depth, &mut out);
        }
        if depth_used(&out) {
            let mut seen = std::collections::HashSet::new();
            out.retain(|f| seen.insert((f.rule_id.clone(), f.start_line, f.secret.clone())));
        }
        drop_generic_duplicates(&mut out);
        crate::scanner::finding::note_neighbours(&mut out);
        out
    }

    fn detect_layer(
        &self,
        frag: &Fragment<'_>,
        layer: &Layer<'_>,
        depth: usize,
        out: &mut Vec<Finding>,
    ) {
        let mut selected = vec![false; self.rules.rules.len()];
        for &i in &self.always {
            selected[i] = true;
        }
        let large = layer.text.len() > self.windowed_above && self.keywords.positions();
        // Positions only where windows may be used: a small fragment needs only which keywords.
        let mut hits = large.then(|| Hits::new(self.pattern_rules.len(), layer.text.len()));
        self.keywords.each_present(&layer.text, |pattern, end| {
            for &i in &self.pattern_rules[pattern] {
                selected[i] = true;
            }
            if let Some(hits) = &mut hits {
                hits.push(pattern, end);
            }
        });
        for (i, rule) in self.rules.rules.iter().enumerate() {
            if !selected[i] {
                continue;
            }
            let windows = match rule.window() {
                Some(max_len) => hits
                    .as_ref()
                    .and_then(|hits| hits.spans(&self.rule_patterns[i]))
                    .map(|spans| windows::windows(&spans, max_len, layer.text.len())),
                _ => None,
            };
            let scope = match &windows {
                Some(w) => Scope::Windows(w),
                None => Scope::Whole,
            };
            if rule.required.is_empty() {
                self.detect_rule(frag, layer, depth, rule, scope, false, out);
            } else {
                self.detect_composite(frag, layer, depth, rule, scope, out);
            }
        }
    }

    /// gitleaks' composite rules: the rule's findings are kept only where each required rule
    /// also matches in this fragment (its `skipReport` notwithstanding, and without its own
    /// keyword prefilter), within the required distance.
    fn detect_composite(
        &self,
        frag: &Fragment<'_>,
        layer: &Layer<'_>,
        depth: usize,
        rule: &Rule,
        scope: Scope<'_>,
        out: &mut Vec<Finding>,
    ) {
        let mut primary = Vec::new();
        self.detect_rule(frag, layer, depth, rule, scope, false, &mut primary);
        if primary.is_empty() {
            return;
        }
        let found: Vec<Vec<Finding>> = rule
            .required
            .iter()
            .map(|req| {
                let mut found = Vec::new();
                let required = &self.rules.rules[req.rule];
                self.detect_rule(frag, layer, depth, required, Scope::Whole, true, &mut found);
                found
            })
            .collect();
        out.extend(primary.into_iter().filter(|p| {
            rule.required
                .iter()
                .zip(&found)
                .all(|(req, found)| found.iter().any(|f| near(p, f, req)))
        }));
    }

    /// Every finding of `rule` in `layer` (or in the windows of `scope`). `include_skipped`:
    /// also a `skipReport` rule's (as a composite rule's required part).
    #[allow(clippy::too_many_arguments)]
    fn detect_rule(
        &self,
        frag: &Fragment<'_>,
        layer: &Layer<'_>,
        depth: usize,
        rule: &Rule,
        scope: Scope<'_>,
        include_skipped: bool,
        out: &mut Vec<Finding>,
    ) {
        let skip_report = rule.skip_report && !include_skipped;
        if fragment_allowed(frag, &rule.allowlists) {
            return;
        }
        if let Some(path_re) = &rule.path {
            if !path_re.is_match(frag.path.as_bytes()) {
                return;
            }
            if rule.regex.is_none() {
                if depth == 0 && !skip_report {
                    out.push(path_finding(frag, rule));
                }
                return;
            }
        }
        let Some(lazy) = &rule.regex else {
            return;
        };
        let regex = match lazy.get() {
            Ok(regex) => regex,
            Err(problem) => {
                // Syntax was checked at load; only the size limit can fail here. Fail closed:
                // report it as a finding so a push cannot pass unscanned.
                let mut f = path_finding(frag, rule);
                f.description = format!("rule could not be compiled: {problem}");
                f.matched = String::new();
                out.push(f);
                return;
            }
        };
        let text = &layer.text;
        let found: Vec<(usize, usize)> = match scope {
            Scope::Whole => regex
                .find_iter(text)
                .map(|m| (m.start(), m.end()))
                .collect(),
            Scope::Windows(windows) => windows
                .iter()
                .flat_map(|w| windows::matches_in(regex, text, w))
                .collect(),
        };
        for (mut start, mut end) in found {
            while start < end && text[start] == b'\n' {
                start += 1;
            }
            while end > start && text[end - 1] == b'\n' {
                end -= 1;
            }
            let mut tags = rule.tags.clone();
            let (orig_start, orig_end) = match depth {
                0 => (start, end),
                _ => {
                    let pieces = layer.overlapping(start, end, depth);
                    let Some(first) = pieces.first() else {
                        continue;
                    };
                    for kind in &first.kinds {
                        tags.push(format!("decoded:{kind}"));
                    }
                    tags.push(format!("decode-depth:{depth}"));
                    layer.to_original(start, end)
                }
            };
            let matched = &text[start..end];
            let line = line_around(frag.text, orig_start, orig_end);
            if contains(line, ALLOW_SIGNATURE.as_bytes()) {
                continue;
            }
            // Without capture groups the secret is the match: skip re-running the regex.
            let secret = match regex.captures_len() {
                1 => matched,
                _ => secret_of(regex, matched, rule.secret_group),
            };
            let entropy = shannon_entropy(secret);
            if rule.entropy > 0.0 && entropy <= rule.entropy {
                continue;
            }
            let candidate = Candidate {
                secret,
                matched,
                line,
            };
            if finding_allowed(frag, &candidate, &self.rules.allowlists)
                || finding_allowed(frag, &candidate, &rule.allowlists)
                || skip_report
            {
                continue;
            }
            let (line_no, col) = position(frag.text, orig_start);
            let (end_line_no, end_col) =
                position(frag.text, orig_end.saturating_sub(1).max(orig_start));
            out.push(Finding {
                rule_id: rule.id.clone(),
                description: rule.description.clone(),
                file: frag.path.to_owned(),
                start_line: frag.start_line + line_no,
                end_line: frag.start_line + end_line_no,
                start_column: col,
                end_column: end_col,
                commit: frag.commit.to_owned(),
                author: String::new(),
                email: String::new(),
                date: String::new(),
                message: String::new(),
                entropy: entropy as f32,
                tags,
                secret: String::from_utf8_lossy(secret).into_owned(),
                matched: String::from_utf8_lossy(matched).into_owned(),
                line: String::from_utf8_lossy(line).into_owned(),
                encoded: match depth {
                    0 => String::new(),
                    _ => String::from_utf8_lossy(&frag.text[orig_start..orig_end]).into_owned(),
                },
                neighbours: Vec::new(),
            });
        }
    }
}

/// Where a rule's regex runs in a layer.
#[derive(Debug, Clone, Copy)]
enum Scope<'w> {
    Whole,
    /// Only in these windows around its keywords.
    Windows(&'w [Window]),
}

/// Whether `required` is near enough to `primary` for `req` (gitleaks' `withinProximity`):
/// start lines at most `within_lines` apart, and for `within_columns` the same line with
/// start columns at most that far apart; neither set: anywhere in the fragment.
fn near(primary: &Finding, required: &Finding, req: &crate::scanner::rules::Required) -> bool {
    if let Some(lines) = req.within_lines
        && primary.start_line.abs_diff(required.start_line) > lines
    {
        return false;
    }
    if let Some(columns) = req.within_columns
        && (primary.start_line != required.start_line
            || primary.start_column.abs_diff(required.start_column) > columns)
    {
        return false;
    }
    true
}

/// The keyword prefilter: which keywords occur in a text, case-insensitively (gitleaks
/// lowercases the fragment and looks for each keyword in it).
///
/// The automaton is walked by hand instead of through `find_overlapping_iter`: only *which*
/// keywords occur matters, not where or how often, and short keywords (`sk`, `pat`, `key`)
/// occur in most hunks many times over; the iterator's per-match bookkeeping was a tenth of
/// a history scan. The contiguous NFA first, which is cheap to build; a DFA (one table
/// lookup per byte, but 12 M instructions to build for the built-in keywords, a tenth of a
/// one-commit push) once the scanner has walked [`DFA_AFTER`] bytes, if it can be built.
/// The NFA also serves a keyword set too large for a DFA, so it still filters.
#[derive(Debug)]
enum Keywords {
    None,
    /// The automaton could not be built: every one of this many keywords counts as present.
    All(usize),
    Automata(Box<Automata>),
}

#[derive(Debug)]
struct Automata {
    nfa: contiguous::NFA,
    /// Built on first need; `None`: the keyword set is too large for one.
    dfa: OnceLock<Option<dfa::DFA>>,
    patterns: Vec<String>,
    /// Bytes walked so far, up to [`DFA_AFTER`].
    walked: AtomicUsize,
}

/// Bytes walked with the NFA before the DFA is built: more than a typical push, less than a
/// fraction of a second of a history scan.
const DFA_AFTER: usize = 4 << 20;

impl Keywords {
    /// Whether [`Keywords::each_present`] reports where keywords occur.
    fn positions(&self) -> bool {
        !matches!(self, Keywords::All(_))
    }

    fn new(patterns: &[String]) -> Keywords {
        if patterns.is_empty() {
            return Keywords::None;
        }
        match contiguous::NFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(patterns)
        {
            Ok(nfa) => Keywords::Automata(Box::new(Automata {
                nfa,
                dfa: OnceLock::new(),
                patterns: patterns.to_vec(),
                walked: AtomicUsize::new(0),
            })),
            Err(e) => {
                // Only an absurd number of keywords gets here. Fail closed: every keyword
                // counts as present, so every rule runs.
                tracing::warn!("keyword automaton: {e}; every rule runs on every fragment");
                Keywords::All(patterns.len())
            }
        }
    }

    /// Calls `found` with the index of every keyword that occurs in `text` and the end offset
    /// of the occurrence (for every occurrence). When the automaton could not be built, every
    /// keyword is reported once, at offset 0 (and [`Keywords::positions`] is false).
    fn each_present(&self, text: &[u8], mut found: impl FnMut(usize, usize)) {
        match self {
            Keywords::None => {}
            Keywords::All(n) => (0..*n).for_each(|p| found(p, 0)),
            Keywords::Automata(a) => {
                let Automata {
                    nfa,
                    dfa,
                    patterns,
                    walked,
                } = &**a;
                let before = walked.load(Ordering::Relaxed);
                if before < DFA_AFTER {
                    walked.store(before.saturating_add(text.len()), Ordering::Relaxed);
                    return walk(nfa, text, found);
                }
                let dfa = dfa.get_or_init(|| {
                    dfa::DFA::builder()
                        .ascii_case_insensitive(true)
                        .match_kind(MatchKind::Standard)
                        .prefilter(false)
                        .build(patterns)
                        .ok()
                });
                match dfa {
                    Some(dfa) => walk(dfa, text, found),
                    None => walk(nfa, text, found),
                }
            }
        }
    }
}

/// Feeds `text` through an unanchored automaton and reports the patterns of every match
/// state it enters.
fn walk<A: Automaton>(a: &A, text: &[u8], mut found: impl FnMut(usize, usize)) {
    let Ok(mut sid) = a.start_state(Anchored::No) else {
        return;
    };
    for (at, &b) in text.iter().enumerate() {
        sid = a.next_state(Anchored::No, sid, b);
        if a.is_special(sid) && a.is_match(sid) {
            for i in 0..a.match_len(sid) {
                found(a.match_pattern(sid, i).as_usize(), at + 1);
            }
        }
    }
}

fn depth_used(found: &[Finding]) -> bool {
    found.iter().any(Finding::is_decoded)
}

/// A finding from a generic rule is dropped when a specific rule found the same secret on
/// the same line: one leak, one report. Generic is gitleaks' test, a rule id containing
/// "generic" (its `generic-api-key` has no tag), or our own `generic` tag.
fn drop_generic_duplicates(found: &mut Vec<Finding>) {
    let is_generic = |f: &Finding| {
        f.tags.iter().any(|t| t == GENERIC_TAG)
            || f.rule_id.to_ascii_lowercase().contains(GENERIC_TAG)
    };
    if found.len() < 2 || !found.iter().any(is_generic) {
        return;
    }
    let specific: Vec<(u32, String)> = found
        .iter()
        .filter(|f| !is_generic(f))
        .map(|f| (f.start_line, f.secret.clone()))
        .collect();
    found.retain(|f| {
        !is_generic(f)
            || !specific.iter().any(|(line, s)| {
                *line == f.start_line && (s.contains(&f.secret) || f.secret.contains(s.as_str()))
            })
    });
}

/// What allowlists look at for one match.
struct Candidate<'a> {
    secret: &'a [u8],
    matched: &'a [u8],
    line: &'a [u8],
}

/// gitleaks' secret selection: `secretGroup`, else the first non-empty group, else the match.
/// Like gitleaks, the regex is re-run on the matched text alone.
fn secret_of<'t>(regex: &regex::bytes::Regex, matched: &'t [u8], group: usize) -> &'t [u8] {
    let Some(caps) = regex.captures(matched) else {
        return matched;
    };
    if caps.len() < 2 {
        return matched;
    }
    if group > 0 {
        return caps.get(group).map_or(matched, |g| g.as_bytes());
    }
    (1..caps.len())
        .filter_map(|i| caps.get(i))
        .find(|g| !g.is_empty())
        .map_or(matched, |g| g.as_bytes())
}

/// Whether a commit/path allowlist skips the whole fragment (checks that need a match, such
/// as `regexes` under AND, wait for the match).
fn fragment_allowed(frag: &Fragment<'_>, allowlists: &[Allowlist]) -> bool {
    allowlists.iter().any(|a| {
        let commit = commit_allowed(a, frag.commit);
        let path = path_allowed(a, frag.path);
        match a.condition {
            Condition::Or => commit || path,
            Condition::And => {
                if !a.regexes.is_empty() || !a.stopwords.is_empty() {
                    return false;
                }
                let mut checks = Vec::new();
                if !a.commits.is_empty() {
                    checks.push(commit);
                }
                if !a.paths.is_empty() {
                    checks.push(path);
                }
                !checks.is_empty() && checks.iter().all(|&c| c)
            }
        }
    })
}

fn finding_allowed(frag: &Fragment<'_>, c: &Candidate<'_>, allowlists: &[Allowlist]) -> bool {
    allowlists.iter().any(|a| {
        let target = match a.regex_target {
            RegexTarget::Secret => c.secret,
            RegexTarget::Match => c.matched,
            RegexTarget::Line => c.line,
        };
        let regex = a.regexes.iter().any(|re| re.is_match(target));
        let stopword = contains_stopword(a, c.secret);
        let commit = commit_allowed(a, frag.commit);
        let path = path_allowed(a, frag.path);
        match a.condition {
            Condition::Or => commit || path || regex || stopword,
            Condition::And => {
                let checks = [
                    (!a.commits.is_empty(), commit),
                    (!a.paths.is_empty(), path),
                    (!a.regexes.is_empty(), regex),
                    (!a.stopwords.is_empty(), stopword),
                ];
                checks.iter().any(|(present, _)| *present)
                    && checks.iter().all(|(present, ok)| !present || *ok)
            }
        }
    })
}

fn commit_allowed(a: &Allowlist, commit: &str) -> bool {
    !commit.is_empty() && a.commits.contains(&commit.to_ascii_lowercase())
}

fn path_allowed(a: &Allowlist, path: &str) -> bool {
    !path.is_empty() && a.paths.iter().any(|re| re.is_match(path.as_bytes()))
}

fn contains_stopword(a: &Allowlist, secret: &[u8]) -> bool {
    if a.stopwords.is_empty() {
        return false;
    }
    let lower = secret.to_ascii_lowercase();
    a.stopwords.iter().any(|w| contains(&lower, w.as_bytes()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// The full lines of `text` that `[start, end)` touches, without the final newline.
fn line_around(text: &[u8], start: usize, end: usize) -> &[u8] {
    let begin = text[..start.min(text.len())]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let stop = text[end.min(text.len())..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(text.len(), |p| end + p);
    &text[begin..stop.max(begin)]
}

/// 0-based line index and 1-based column of byte `pos`.
fn position(text: &[u8], pos: usize) -> (u32, u32) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = memchr::memchr_iter(b'\n', before).count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    (as_u32(line), as_u32(pos - line_start + 1))
}

fn path_finding(frag: &Fragment<'_>, rule: &Rule) -> Finding {
    Finding {
        rule_id: rule.id.clone(),
        description: rule.description.clone(),
        file: frag.path.to_owned(),
        start_line: 0,
        end_line: 0,
        start_column: 0,
        end_column: 0,
        commit: frag.commit.to_owned(),
        author: String::new(),
        email: String::new(),
        date: String::new(),
        message: String::new(),
        entropy: 0.0,
        tags: rule.tags.clone(),
        secret: String::new(),
        matched: format!("file detected: {}", frag.path),
        line: String::new(),
        encoded: String::new(),
        neighbours: Vec::new(),
    }
}

/// Shannon entropy in bits per byte.
pub(crate) fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keyword prefilter starts on its NFA and moves to a DFA after [`DFA_AFTER`] bytes:
    /// both must report the same keywords at the same places, so a finding never depends on
    /// how much the scanner read before.
    #[test]
    fn the_keyword_dfa_reports_what_the_nfa_reports() {
        let rules = crate::scanner::Scanner::builtin().unwrap();
        let patterns: Vec<String> = rules.engine.keywords_patterns().to_vec();
        let Keywords::Automata(automata) = Keywords::new(&patterns) else {
            panic!("no automaton for the built-in keywords");
        };
        let dfa = dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(&patterns)
            .unwrap();
        let mut text = crate::scanner::DEFAULT_RULES.as_bytes().to_vec();
        text.extend_from_slice(b"AKIA ghp_ GHP_ xoxb- sk-ant- SK_LIVE_ password= Bearer ");
        let (mut by_nfa, mut by_dfa) = (Vec::new(), Vec::new());
        walk(&automata.nfa, &text, |p, end| by_nfa.push((p, end)));
        walk(&dfa, &text, |p, end| by_dfa.push((p, end)));
        by_nfa.sort_unstable();
        by_dfa.sort_unstable();
        assert!(by_nfa.len() > 1000, "{} keyword hits", by_nfa.len());
        assert_eq!(by_nfa, by_dfa);

        // Past the threshold the engine switches, and still finds the same keywords.
        let keywords = Keywords::new(&patterns);
        let mut first = Vec::new();
        keywords.each_present(&text, |p, end| first.push((p, end)));
        let filler = vec![b'x'; DFA_AFTER];
        keywords.each_present(&filler, |_, _| {});
        let mut later = Vec::new();
        keywords.each_present(&text, |p, end| later.push((p, end)));
        let Keywords::Automata(automata) = &keywords else {
            unreachable!()
        };
        assert!(
            automata.dfa.get().is_some_and(Option::is_some),
            "the DFA was not built"
        );
        first.sort_unstable();
        later.sort_unstable();
        assert_eq!(first, later);
    }
}
