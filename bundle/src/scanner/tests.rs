//! Config semantics: allowlists, extend, decoding, `gitleaks:allow`, ignore lists, errors.
//! Test tokens are assembled at run time so this file trips no secret scanner.

mod rule_examples;

use expect_test::{Expect, expect};

use super::*;

/// A deterministic high-entropy string of `n` characters from `charset`.
pub(super) fn fill(seed: u64, charset: &str, n: usize) -> String {
    let chars: Vec<char> = charset.chars().collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chars[(x % chars.len() as u64) as usize]
        })
        .collect()
}

pub(super) const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

fn gh_token(seed: u64) -> String {
    format!("{}{}", "ghp", "_") + &fill(seed, ALNUM, 36)
}

/// Runs `scanner` over `text` as `path` and renders findings one per line.
fn render(scanner: &Scanner, path: &str, text: &str) -> String {
    scanner
        .scan_text(path, text.as_bytes())
        .iter()
        .map(|f| {
            let mut s = format!("{} {}:{} {}", f.rule_id, f.file, f.start_line, f.secret());
            if !f.tags.is_empty() {
                s.push_str(&format!(" [{}]", f.tags.join(",")));
            }
            s + "\n"
        })
        .collect()
}

fn check(config: &str, path: &str, text: &str, expect: Expect) {
    let scanner = Scanner::from_toml("test.toml", config, None).unwrap();
    expect.assert_eq(&render(&scanner, path, text));
}

const TOKEN_RULE: &str = r#"
[[rules]]
id = "tok"
regex = '''tok_([a-z0-9]{8})'''
keywords = ["tok_"]
"#;

#[test]
fn builtin_rules_load_and_cover_sixty_formats() {
    let s = Scanner::builtin().unwrap();
    assert!(s.rule_count() >= 60, "{}", s.rule_count());
}

