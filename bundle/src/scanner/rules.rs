//! gitleaks TOML -> compiled [`Rules`]. Pure: the caller supplies the text of every file
//! (`[extend] path` goes through a resolver closure), so this module does no IO.
//!
//! The schema is gitleaks' (v8): `title`, `[extend] {useDefault | path, disabledRules}`,
//! `[[rules]]`, and `[[allowlists]]` or the older single `[allowlist]` (both at once is an
//! error). A global allowlist with `targetRules` is attached to those rules instead.

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

/// Compiled-size limit for one regex. Generic rules with long alternations need more than the
/// regex crate's 10 MiB default even in ASCII mode.
const REGEX_SIZE_LIMIT: usize = 64 << 20;

/// How deep `[extend] path` chains may go (gitleaks allows two levels).
const MAX_EXTEND_DEPTH: usize = 2;

/// Why a rule file was refused. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{origin}: not valid gitleaks TOML: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: rule `{rule}`: field `{field}`: {problem}")]
    Rule {
        origin: String,
        rule: String,
        field: &'static str,
        problem: String,
    },
    #[error("{origin}: {which}: field `{field}`: {problem}")]
    Allowlist {
        origin: String,
        which: String,
        field: &'static str,
        problem: String,
    },
    #[error("{origin}: {problem}")]
    Config { origin: String, problem: String },
}

/// Which text an allowlist's `regexes` are tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegexTarget {
    Secret,
    Match,
    Line,
}

/// `condition`: whether any check (OR, the default) or every present check (AND) allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    Or,
    And,
}

/// A compiled allowlist (global or per rule).
#[derive(Debug, Clone)]
pub(crate) struct Allowlist {
    pub(crate) condition: Condition,
    /// Lower-cased commit ids.
    pub(crate) commits: HashSet<String>,
    /// Checked at load, compiled when first asked (most never are: a rule's allowlist
    /// only when the rule has a candidate).
    pub(crate) paths: Vec<LazyRegex>,
    pub(crate) regexes: Vec<LazyRegex>,
    pub(crate) regex_target: RegexTarget,
    /// Lower-cased stopwords, matched as substrings of the lower-cased secret.
    pub(crate) stopwords: Vec<String>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) description: String,
    /// `None` for a path-only rule (the finding is the file itself).
    pub(crate) regex: Option<LazyRegex>,
    /// 0 means "first non-empty group, else the whole match".
    pub(crate) secret_group: usize,
    /// Findings whose secret has Shannon entropy ≤ this are dropped (0 = no check).
    pub(crate) entropy: f64,
    /// Lower-cased; empty means the rule always runs.
    pub(crate) keywords: Vec<String>,
    pub(crate) path: Option<Regex>,
    pub(crate) tags: Vec<String>,
    pub(crate) allowlists: Vec<Allowlist>,
    /// gitleaks' `skipReport`: the rule is loaded but never reported.
    pub(crate) skip_report: bool,
    /// gitleaks' composite rules (`[[rules.required]]`): a finding of this rule is reported
    /// only when every rule listed here also matches in the same fragment, near it.
    pub(crate) required: Vec<Required>,
    /// A rule every match of which holds one of its keywords (the built-in rules, as written
    /// there): on a large fragment its regex runs only around its keywords
    /// (`scanner::windows`), as far as [`Rule::window`] says.
    pub(crate) keyword_anchored: bool,
}

impl Rule {
    /// For a keyword-anchored rule, the longest match its regex can make (worked out on first
    /// use). `None`: the regex runs over the whole fragment.
    pub(crate) fn window(&self) -> Option<usize> {
        match &self.regex {
            Some(re) if self.keyword_anchored => re.max_len(),
            _ => None,
        }
    }
}

/// One `[[rules.required]]` entry, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Required {
    /// Index of the required rule in [`Rules::rules`].
    pub(crate) rule: usize,
    /// At most this many lines apart (start lines); `None`: anywhere in the fragment.
    pub(crate) within_lines: Option<u32>,
    /// On the same line and at most this many columns apart (start columns).
    pub(crate) within_columns: Option<u32>,
}

