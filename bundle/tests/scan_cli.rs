//! `bottle-bundle scan` as a separate process: inputs (stdin, --dir, --git, --pre-receive under
//! a real `git push`), formats, exit codes, redaction, and rule-file errors.

// Test helpers outside #[test] fns panic on setup failure, which is a test failure.
#![allow(clippy::unwrap_used)]

mod scan_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use scan_support::{Repo, bundle_bin, git_cmd, git_in, github_token, stripe_token};

fn scan(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bundle_bin())
        .arg("scan")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn stdin_exit_codes_and_redacted_text() {
    let clean = scan(&[], "just some text\n");
    assert_eq!(clean.status.code(), Some(0), "{}", err(&clean));
    let secret = github_token(21);
    let leak = scan(
        &["--stdin-name", "paste.txt"],
        &format!("a\nt = {secret}\n"),
    );
    assert_eq!(leak.status.code(), Some(1), "{}", err(&leak));
    let text = out(&leak);
    assert!(text.contains("leak: github-pat"), "{text}");
    assert!(text.contains("paste.txt:2"), "{text}");
    assert!(
        text.contains("fingerprint: paste.txt:github-pat:2"),
        "{text}"
    );
    for shown in [out(&leak), err(&leak)] {
        assert!(!shown.contains(&secret[4..]), "secret leaked: {shown}");
    }
    let shown = scan(&["--show-secrets"], &format!("t = {secret}\n"));
    assert!(out(&shown).contains(&secret));
}

#[test]
fn json_report_uses_gitleaks_field_names() {
    let secret = stripe_token(22);
    let o = scan(&["-f", "json"], &format!("x\nkey: {secret}\n"));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let f = &v[0];
    for field in [
        "RuleID",
        "Description",
        "StartLine",
        "EndLine",
        "StartColumn",
        "EndColumn",
        "Match",
        "Secret",
        "File",
        "SymlinkFile",
        "Commit",
        "Entropy",
        "Author",
        "Email",
        "Date",
        "Message",
        "Tags",
        "Fingerprint",
    ] {
        assert!(f.get(field).is_some(), "missing {field} in {f}");
    }
    assert_eq!(f["RuleID"], "stripe-secret-key");
    assert_eq!(f["StartLine"], 2);
    assert_eq!(f["StartColumn"], 6);
    assert!(!out(&o).contains(&secret[8..]), "{}", out(&o));
}

#[test]
fn two_secrets_on_one_line_are_both_redacted_in_text_and_json() {
    let (gh, stripe) = (github_token(31), stripe_token(32));
    let input = format!("x\ntokens {gh} and {stripe}\n");
    for format in ["text", "json"] {
        let o = scan(&["-f", format], &input);
        assert_eq!(o.status.code(), Some(1), "{}", err(&o));
        let shown = out(&o);
        assert!(
            shown.contains("github-pat") && shown.contains("stripe"),
            "{shown}"
        );
        for secret in [&gh, &stripe] {
            assert!(
                !shown.contains(&secret[8..]),
                "{format} shows a secret: {shown}"
            );
        }
    }
}

#[test]
fn sarif_report_has_rules_and_results() {
    let secret = github_token(23);
    let o = scan(&["--format", "sarif"], &format!("{secret}\n"));
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 60);
    assert!(rules.iter().any(|r| r["id"] == "github-pat"));
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "github-pat");
    let region = &result["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 1);
    assert!(!out(&o).contains(&secret[4..]));
}

#[test]
fn dir_scan_skips_dot_git_and_honours_gitleaksignore() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("src/a.env"), format!("A={}\n", github_token(24))).unwrap();
    std::fs::write(
        root.join("src/b.env"),
        format!("\nB={}\n", stripe_token(25)),
    )
    .unwrap();
    std::fs::write(root.join(".git/config"), github_token(26)).unwrap();
    let dir_arg = root.to_str().unwrap();
    let o = scan(&["--dir", dir_arg, "-f", "json"], "");
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let files: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["File"].as_str().unwrap())
        .collect();
    assert_eq!(files, vec!["src/a.env", "src/b.env"]);
    std::fs::write(
        root.join(".gitleaksignore"),
        "# reviewed\nsrc/a.env:github-pat:1\nsrc/b.env:stripe-secret-key:2\n",
    )
    .unwrap();
    let o = scan(&["--dir", dir_arg], "");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// A path given positionally, as gitleaks takes it: a directory is scanned as --dir, a file