#[test]
fn secret_group_first_group_and_whole_match() {
    let cfg = r#"
[[rules]]
id = "grouped"
regex = '''(k1)=([a-z0-9]{8})'''
secretGroup = 2
[[rules]]
id = "first"
regex = '''k2=(?:(X+)|([a-z0-9]{8}))'''
[[rules]]
id = "whole"
regex = '''k3=[a-z0-9]{8}'''
"#;
    check(
        cfg,
        "a.txt",
        "k1=ab12cd34\nk2=ef56gh78\nk3=ij90kl12\n",
        expect![[r#"
            grouped a.txt:1 ab12cd34
            first a.txt:2 ef56gh78
            whole a.txt:3 k3=ij90kl12
        "#]],
    );
}

#[test]
fn keywords_gate_rules_and_entropy_filters_low_entropy_secrets() {
    let cfg = r#"
[[rules]]
id = "kw"
regex = '''[a-z]{4}=([a-z0-9]{8})'''
keywords = ["pass"]
entropy = 2.5
"#;
    check(
        cfg,
        "a",
        "user=ab12cd34\nPASS=aaaaaaaa\npass=q8w7e6r5\n",
        expect![[r#"
            kw a:1 ab12cd34
            kw a:3 q8w7e6r5
        "#]],
    );
    // Without the keyword anywhere in the fragment the rule does not run at all.
    check(cfg, "a", "user=ab12cd34\n", expect![""]);
}

#[test]
fn allowlist_regex_targets_secret_match_and_line() {
    let mk = |target: &str, re: &str| {
        format!(
            "{TOKEN_RULE}[[rules.allowlists]]\nregexTarget = \"{target}\"\nregexes = ['''{re}''']\n"
        )
    };
    let text = "a = tok_abcd1234 # fixture\nb = tok_efgh5678\n";
    check(
        &mk("secret", "^abcd"),
        "f",
        text,
        expect![[r#"
        tok f:2 efgh5678
    "#]],
    );
    // The match includes the `tok_` prefix; the secret does not.
    check(
        &mk("secret", "^tok_"),
        "f",
        text,
        expect![[r#"
        tok f:1 abcd1234
        tok f:2 efgh5678
    "#]],
    );
    check(
        &mk("match", "^tok_efgh"),
        "f",
        text,
        expect![[r#"
        tok f:1 abcd1234
    "#]],
    );
    check(
        &mk("line", "# fixture"),
        "f",
        text,
        expect![[r#"
        tok f:2 efgh5678
    "#]],
    );
}

#[test]
fn allowlist_stopwords_paths_and_conditions() {
    let stop = format!("{TOKEN_RULE}[[rules.allowlists]]\nstopwords = [\"ABCD\"]\n");
    check(
        &stop,
        "f",
        "tok_abcd1234 tok_efgh5678",
        expect![[r#"
        tok f:1 efgh5678
    "#]],
    );
    let or = format!(
        "{TOKEN_RULE}[[rules.allowlists]]\npaths = ['''^test/''']\nregexes = ['''^0000''']\n"
    );
    check(&or, "test/a", "tok_abcd1234", expect![""]);
    check(
        &or,
        "src/a",
        "tok_00001234 tok_abcd1234",
        expect![[r#"
        tok src/a:1 abcd1234
    "#]],
    );
    let and = format!(
        "{TOKEN_RULE}[[rules.allowlists]]\ncondition = \"AND\"\npaths = ['''^test/''']\nregexes = ['''^0000''']\n"
    );
    check(
        &and,
        "test/a",
        "tok_00001234 tok_abcd1234",
        expect![[r#"
        tok test/a:1 abcd1234
    "#]],
    );
    check(
        &and,
        "src/a",
        "tok_00001234",
        expect![[r#"
        tok src/a:1 00001234
    "#]],
    );
}

#[test]
fn allowlist_commits_apply_to_git_fragments() {
    let cfg = format!("{TOKEN_RULE}[[allowlists]]\ncommits = [\"ABC123\"]\n");
    let scanner = Scanner::from_toml("t", &cfg, None).unwrap();
    let frag = |commit| Fragment {
        text: b"tok_abcd1234",
        path: "a",
        commit,
        start_line: 7,
    };
    assert!(scanner.scan_fragment(&frag("abc123")).is_empty());
    let found = scanner.scan_fragment(&frag("def456"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].fingerprint(), "def456:a:tok:7");
}

#[test]
fn global_allowlists_old_and_new_forms_and_target_rules() {
    let rules =
        format!("{TOKEN_RULE}[[rules]]\nid = \"other\"\nregex = '''oth_([a-z0-9]{{8}})'''\n");
    let old = format!("{rules}[allowlist]\npaths = ['''\\.lock$''']\n");
    check(&old, "Cargo.lock", "tok_abcd1234 oth_abcd1234", expect![""]);
    let targeted =
        format!("{rules}[[allowlists]]\ntargetRules = [\"tok\"]\nregexes = ['''^abcd''']\n");
    check(
        &targeted,
        "f",
        "tok_abcd1234 oth_abcd1234",
        expect![[r#"
        other f:1 abcd1234
    "#]],
    );
    let both = format!("{old}[[allowlists]]\npaths = ['''x''']\n");
    let err = Scanner::from_toml("u.toml", &both, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("both [allowlist] and [[allowlists]]"),
        "{err}"
    );
}

#[test]
fn gitleaks_allow_comment_and_ignore_list() {
    check(
        TOKEN_RULE,
        "f",
        "x tok_abcd1234 # gitleaks:allow\ny tok_efgh5678\n",
        expect![[r#"
        tok f:2 efgh5678
    "#]],
    );
    let scanner = Scanner::from_toml("t", TOKEN_RULE, None)
        .unwrap()
        .with_ignore_list("# reviewed\nf:tok:2\n\n");
    let found = scanner.scan_text("f", b"tok_abcd1234\ntok_efgh5678\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].start_line, 1);
}

#[test]
fn path_only_and_path_scoped_rules() {
    let cfg = r#"
[[rules]]
id = "p12"
path = '''\.p12$'''
[[rules]]
id = "env-tok"
path = '''\.env$'''
regex = '''tok_([a-z0-9]{8})'''
"#;
    check(
        cfg,
        "certs/a.p12",
        "anything",
        expect![[r#"
        p12 certs/a.p12:0 
    "#]],
    );
    check(
        cfg,
        "prod.env",
        "tok_abcd1234",
        expect![[r#"
        env-tok prod.env:1 abcd1234
    "#]],
    );
    check(cfg, "main.rs", "tok_abcd1234", expect![""]);
}

#[test]
fn decoding_finds_base64_hex_and_percent_wrapped_secrets() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let inner = "tok_abcd1234";
    let hex: String = inner
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + "0a0a0a0a";
    let text = format!(
        "a: {}\nb: {hex}\nc: x%3Dtok%5Fefgh5678%26\nd: {}\n",
        b64(&format!("{inner}!!!!")),
        b64(&b64("tok_ijkl9012 nested"))
    );
    check(
        TOKEN_RULE,
        "f",
        &text,
        expect![[r#"
        tok f:1 abcd1234 [decoded:base64,decode-depth:1]
        tok f:2 abcd1234 [decoded:hex,decode-depth:1]
        tok f:3 efgh5678 [decoded:percent,decode-depth:1]
        tok f:4 ijkl9012 [decoded:base64,decoded:base64,decode-depth:2]
    "#]],
    );
    let shallow = Scanner::from_toml("t", TOKEN_RULE, None)
        .unwrap()
        .with_decode_depth(1);
    assert!(!render(&shallow, "f", &text).contains("ijkl9012"));
    let off = Scanner::from_toml("t", TOKEN_RULE, None)
        .unwrap()
        .with_decode_depth(0);
    assert_eq!(render(&off, "f", &text), "");
    // A secret visible both plainly and inside a decoded run is reported once.
    let twice = "x%3Dtok_efgh5678%26";
    assert_eq!(render(&shallow, "f", twice), "tok f:1 efgh5678\n");
}

#[test]
fn extend_use_default_disables_overrides_and_adds_rules() {
    let token = gh_token(1);
    let cfg = r#"
title = "mine"
[extend]
useDefault = true
disabledRules = ["generic-api-key"]
[[rules]]
id = "github-pat"
[[rules.allowlists]]
paths = ['''^fixtures/''']
[[rules]]
id = "tok"
regex = '''tok_([a-z0-9]{8})'''
"#;
    let scanner = Scanner::from_toml("user.toml", cfg, None).unwrap();
    let builtin = Scanner::builtin().unwrap();
    assert_eq!(scanner.rule_count(), builtin.rule_count());
    assert_eq!(scanner.title(), "mine");
    let text = format!(
        "password = \"{}\"\nt = {token}\nx tok_abcd1234\n",
        fill(9, ALNUM, 24)
    );
    expect![[r#"
        github-pat src/a:2 ghp_
        tok src/a:3 abcd1234
    "#]]
    .assert_eq(&render(&scanner, "src/a", &text).replace(&token[4..], ""));
    assert!(!render(&scanner, "fixtures/a", &text).contains("github-pat"));
}

#[test]
fn extend_path_is_resolved_next_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.toml"), TOKEN_RULE).unwrap();
    let user = dir.path().join("gitleaks.toml");
    std::fs::write(
        &user,
        "[extend]\npath = \"base.toml\"\n[[rules]]\nid = \"tok\"\nentropy = 2.9\n",
    )
    .unwrap();
    let scanner = Scanner::from_file(&user).unwrap();
    let out = render(&scanner, "f", "tok_aaaaaaaa tok_abcd1234");
    assert_eq!(out, "tok f:1 abcd1234\n");
}

#[test]
fn go_style_literal_braces_compile() {
    let cfg = r#"
[[rules]]
id = "brace"
regex = '''\${{ ?secrets\.([A-Z_]{4,}) ?}}|{"key":\s*"([a-z0-9]{8})"}|x{2}'''
"#;
    check(
        cfg,
        "ci.yml",
        r#"a: ${{ secrets.DEPLOY_KEY }} {"key": "ab12cd34"}"#,
        expect![[r#"
        brace ci.yml:1 DEPLOY_KEY
        brace ci.yml:1 ab12cd34
    "#]],
    );
    assert_eq!(
        rules::escape_bare_braces(r"a{2,3}{x}[{]\{"),
        r"a{2,3}\{x\}[{]\{"
    );
}

#[test]
fn rule_file_errors_name_the_rule_and_field() {
    let cases = [
        (
            "[[rules]]\nid = \"bad-re\"\nregex = '''(unclosed'''\n",
            "rule `bad-re`: field `regex`: invalid regex",
        ),
        (
            "[[rules]]\nid = \"grp\"\nregex = '''a(b)'''\nsecretGroup = 3\n",
            "rule `grp`: field `secretGroup`: is 3 but the regex has only 1 group(s)",
        ),
        (
            "[[rules]]\nregex = '''x'''\n",
            "rule `#1`: field `id`: missing or empty",
        ),
        (
            "[[rules]]\nid = \"n\"\n",
            "rule `n`: field `regex`: a rule needs",
        ),
        (
            "[[rules]]\nid = \"e\"\nregex = 'x'\nentropy = 9.0\n",
            "rule `e`: field `entropy`",
        ),
        (
            "[[rules]]\nid = \"c\"\nregex = 'x'\n[[rules.allowlists]]\ncondition = \"XOR\"\nstopwords = [\"a\"]\n",
            "rule `c` allowlist #1: field `condition`: `XOR` is not OR or AND",
        ),
        (
            "[[rules]]\nid = \"t\"\nregex = 'x'\n[[rules.allowlists]]\nregexTarget = \"file\"\nstopwords = [\"a\"]\n",
            "field `regexTarget`",
        ),
        (
            "[[allowlists]]\ntargetRules = [\"nope\"]\npaths = ['x']\n",
            "global allowlist #1: field `targetRules`: no rule has id `nope`",
        ),
        (
            "[[rules]]\nid = \"u\"\nregex = 'x'\nregexx = 'y'\n",
            "unknown field `regexx`",
        ),
        (
            "[[rules]]\nid = \"p\"\nregex = 'x'\n[[rules.required]]\nid = \"missing\"\n",
            "rule `p`: field `required.id`: no rule has id `missing`",
        ),
        ("[extend]\npath = \"other.toml\"\n", "cannot be resolved"),
    ];
    for (cfg, want) in cases {
        let err = Scanner::from_toml("user.toml", cfg, None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("user.toml"), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
}

#[test]
fn gitleaks_documented_config_loads_and_behaves() {
    // Shaped like the examples in gitleaks' README: old single allowlists, tags, keywords.
    let cfg = r#"
title = "Gitleaks title"

[extend]
useDefault = true

[[rules]]
id = "awesome-rule-1"
description = "awesome rule 1"
regex = '''one-go-style-regex-(\d{4})'''
secretGroup = 1
entropy = 1.5
path = '''a-file-path-regex'''
keywords = ["auth", "password", "token"]
tags = ["tag", "another tag"]

    [rules.allowlist]
    description = "ignore commit A"
    commits = [ "commit-A", "commit-B"]
    paths = ['''go\.mod''', '''go\.sum''']
    regexTarget = "match"
    regexes = ['''process''','''getenv''']
    stopwords = ['''client''', '''endpoint''']

[allowlist]
description = "global allow list"
commits = [ "commit-A", "commit-B", "commit-C"]
paths = ['''gitleaks\.toml''', '''(.*?)(jpg|gif|doc)''']
regexTarget = "match"
regexes = ['''219-09-9999''', '''078-05-1120''', '''(9[0-9]{2}|666)-\d{2}-\d{4}''']
stopwords = ['''client''', '''endpoint''']
"#;
    let scanner = Scanner::from_toml("gitleaks.toml", cfg, None).unwrap();
    let builtin = Scanner::builtin().unwrap();
    assert_eq!(scanner.rule_count(), builtin.rule_count() + 1);
    let hit = "token one-go-style-regex-8413";
    assert_eq!(
        render(&scanner, "x/a-file-path-regex", hit),
        "awesome-rule-1 x/a-file-path-regex:1 8413 [tag,another tag]\n"
    );
    assert_eq!(render(&scanner, "other.txt", hit), "");
    assert_eq!(
        render(&scanner, "x/a-file-path-regex", "one-go-style-regex-8413"),
        ""
    );
    assert_eq!(
        render(
            &scanner,
            "x/a-file-path-regex",
            "token one-go-style-regex-1111"
        ),
        ""
    );
    assert_eq!(
        render(&scanner, "pic.jpg", &format!("t = {}", gh_token(3))),
        ""
    );
    assert_eq!(render(&scanner, "x/a-file-path-regex/go.mod", hit), "");
}

#[test]
fn a_rule_too_large_to_compile_fails_closed_as_a_finding() {
    // Valid syntax, so it loads; compiled lazily on first use, it exceeds the size limit.
    let cfg =
        "[[rules]]\nid = \"huge\"\nregex = '''(?:[a-z]{1000}){1000}x'''\nkeywords = [\"go\"]\n";
    let scanner = Scanner::from_toml("t", cfg, None).unwrap();
    assert!(scanner.scan_text("f", b"nothing here").is_empty());
    let found = scanner.scan_text("f", b"go");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule_id, "huge");
    assert!(
        found[0]
            .description
            .starts_with("rule could not be compiled"),
        "{}",
        found[0].description
    );
}

/// Each cause is printed once by anyhow's `{:#}` (it is in the message, not also the source).
#[test]
fn scan_errors_show_their_cause_once() {
    let git = ScanError::Git {
        what: "cannot read commit 1234".into(),
        error: git2::Error::from_str("object not found"),
    };
    assert_eq!(
        format!("{:#}", anyhow::Error::from(git)),
        "git: cannot read commit 1234: object not found"
    );
    let io = ScanError::Io {
        path: "/w/a.txt".into(),
        error: std::io::Error::other("disk on fire"),
    };
    assert_eq!(
        format!("{:#}", anyhow::Error::from(io)),
        "cannot read /w/a.txt: disk on fire"
    );
}

#[test]
fn a_generic_api_key_finding_yields_to_a_specific_rule_on_the_same_secret() {
    // gitleaks' generic rule has no `generic` tag: its id is what marks it generic.
    let config = r#"
[[rules]]
id = "generic-api-key"
regex = '''(?i)token\s*=\s*"([a-z0-9_]{20,})"'''
keywords = ["token"]

[[rules]]
id = "github-pat"
regex = '''ghp_[a-zA-Z0-9]{36}'''
keywords = ["ghp_"]
"#;
    let scanner = Scanner::from_toml("t", config, None).unwrap();
    let text = format!("token = \"{}\"\n", gh_token(7));
    let found = scanner.scan_text("a.py", text.as_bytes());
    let ids: Vec<&str> = found.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(ids, ["github-pat"], "{found:?}");
    // Without a specific rule the generic finding stays.
    let only_generic = scanner.scan_text("a.py", b"token = \"abcdefghij0123456789xyzw\"\n");
    assert_eq!(only_generic.len(), 1, "{only_generic:?}");
}

/// Keys gitleaks accepts that an earlier version refused: a top-level `description`, keys in
/// any case (gitleaks reads its config case-insensitively), and `[extend] url`, which gitleaks
/// does not fetch either (ignored, with a warning).
#[test]
fn every_documented_key_in_any_case_is_accepted() {
    let cfg = r#"
title = "mine"
description = "the team's rules"

[Extend]
UseDefault = false
url = "https://example.invalid/rules.toml"

[[rules]]
ID = "tok"
Regex = '''tok_([a-z0-9]{8})'''
SecretGroup = 1
Keywords = ["tok_"]
    [[rules.Allowlists]]
    StopWords = ["aaaaaaaa"]
    RegexTarget = "secret"
"#;
    let scanner = Scanner::from_toml("user.toml", cfg, None).unwrap();
    expect![[r#"
        tok t.txt:1 bbbbbbbb
    "#]]
    .assert_eq(&render(&scanner, "t.txt", "tok_aaaaaaaa tok_bbbbbbbb\n"));
    // A key that is unknown in any case is still refused, with its line.
    let err = Scanner::from_toml(
        "user.toml",
        "[[rules]]\nid = \"u\"\nregex = 'x'\nRegexx = 'y'\n",
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown field `Regexx`") && err.contains("line 4"),
        "{err}"
    );
}

/// gitleaks' composite rules: the primary rule reports only where each required rule also
/// matches near it (the required rule's `skipReport` notwithstanding).
#[test]
fn composite_rules_report_only_with_their_required_parts_nearby() {
    let cfg = r#"
[[rules]]
id = "key-id"
regex = '''KID-([A-Z0-9]{8})'''
keywords = ["kid-"]
    [[rules.required]]
    id = "key-secret"
    withinLines = 2
[[rules]]
id = "key-secret"
regex = '''SEC-([a-z0-9]{12})'''
skipReport = true
[[rules]]
id = "same-line"
regex = '''USR-([a-z]{6})'''
    [[rules.required]]
    id = "key-secret"
    withinColumns = 30
"#;
    let scanner = Scanner::from_toml("c.toml", cfg, None).unwrap();
    let pair = "id = KID-ABCD1234\nsecret = SEC-abcdefabcdef\n";
    assert_eq!(render(&scanner, "a", pair), "key-id a:1 ABCD1234\n");
    // Alone, or with its part too far away: nothing.
    assert_eq!(render(&scanner, "a", "id = KID-ABCD1234\n"), "");
    let far = "id = KID-ABCD1234\n\n\n\nsecret = SEC-abcdefabcdef\n";
    assert_eq!(render(&scanner, "a", far), "");
    // Columns: the same line, close enough; another line never counts.
    assert_eq!(
        render(&scanner, "a", "USR-abcdef SEC-abcdefabcdef\n"),
        "same-line a:1 abcdef\n"
    );
    assert_eq!(render(&scanner, "a", "USR-abcdef\nSEC-abcdefabcdef\n"), "");
}