/// A whole compiled rule set: rules plus the global allowlists.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) title: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) allowlists: Vec<Allowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    title: Option<String>,
    /// Documentation only (gitleaks accepts it).
    description: Option<String>,
    min_version: Option<String>,
    extend: Option<RawExtend>,
    #[serde(default)]
    rules: Vec<RawRule>,
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawExtend {
    #[serde(default)]
    use_default: bool,
    path: Option<String>,
    url: Option<String>,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    id: Option<String>,
    description: Option<String>,
    regex: Option<String>,
    secret_group: Option<i64>,
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    path: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
    #[serde(default)]
    skip_report: bool,
    #[serde(default)]
    required: Vec<RawRequired>,
    /// Read from the built-in rule set and its regex not replaced: every match holds one of
    /// the rule's keywords (`tests::rule_examples` checks it on every example).
    #[serde(skip)]
    keyword_anchored: bool,
    /// Read from the built-in rule set with its regex and secretGroup as written there: the
    /// load checks those passed in the tests (`builtin_rules_pass_the_load_checks`), so a load
    /// does not parse them again (a tenth of a one-commit push's time).
    #[serde(skip)]
    trusted: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRequired {
    id: Option<String>,
    within_lines: Option<i64>,
    within_columns: Option<i64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAllowlist {
    description: Option<String>,
    condition: Option<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regexes: Vec<String>,
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
    /// Read from the built-in rule set (see [`RawRule::trusted`]).
    #[serde(skip)]
    trusted: bool,
}

/// Where `[extend] path` files come from: given the path as written, returns (origin, text).
pub(crate) type Resolver<'a> = dyn FnMut(&str) -> Result<(String, String), RuleError> + 'a;

/// Parses and compiles a gitleaks TOML document. `origin` names it in errors; `default_text`
/// is the built-in rule set `[extend] useDefault` refers to.
pub(crate) fn compile(
    origin: &str,
    text: &str,
    default_text: &str,
    resolve: &mut Resolver<'_>,
) -> Result<Rules, RuleError> {
    compile_with(origin, text, default_text, resolve, true)
}

/// [`compile`], optionally checking the built-in rules as a user's are checked (the tests).
fn compile_with(
    origin: &str,
    text: &str,
    default_text: &str,
    resolve: &mut Resolver<'_>,
    trust_builtin: bool,
) -> Result<Rules, RuleError> {
    let (title, mut rules, mut globals) = load_raw(origin, text, default_text, resolve, 0)?;
    if !trust_builtin {
        for rule in &mut rules {
            rule.trusted = false;
            rule.allowlists.iter_mut().for_each(|a| a.trusted = false);
        }
        globals.iter_mut().for_each(|a| a.trusted = false);
    }
    finish(origin, title, rules, globals)
}

type RawSet = (String, Vec<RawRule>, Vec<RawAllowlist>);

fn load_raw(
    origin: &str,
    text: &str,
    default_text: &str,
    resolve: &mut Resolver<'_>,
    depth: usize,
) -> Result<RawSet, RuleError> {
    let raw = parse_config(origin, text)?;
    let _ = (raw.min_version, raw.description);
    if raw.allowlist.is_some() && !raw.allowlists.is_empty() {
        return Err(config_err(
            origin,
            "both [allowlist] and [[allowlists]] are set; use only [[allowlists]]",
        ));
    }
    let mut globals: Vec<RawAllowlist> = raw.allowlist.into_iter().collect();
    globals.extend(raw.allowlists);
    let builtin = std::ptr::eq(text, default_text) || text == default_text;
    globals.iter_mut().for_each(|a| a.trusted = builtin);
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, mut rule) in raw.rules.into_iter().enumerate() {
        rule.keyword_anchored = builtin;
        rule.trusted = builtin;
        let rule_allowlists = rule.allowlist.iter_mut().chain(rule.allowlists.iter_mut());
        rule_allowlists.for_each(|a| a.trusted = builtin);
        let Some(id) = rule.id.clone().filter(|id| !id.trim().is_empty()) else {
            return Err(RuleError::Rule {
                origin: origin.to_owned(),
                rule: format!("#{}", i + 1),
                field: "id",
                problem: "missing or empty".to_owned(),
            });
        };
        if rules
            .iter()
            .any(|r: &RawRule| r.id.as_deref() == Some(id.as_str()))
        {
            return Err(rule_err(origin, &id, "id", "defined twice in this file"));
        }
        rules.push(rule);
    }
    let title = raw.title.unwrap_or_default();
    let Some(extend) = raw.extend else {
        return Ok((title, rules, globals));
    };
    if let Some(url) = &extend.url {
        // gitleaks does not fetch it either; the rules it names are simply not there.
        tracing::warn!(
            origin,
            url = %url,
            "[extend] url is ignored (the scanner never fetches): the rules there are not used; \
             download the file and name it in [extend] path"
        );
    }
    if extend.use_default && extend.path.is_some() {
        return Err(config_err(
            origin,
            "[extend] sets both useDefault and path; choose one",
        ));
    }
    if depth >= MAX_EXTEND_DEPTH && (extend.use_default || extend.path.is_some()) {
        return Err(config_err(origin, "[extend] chain is deeper than 2 levels"));
    }
    let base = match (extend.use_default, extend.path) {
        (true, _) => Some(load_raw(
            "built-in rules",
            default_text,
            default_text,
            resolve,
            depth + 1,
        )?),
        (false, Some(path)) => {
            let (base_origin, base_text) = resolve(&path)?;
            Some(load_raw(
                &base_origin,
                &base_text,
                default_text,
                resolve,
                depth + 1,
            )?)
        }
        (false, None) => None,
    };
    let Some((_, base_rules, base_globals)) = base else {
        return Ok((title, rules, globals));
    };
    let disabled: HashSet<&str> = extend.disabled_rules.iter().map(String::as_str).collect();
    let mut merged: Vec<RawRule> = Vec::with_capacity(base_rules.len() + rules.len());
    for base in base_rules {
        let id = base.id.clone().unwrap_or_default();
        if disabled.contains(id.as_str()) {
            continue;
        }
        match rules
            .iter()
            .position(|r| r.id.as_deref() == Some(id.as_str()))
        {
            Some(pos) => merged.push(merge_rule(base, rules.remove(pos))),
            None => merged.push(base),
        }
    }
    merged.extend(rules);
    let mut all_globals = base_globals;
    all_globals.extend(globals);
    Ok((title, merged, all_globals))
}

/// gitleaks' extend merge: the extending rule's scalar fields win when set; keywords, tags and
/// allowlists are appended.
fn merge_rule(base: RawRule, over: RawRule) -> RawRule {
    let mut out = base;
    // More keywords keep every match holding one; another regex may not.
    out.keyword_anchored &= over.regex.is_none();
    out.trusted &= over.regex.is_none() && over.secret_group.is_none();
    out.description = over.description.or(out.description);
    out.regex = over.regex.or(out.regex);
    out.secret_group = over.secret_group.or(out.secret_group);
    out.entropy = over.entropy.or(out.entropy);
    out.path = over.path.or(out.path);
    out.keywords.extend(over.keywords);
    out.tags.extend(over.tags);
    out.allowlists.extend(over.allowlist);
    out.allowlists.extend(over.allowlists);
    out.skip_report = over.skip_report;
    out.required.extend(over.required);
    out
}

/// Every key gitleaks knows, in the spelling the raw types read. gitleaks reads its config
/// through viper, which ignores the case of keys (`stopWords`, `StopWords`, `stopwords` are
/// one key), so a file in any spelling is read as these.
const KEYS: &[&str] = &[
    "title",
    "description",
    "minVersion",
    "extend",
    "rules",
    "allowlist",
    "allowlists",
    "useDefault",
    "path",
    "url",
    "disabledRules",
    "id",
    "regex",
    "secretGroup",
    "entropy",
    "keywords",
    "tags",
    "skipReport",
    "required",
    "withinLines",
    "withinColumns",
    "condition",
    "commits",
    "paths",
    "regexes",
    "regexTarget",
    "stopwords",
    "targetRules",
];

/// Reads a gitleaks TOML document. A document whose keys are spelled in another case is read
/// again with the keys in [`KEYS`]' spelling; the first error (with its line) is the one shown
/// when neither reading works.
fn parse_config(origin: &str, text: &str) -> Result<RawConfig, RuleError> {
    let first = match toml::from_str::<RawConfig>(text) {
        Ok(raw) => return Ok(raw),
        Err(e) => e,
    };
    let fail = || RuleError::Toml {
        origin: origin.to_owned(),
        message: first.to_string().trim_end().to_owned(),
    };
    let Ok(mut value) = toml::from_str::<toml::Value>(text) else {
        return Err(fail());
    };
    if !canonical_keys(&mut value) {
        return Err(fail());
    }
    value.try_into::<RawConfig>().map_err(|_| fail())
}

/// Renames every table key that is a known key in another case; whether any was renamed.
fn canonical_keys(value: &mut toml::Value) -> bool {
    let mut renamed = false;
    match value {
        toml::Value::Table(table) => {
            let keys: Vec<String> = table.keys().cloned().collect();
            for key in keys {
                let canonical = KEYS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(&key) && **k != key);
                if let Some(canonical) = canonical
                    && !table.contains_key(*canonical)
                    && let Some(v) = table.remove(&key)
                {
                    table.insert((*canonical).to_owned(), v);
                    renamed = true;
                }
            }
            for (_, v) in table.iter_mut() {
                renamed |= canonical_keys(v);
            }
        }
        toml::Value::Array(items) => {
            for v in items {
                renamed |= canonical_keys(v);
            }
        }
        _ => {}
    }
    renamed
}