/// on its own (reported under the path as given); anything else is an error (exit 2).
#[test]
fn a_positional_path_scans_a_directory_or_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    let file = root.join("src/a.env");
    std::fs::write(&file, format!("A={}\n", github_token(27))).unwrap();
    std::fs::write(root.join("clean.txt"), "nothing here\n").unwrap();

    let o = scan(&[root.to_str().unwrap(), "-f", "json"], "");
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v[0]["File"], "src/a.env", "{v}");

    let o = scan(&[file.to_str().unwrap(), "-f", "json"], "");
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v[0]["File"], file.to_str().unwrap(), "{v}");
    assert_eq!(v[0]["RuleID"], "github-pat", "{v}");

    let o = scan(&[root.join("clean.txt").to_str().unwrap()], "");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = scan(&[root.join("missing").to_str().unwrap()], "");
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("cannot scan"), "{}", err(&o));
    // Positional and --dir together is a usage error.
    let o = scan(
        &[root.to_str().unwrap(), "--dir", root.to_str().unwrap()],
        "",
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn git_scan_all_and_range() {
    let repo = Repo::new();
    repo.write("a.txt", &format!("{}\n", github_token(27)));
    let first = repo.commit("one");
    repo.write("b.txt", &format!("{}\n", stripe_token(28)));
    let second = repo.commit("two");
    let path = repo.path().to_str().unwrap();
    let all = scan(&["--git", path, "-f", "json"], "");
    assert_eq!(all.status.code(), Some(1), "{}", err(&all));
    let v: serde_json::Value = serde_json::from_str(&out(&all)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let range = format!("{first}..{second}");
    let o = scan(&["--git", path, "--range", &range, "-f", "json"], "");
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Commit"], second.as_str());
    assert_eq!(v[0]["Author"], "Test Author");
    assert_eq!(
        v[0]["Fingerprint"],
        format!("{second}:b.txt:stripe-secret-key:1")
    );
    // The ignore file in the repo root is picked up by default.
    std::fs::write(
        repo.path().join(".gitleaksignore"),
        format!("{first}:a.txt:github-pat:1\n{second}:b.txt:stripe-secret-key:1\n"),
    )
    .unwrap();
    let o = scan(&["--git", path], "");
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

#[test]
fn errors_exit_2_and_name_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gitleaks.toml");
    std::fs::write(
        &cfg,
        "[extend]\nuseDefault = true\n[[rules]]\nid = \"my-rule\"\nregex = '''([a-z'''\n",
    )
    .unwrap();
    let o = scan(&["-c", cfg.to_str().unwrap()], "x\n");
    assert_eq!(o.status.code(), Some(2));
    let e = err(&o);
    assert!(
        e.contains("gitleaks.toml: rule `my-rule`: field `regex`: invalid regex"),
        "{e}"
    );
    let o = scan(&["--git", dir.path().join("nope").to_str().unwrap()], "");
    assert_eq!(o.status.code(), Some(2));
    assert!(err(&o).contains("opening git repository"), "{}", err(&o));
}

#[test]
fn user_config_extending_defaults_applies() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gitleaks.toml");
    std::fs::write(
        &cfg,
        "[extend]\nuseDefault = true\ndisabledRules = [\"stripe-secret-key\", \"generic-api-key\"]\n\
         [[rules]]\nid = \"internal\"\nregex = '''int_[a-z0-9]{12}'''\nkeywords = [\"int_\"]\n",
    )
    .unwrap();
    let text = format!(
        "{}\n{}\nint_a1b2c3d4e5f6\n",
        stripe_token(29),
        github_token(30)
    );
    let o = scan(&["-c", cfg.to_str().unwrap(), "-f", "json"], &text);
    let v: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["RuleID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["github-pat", "internal"]);
}

#[test]
fn pre_receive_hook_rejects_a_secret_push_and_the_ref_is_unchanged() {
    let server = tempfile::tempdir().unwrap();
    let bare = server.path().join("repo.git");
    let o = git_in(
        server.path(),
        &["init", "-q", "--bare", "-b", "main", "repo.git"],
    );
    assert!(o.status.success());
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nexec '{}' scan --pre-receive\n",
            bundle_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    let repo = Repo::new();
    let url = bare.to_str().unwrap();
    repo.write("README", "hello\n");
    let clean = repo.commit("clean");
    let push = |repo: &Repo| {
        git_cmd(repo.path())
            .args(["push", url, "HEAD:refs/heads/main"])
            .output()
            .unwrap()
    };
    let o = push(&repo);
    assert!(o.status.success(), "{}", err(&o));

    let secret = github_token(31);
    repo.write("deploy.sh", &format!("export GITHUB_TOKEN={secret}\n"));
    repo.commit("add deploy script");
    let o = push(&repo);
    assert!(!o.status.success(), "secret push was accepted");
    let remote = err(&o);
    assert!(remote.contains("pre-receive hook declined"), "{remote}");
    assert!(remote.contains("github-pat"), "{remote}");
    assert!(remote.contains("deploy.sh:1"), "{remote}");
    assert!(
        !remote.contains(&secret[4..]),
        "secret echoed to the client: {remote}"
    );
    let o = git_in(&bare, &["rev-parse", "refs/heads/main"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), clean);

    repo.git(&["reset", "-q", "--hard", &clean]);
    repo.write("docs.md", "nothing secret\n");
    let next = repo.commit("docs");
    let o = push(&repo);
    assert!(o.status.success(), "{}", err(&o));
    let o = git_in(&bare, &["rev-parse", "refs/heads/main"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), next);
}