fn finish(
    origin: &str,
    title: String,
    raw_rules: Vec<RawRule>,
    raw_globals: Vec<RawAllowlist>,
) -> Result<Rules, RuleError> {
    let mut rules = Vec::with_capacity(raw_rules.len());
    let mut requirements = Vec::with_capacity(raw_rules.len());
    for mut raw in raw_rules {
        requirements.push(std::mem::take(&mut raw.required));
        rules.push(compile_rule(origin, raw)?);
    }
    for (index, raw) in requirements.into_iter().enumerate() {
        let required = resolve_required(origin, &rules, index, raw)?;
        rules[index].required = required;
    }
    let mut allowlists = Vec::new();
    for (i, raw) in raw_globals.into_iter().enumerate() {
        let which = format!("global allowlist #{}", i + 1);
        let targets = raw.target_rules.clone();
        let compiled = compile_allowlist(origin, &which, raw)?;
        if targets.is_empty() {
            allowlists.push(compiled);
            continue;
        }
        for target in &targets {
            let Some(rule) = rules.iter_mut().find(|r| &r.id == target) else {
                return Err(RuleError::Allowlist {
                    origin: origin.to_owned(),
                    which,
                    field: "targetRules",
                    problem: format!("no rule has id `{target}`"),
                });
            };
            rule.allowlists.push(compiled.clone());
        }
    }
    Ok(Rules {
        title,
        rules,
        allowlists,
    })
}

fn compile_rule(origin: &str, raw: RawRule) -> Result<Rule, RuleError> {
    let id = raw.id.unwrap_or_default();
    let (regex, groups) = match raw.regex.as_deref() {
        Some(src) if !src.is_empty() && raw.trusted => (Some(LazyRegex::trusted(src)), None),
        Some(src) if !src.is_empty() => {
            let (re, groups) = LazyRegex::checked(src)
                .map_err(|problem| rule_err(origin, &id, "regex", &problem))?;
            (Some(re), Some(groups))
        }
        _ => (None, None),
    };
    let path = match raw.path.as_deref() {
        Some(src) if !src.is_empty() => {
            Some(build_regex(src).map_err(|problem| rule_err(origin, &id, "path", &problem))?)
        }
        _ => None,
    };
    if regex.is_none() && path.is_none() {
        return Err(rule_err(
            origin,
            &id,
            "regex",
            "a rule needs `regex`, `path`, or both",
        ));
    }
    let secret_group = match raw.secret_group {
        None => 0,
        Some(g) if g < 0 => return Err(rule_err(origin, &id, "secretGroup", "must be ≥ 0")),
        Some(g) => usize::try_from(g).unwrap_or(usize::MAX),
    };
    if let Some(groups) = groups
        && secret_group > groups
    {
        let problem = format!("is {secret_group} but the regex has only {groups} group(s)");
        return Err(rule_err(origin, &id, "secretGroup", &problem));
    }
    let entropy = raw.entropy.unwrap_or(0.0);
    if !(0.0..=8.0).contains(&entropy) {
        return Err(rule_err(origin, &id, "entropy", "must be between 0 and 8"));
    }
    if raw.keywords.iter().any(|k| k.is_empty()) {
        return Err(rule_err(
            origin,
            &id,
            "keywords",
            "contains an empty keyword",
        ));
    }
    let keyword_anchored = raw.keyword_anchored && !raw.keywords.is_empty();
    let mut allowlists = Vec::new();
    for (i, al) in raw.allowlist.into_iter().chain(raw.allowlists).enumerate() {
        if !al.target_rules.is_empty() {
            return Err(rule_err(
                origin,
                &id,
                "allowlists.targetRules",
                "only global allowlists take targetRules",
            ));
        }
        let which = format!("rule `{id}` allowlist #{}", i + 1);
        allowlists.push(compile_allowlist(origin, &which, al)?);
    }
    Ok(Rule {
        description: raw.description.unwrap_or_else(|| id.clone()),
        keywords: raw.keywords.iter().map(|k| k.to_lowercase()).collect(),
        id,
        regex,
        secret_group,
        entropy,
        path,
        tags: raw.tags,
        allowlists,
        skip_report: raw.skip_report,
        required: Vec::new(),
        keyword_anchored,
    })
}

/// Resolves rule `index`'s `[[rules.required]]` entries against the compiled rules. A rule
/// that names no existing rule is refused: gitleaks would then never report the composite
/// rule at all, silently.
fn resolve_required(
    origin: &str,
    rules: &[Rule],
    index: usize,
    raw: Vec<RawRequired>,
) -> Result<Vec<Required>, RuleError> {
    let id = rules[index].id.clone();
    let distance = |field: &'static str, v: Option<i64>| match v {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| rule_err(origin, &id, field, "must be a whole number ≥ 0")),
    };
    raw.into_iter()
        .map(|r| {
            let wanted = r.id.unwrap_or_default();
            let Some(rule) = rules.iter().position(|x| x.id == wanted) else {
                return Err(rule_err(
                    origin,
                    &id,
                    "required.id",
                    &format!("no rule has id `{wanted}`"),
                ));
            };
            if rule == index {
                return Err(rule_err(
                    origin,
                    &id,
                    "required.id",
                    "a rule cannot require itself",
                ));
            }
            Ok(Required {
                rule,
                within_lines: distance("required.withinLines", r.within_lines)?,
                within_columns: distance("required.withinColumns", r.within_columns)?,
            })
        })
        .collect()
}

fn compile_allowlist(origin: &str, which: &str, raw: RawAllowlist) -> Result<Allowlist, RuleError> {
    let err = |field: &'static str, problem: String| RuleError::Allowlist {
        origin: origin.to_owned(),
        which: which.to_owned(),
        field,
        problem,
    };
    let _ = raw.description;
    let condition = match raw
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("OR") | Some("") => Condition::Or,
        Some("AND") => Condition::And,
        Some(other) => return Err(err("condition", format!("`{other}` is not OR or AND"))),
    };
    let regex_target = match raw.regex_target.as_deref() {
        None | Some("") | Some("secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(other) => {
            return Err(err(
                "regexTarget",
                format!("`{other}` is not secret, match or line"),
            ));
        }
    };
    let compile_all = |field: &'static str, srcs: &[String]| -> Result<Vec<LazyRegex>, RuleError> {
        srcs.iter()
            .map(|s| match raw.trusted {
                true => Ok(LazyRegex::trusted(s)),
                false => LazyRegex::checked(s)
                    .map(|(re, _)| re)
                    .map_err(|p| err(field, p)),
            })
            .collect()
    };
    let paths = compile_all("paths", &raw.paths)?;
    let regexes = compile_all("regexes", &raw.regexes)?;
    if raw.commits.is_empty() && paths.is_empty() && regexes.is_empty() && raw.stopwords.is_empty()
    {
        return Err(err(
            "commits",
            "allowlist is empty: set commits, paths, regexes or stopwords".to_owned(),
        ));
    }
    Ok(Allowlist {
        condition,
        commits: raw.commits.iter().map(|c| c.to_ascii_lowercase()).collect(),
        paths,
        regexes,
        regex_target,
        stopwords: raw.stopwords.iter().map(|s| s.to_lowercase()).collect(),
    })
}

/// A rule's or allowlist's regex, compiled on first use. Building all of a rule set's
/// automata takes tens of milliseconds, most of a one-commit push scan; a push usually wakes
/// only the few rules whose keywords it contains. A user's regex is parsed when the rules load
/// ([`LazyRegex::checked`]), so its syntax errors surface then; a built-in one is not
/// ([`LazyRegex::trusted`]: the tests check them all).
#[derive(Debug, Clone)]
pub(crate) struct LazyRegex {
    /// The source with Go-isms fixed.
    source: String,
    /// The longest match it can make, in bytes (`None`: unbounded).
    max_len: OnceLock<Option<usize>>,
    compiled: OnceLock<Result<Regex, String>>,
}

impl LazyRegex {
    /// Parses (but does not compile) `src`, so syntax errors surface at load time. Returns
    /// the regex and its number of explicit capture groups.
    pub(crate) fn checked(src: &str) -> Result<(LazyRegex, usize), String> {
        let source = escape_bare_braces(src);
        let hir = parse_hir(&source)?;
        let groups = hir.properties().explicit_captures_len();
        let lazy = LazyRegex {
            source,
            max_len: OnceLock::from(hir.properties().maximum_len()),
            compiled: OnceLock::new(),
        };
        Ok((lazy, groups))
    }

    /// A regex known to pass [`LazyRegex::checked`] (a built-in rule's), not parsed now.
    pub(crate) fn trusted(src: &str) -> LazyRegex {
        LazyRegex {
            source: escape_bare_braces(src),
            max_len: OnceLock::new(),
            compiled: OnceLock::new(),
        }
    }

    /// The longest match it can make, in bytes (`None`: unbounded, or unparsable, which
    /// [`LazyRegex::get`] then reports).
    pub(crate) fn max_len(&self) -> Option<usize> {
        *self.max_len.get_or_init(|| {
            parse_hir(&self.source)
                .ok()
                .and_then(|hir| hir.properties().maximum_len())
        })
    }

    /// The compiled regex; for a checked one, an error only if it exceeds the size limit.
    pub(crate) fn get(&self) -> Result<&Regex, &str> {
        self.compiled
            .get_or_init(|| build_regex(&self.source))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whether it matches `haystack`. A regex that cannot compile (over the size limit)
    /// matches nothing: an allowlist that cannot compile allows nothing.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.get().is_ok_and(|re| re.is_match(haystack))
    }
}

/// Parses a (fixed) source as the regex builder will read it; the error on one line.
fn parse_hir(source: &str) -> Result<regex_syntax::hir::Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(source)
        .map_err(|e| {
            let text = e.to_string();
            let last = text.lines().last().unwrap_or("invalid").trim().to_owned();
            format!("invalid regex: {last}")
        })
}

/// Compiles a gitleaks (Go RE2) regex: ASCII classes, and a bare `{` taken literally.
pub(crate) fn build_regex(src: &str) -> Result<Regex, String> {
    let fixed = escape_bare_braces(src);
    RegexBuilder::new(&fixed)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let text = e.to_string();
            // The regex crate's message spans several lines with a caret diagram; keep the
            // gist on one line.
            let last = text.lines().last().unwrap_or("invalid").trim().to_owned();
            format!("invalid regex: {last}")
        })
}

/// Go's RE2 reads `{` that does not start a valid `{n}`, `{n,}` or `{n,m}` as a literal;
/// Rust's `regex` rejects it. Escape those, leaving classes and escapes untouched.
pub(crate) fn escape_bare_braces(src: &str) -> String {
    let bytes = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 4);
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' => {
                let end = (i + 2).min(bytes.len());
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'{' if !in_class && !is_repetition(&bytes[i..]) => {
                out.push_str("\\{");
                i += 1;
                continue;
            }
            b'}' if !in_class && !closes_repetition(&bytes[..i]) => {
                out.push_str("\\}");
                i += 1;
                continue;
            }
            _ => {}
        }
        let ch_len = src[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&src[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn is_repetition(rest: &[u8]) -> bool {
    // rest starts with '{'.
    let Some(close) = rest.iter().position(|&b| b == b'}') else {
        return false;
    };
    let inner = &rest[1..close];
    let mut parts = inner.splitn(2, |&b| b == b',');
    let first = parts.next().unwrap_or_default();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if first.is_empty() || !digits(first) {
        return false;
    }
    parts.next().is_none_or(digits)
}

fn closes_repetition(before: &[u8]) -> bool {
    match before.iter().rposition(|&b| b == b'{') {
        Some(open) => {
            (open == 0 || before[open - 1] != b'\\')
                && is_repetition(&[&before[open..], b"}"].concat())
        }
        None => false,
    }
}

fn rule_err(origin: &str, rule: &str, field: &'static str, problem: &str) -> RuleError {
    RuleError::Rule {
        origin: origin.to_owned(),
        rule: rule.to_owned(),
        field,
        problem: problem.to_owned(),
    }
}

fn config_err(origin: &str, problem: &str) -> RuleError {
    RuleError::Config {
        origin: origin.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A load trusts the built-in rules (it does not parse their regexes): that holds only
    /// while every one of them passes the checks a user's rule gets, with the same windows.
    #[test]
    fn builtin_rules_pass_the_load_checks() {
        let text = crate::scanner::DEFAULT_RULES;
        let mut no_files = |path: &str| -> Result<(String, String), RuleError> {
            panic!("the built-in rules name no file, yet {path} was asked for")
        };
        let checked = compile_with("built-in rules", text, text, &mut no_files, false).unwrap();
        let trusted = compile_with("built-in rules", text, text, &mut no_files, true).unwrap();
        assert_eq!(checked.rules.len(), trusted.rules.len());
        for (c, t) in checked.rules.iter().zip(&trusted.rules) {
            assert_eq!(c.id, t.id);
            assert_eq!(c.window(), t.window(), "{}", c.id);
            assert!(
                c.regex.as_ref().is_none_or(|re| re.get().is_ok()),
                "{}",
                c.id
            );
        }
        // A user's file is checked: a broken regex is refused at load, not at first use.
        let broken = "[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\n";
        let err = compile("user.toml", broken, text, &mut no_files).unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
    }
}
