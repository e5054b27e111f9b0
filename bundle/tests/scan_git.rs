//! The scanner over real git repositories built with the `git` CLI: what a push adds, ranges,
//! whole histories, commit and tag messages, budgets.

// Test helpers outside #[test] fns panic on setup failure, which is a test failure.
#![allow(clippy::unwrap_used)]

mod scan_support;

use bottle_bundle::scanner::{Budget, Finding, RefUpdate, ScanError, Scanner};
use git2::{Oid, Repository};
use scan_support::{Repo, github_token, stripe_token};

fn update(old: &str, new: &str, refname: &str) -> RefUpdate {
    RefUpdate {
        old: Oid::from_str(old).unwrap(),
        new: Oid::from_str(new).unwrap(),
        refname: refname.to_owned(),
    }
}

const ZERO: &str = "0000000000000000000000000000000000000000";

/// `rule file:line @commit-prefix` per finding, sorted.
fn summary(found: &[Finding]) -> Vec<String> {
    let mut v: Vec<String> = found
        .iter()
        .map(|f| {
            format!(
                "{} {}:{} @{}",
                f.rule_id,
                f.file,
                f.start_line,
                &f.commit[..f.commit.len().min(7)]
            )
        })
        .collect();
    v.sort();
    v
}

/// Builds commits on top of `main`, then moves `main` back, so the new commits exist as
/// objects but no ref reaches them: the state a pre-receive hook sees.
fn unpushed(repo: &Repo, build: impl FnOnce(&Repo)) -> (String, String) {
    let old = repo.rev("main");
    build(repo);
    let new = repo.rev("HEAD");
    repo.git(&["checkout", "-q", "--detach"]);
    repo.git(&["update-ref", "refs/heads/main", &old]);
    repo.git(&["reset", "-q", "--hard", &old]);
    (old, new)
}

#[test]
fn push_scan_covers_only_added_lines_of_new_commits() {
    let repo = Repo::new();
    let old_secret = github_token(1);
    repo.write("config.env", &format!("A=1\nOLD={old_secret}\n"));
    repo.commit("base");
    let new_secret = stripe_token(2);
    let (old, new) = unpushed(&repo, |r| {
        // Changes a line next to the old secret (context, not added) and adds a new one.
        r.write(
            "config.env",
            &format!("A=2\nOLD={old_secret}\nNEW={new_secret}\n"),
        );
        r.commit("second");
        r.write("clean.txt", "nothing here\n");
        r.commit("third");
    });
    let git = Repository::open(repo.path()).unwrap();
    let found = Scanner::builtin()
        .unwrap()
        .scan_push(
            &git,
            &[update(&old, &new, "refs/heads/main")],
            &Budget::unlimited(),
        )
        .unwrap();
    let second = repo.rev(&format!("{new}~1"));
    assert_eq!(
        summary(&found),
        vec![format!("stripe-secret-key config.env:3 @{}", &second[..7])]
    );
    let f = &found[0];
    assert_eq!(f.secret(), new_secret);
    assert_eq!(f.author, "Test Author");
    assert_eq!(f.email, "author@example.test");
    assert_eq!(f.date, "2024-01-02T03:04:05Z");
    assert_eq!(f.message, "second");
    assert_eq!(
        f.fingerprint(),
        format!("{second}:config.env:stripe-secret-key:3")
    );
}

#[test]
fn removed_lines_are_not_findings_and_roots_diff_against_the_empty_tree() {
    let repo = Repo::new();
    let secret = github_token(3);
    repo.write("a.txt", &format!("x\n{secret}\n"));
    let root = repo.commit("root");
    repo.write("a.txt", "x\n");
    let fix = repo.commit("remove it");
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let budget = Budget::unlimited();
    let new_branch = scanner
        .scan_push(&git, &[update(ZERO, &fix, "refs/heads/other")], &budget)
        .unwrap();
    assert!(
        new_branch.is_empty(),
        "already reachable from main: {new_branch:?}"
    );
    let only_fix = scanner
        .scan_range(&git, &format!("{root}..{fix}"), &budget)
        .unwrap();
    assert!(only_fix.is_empty(), "{only_fix:?}");
    let all = scanner.scan_range(&git, &fix, &budget).unwrap();
    assert_eq!(
        summary(&all),
        vec![format!("github-pat a.txt:2 @{}", &root[..7])]
    );
}

/// A merge whose file matches no parent (a conflict resolution, an "evil merge") is scanned
/// as what it adds to its first parent; a file taken as it is from a parent is not.
#[test]
fn a_merge_is_scanned_for_what_no_parent_has() {
    let repo = Repo::new();
    repo.write("a.txt", "base\n");
    let base = repo.commit("base");
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("a.txt", "side\n");
    repo.commit("side");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("a.txt", "main\n");
    repo.commit("main");
    let secret = github_token(7);
    let (_, merge) = unpushed(&repo, |r| {
        // Conflicts: both sides changed a.txt.
        let conflicted = scan_support::git_in(r.path(), &["merge", "-q", "side"]);
        assert!(!conflicted.status.success());
        // The resolution keeps neither side and slips a token in.
        r.write("a.txt", &format!("resolved\n{secret}\n"));
        r.git(&["add", "a.txt"]);
        r.git(&["commit", "-q", "--no-edit"]);
    });
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let budget = Budget::unlimited();
    let found = scanner
        .scan_push(&git, &[update(&base, &merge, "refs/heads/main")], &budget)
        .unwrap();
    assert_eq!(
        summary(&found),
        vec![format!("github-pat a.txt:2 @{}", &merge[..7])]
    );
    repo.git(&["update-ref", "refs/heads/main", &merge]);
    let all = scanner.scan_history(&git, &budget).unwrap();
    assert_eq!(summary(&all), summary(&found));
}

#[test]
fn new_branch_force_push_and_merge_use_new_not_all() {
    let repo = Repo::new();
    repo.write("a.txt", "base\n");
    let base = repo.commit("base");
    let s1 = github_token(4);
    // A side branch that already exists on the server, holding a secret.
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("side.txt", &format!("{s1}\n"));
    let side = repo.commit("side secret");
    repo.git(&["checkout", "-q", "main"]);
    let s2 = stripe_token(5);
    let (_, new) = unpushed(&repo, |r| {
        r.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);
        r.write("b.txt", &format!("{s2}\n"));
        r.commit("new secret");
    });
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let budget = Budget::unlimited();
    // `side`'s own commit is reachable from an existing ref, so it is not walked; the merge
    // is, but it takes side.txt as `side` has it, so it adds nothing of its own (the secret
    // is on the server already, in `side`).
    let found = scanner
        .scan_push(&git, &[update(&base, &new, "refs/heads/main")], &budget)
        .unwrap();
    assert_eq!(
        summary(&found),
        vec![format!("stripe-secret-key b.txt:1 @{}", &new[..7])]
    );
    assert!(!found.iter().any(|f| f.commit == side));
    // Force push of a rewritten main: only the rewritten commit is new.
    repo.git(&["checkout", "-q", "--detach", &base]);
    repo.write("c.txt", &format!("{}\n", github_token(6)));
    let rewritten = repo.commit("rewrite");
    let found = scanner
        .scan_push(
            &git,
            &[update(&side, &rewritten, "refs/heads/side")],
            &budget,
        )
        .unwrap();
    assert_eq!(
        summary(&found),
        vec![format!("github-pat c.txt:1 @{}", &rewritten[..7])]
    );
    // Deleting a ref scans nothing.
    let found = scanner
        .scan_push(&git, &[update(&side, ZERO, "refs/heads/side")], &budget)
        .unwrap();
    assert!(found.is_empty());
}

#[test]
fn commit_messages_and_whole_annotated_tags_are_scanned() {
    let repo = Repo::new();
    repo.write("a.txt", "a\n");
    repo.commit("base");
    let msg_secret = github_token(7);
    let tag_secret = stripe_token(8);
    let (_, new) = unpushed(&repo, |r| {
        r.write("a.txt", "b\n");
        r.commit(&format!("deploy with token {msg_secret}"));
    });
    repo.git(&[
        "tag",
        "-a",
        "v1",
        "-m",
        &format!("release key {tag_secret}"),
        &new,
    ]);
    let tag = repo.rev("refs/tags/v1");
    repo.git(&["tag", "-d", "v1"]);
    let git = Repository::open(repo.path()).unwrap();
    let found = Scanner::builtin()
        .unwrap()
        .scan_push(
            &git,
            &[update(ZERO, &tag, "refs/tags/v1")],
            &Budget::unlimited(),
        )
        .unwrap();
    assert_eq!(
        summary(&found),
        vec![
            format!("github-pat (commit message):1 @{}", &new[..7]),
            format!("stripe-secret-key (tag refs/tags/v1):6 @{}", &tag[..7]),
        ]
    );
}

#[test]
fn each_blob_pair_is_scanned_once_and_a_push_scans_binary_files_too() {
    let repo = Repo::new();
    repo.write("a.txt", "a\n");
    repo.commit("base");
    let secret = github_token(9);
    let (old, new) = unpushed(&repo, |r| {
        r.write("one/key.txt", &format!("{secret}\n"));
        r.commit("add");
        // The same file content added again elsewhere: the same (empty, blob) pair.
        r.write("two/key.txt", &format!("{secret}\n"));
        r.commit("copy");
        let mut bin = vec![0u8, 1, 2, 0];
        bin.extend_from_slice(github_token(10).as_bytes());
        std::fs::write(r.path().join("blob.bin"), bin).unwrap();
        r.commit("binary");
    });
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let found = scanner
        .scan_push(
            &git,
            &[update(&old, &new, "refs/heads/main")],
            &Budget::unlimited(),
        )
        .unwrap();
    // A NUL byte must not hide a secret from the gate: the push scan reads binary blobs.
    let mut files: Vec<&str> = found.iter().map(|f| f.file.as_str()).collect();
    files.sort_unstable();
    assert_eq!(files.len(), 2, "{found:?}");
    assert_eq!(files[0], "blob.bin", "{found:?}");
    assert!(files[1].ends_with("key.txt"), "{found:?}");
    // A history scan keeps gitleaks' behaviour: binary files are skipped.
    let range = scanner
        .scan_range(&git, &format!("{old}..{new}"), &Budget::unlimited())
        .unwrap();
    assert!(range.iter().all(|f| f.file != "blob.bin"), "{range:?}");
    assert_eq!(range.len(), 1, "{range:?}");
}

#[test]
fn path_only_rules_report_binary_files_in_history_and_push_scans() {
    let repo = Repo::new();
    repo.write("a.txt", "a\n");
    repo.commit("base");
    let (old, new) = unpushed(&repo, |r| {
        std::fs::write(r.path().join("cert.p12"), [0u8, 0x30, 0x82, 0, 1, 2]).unwrap();
        r.commit("add a keystore");
    });
    let config = r#"
[[rules]]
id = "pkcs12-file"
description = "PKCS #12 file"
path = '''(?i)\.(p12|pfx)$'''
"#;
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::from_toml("t.toml", config, None).unwrap();
    let range = scanner
        .scan_range(&git, &format!("{old}..{new}"), &Budget::unlimited())
        .unwrap();
    assert_eq!(
        summary(&range),
        [format!("pkcs12-file cert.p12:0 @{}", &new[..7])]
    );
    let push = scanner
        .scan_push(
            &git,
            &[update(&old, &new, "refs/heads/main")],
            &Budget::unlimited(),
        )
        .unwrap();
    assert_eq!(
        summary(&push),
        [format!("pkcs12-file cert.p12:0 @{}", &new[..7])]
    );
    repo.git(&["checkout", "-q", &new]);
    let dir = scanner.scan_dir(repo.path()).unwrap();
    assert!(dir.iter().any(|f| f.file == "cert.p12"), "{dir:?}");
}

#[test]
fn a_push_scan_stays_fast_with_thousands_of_refs() {
    // 2,000 commits in a line, a tag on each: every ref hides a different commit (the case
    // that made libgit2's revwalk, one hide per ref, take seconds).
    let repo = Repo::new();
    let mut stream = String::new();
    for i in 1..=2000 {
        stream.push_str(&format!(
            "commit refs/heads/main\nmark :{i}\ncommitter T <t@example.test> 1700000000 +0000\ndata 2\n{}\n\n",
            i % 10
        ));
        if i > 1 {
            stream.push_str(&format!("from :{}\n", i - 1));
        }
        stream.push_str(&format!(
            "M 644 inline a.txt\ndata 8\nline{:04}\n\n",
            i % 10000
        ));
        stream.push_str(&format!("reset refs/tags/t{i}\nfrom :{i}\n\n"));
    }
    let mut child = scan_support::git_cmd(repo.path())
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stream.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    repo.git(&["reset", "-q", "--hard", "main"]);
    let secret = github_token(77);
    let (old, new) = unpushed(&repo, |r| {
        r.write("key.txt", &format!("{secret}\n"));
        r.commit("add key");
    });
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let started = std::time::Instant::now();
    let found = scanner
        .scan_push(
            &git,
            &[update(&old, &new, "refs/heads/main")],
            &Budget::unlimited(),
        )
        .unwrap();
    eprintln!("push scan with 2000 refs: {:?}", started.elapsed());
    assert_eq!(
        summary(&found),
        [format!("github-pat key.txt:1 @{}", &new[..7])]
    );
}

#[test]
fn over_budget_is_an_error_not_a_pass() {
    let repo = Repo::new();
    repo.write("a.txt", "a\n");
    repo.commit("base");
    let (old, new) = unpushed(&repo, |r| {
        r.write("big.txt", &"clean line of text\n".repeat(5000));
        r.commit("big");
    });
    let git = Repository::open(repo.path()).unwrap();
    let scanner = Scanner::builtin().unwrap();
    let updates = [update(&old, &new, "refs/heads/main")];
    let err = scanner
        .scan_push(
            &git,
            &updates,
            &Budget::new(10_000, std::time::Duration::from_secs(60)),
        )
        .unwrap_err();
    assert!(matches!(err, ScanError::OverBudget { .. }), "{err}");
    let err = scanner
        .scan_push(
            &git,
            &updates,
            &Budget::new(u64::MAX, std::time::Duration::ZERO),
        )
        .unwrap_err();
    assert!(matches!(err, ScanError::OverBudget { .. }), "{err}");
    assert!(
        scanner
            .scan_push(&git, &updates, &Budget::unlimited())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn history_findings_are_the_same_every_run_and_whatever_the_threads() {
    // Each branch adds a key file and is merged with --no-ff: the merge's first-parent diff
    // carries the same (empty, blob) pair again. Over 100 commits, so the walk hands the
    // branch commit and its merge to different workers.
    let repo = Repo::new();
    repo.write("a.txt", "a\n");
    repo.commit("base");
    for i in 0..20u64 {
        repo.git(&["checkout", "-q", "-b", &format!("b{i}")]);
        repo.write(
            &format!("keys/k{i}.txt"),
            &format!("{}\n", github_token(100 + i)),
        );
        repo.commit(&format!("add key {i}"));
        repo.git(&["checkout", "-q", "main"]);
        for j in 0..3 {
            repo.write("a.txt", &format!("a {i} {j}\n"));
            repo.commit(&format!("main {i} {j}"));
        }
        repo.git(&[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            &format!("merge {i}"),
            &format!("b{i}"),
        ]);
        // Only main stays a tip: the walk meets each merge before the commit it brings in.
        repo.git(&["branch", "-q", "-D", &format!("b{i}")]);
    }
    let git = Repository::open(repo.path()).unwrap();
    let fingerprints = |threads: usize| -> Vec<String> {
        let scanner = Scanner::builtin().unwrap().with_threads(threads);
        let found = scanner.scan_history(&git, &Budget::unlimited()).unwrap();
        // Attributed to the commit that introduced the pair, not the merge that repeats it.
        for f in &found {
            assert!(f.message.starts_with("add key"), "{f:?} in {:?}", f.message);
        }
        let mut v: Vec<String> = found.iter().map(|f| f.fingerprint()).collect();
        v.sort();
        v
    };
    let single = fingerprints(1);
    assert_eq!(single.len(), 20, "{single:?}");
    for run in 0..5 {
        let t = [4, 3, 2, 8, 4][run];
        let started = std::time::Instant::now();
        assert_eq!(fingerprints(t), single, "run {run}, {t} threads");
        eprintln!("history scan, {t} threads: {:?}", started.elapsed());
    }
}

#[test]
fn history_scan_finds_every_secret_on_every_branch() {
    let repo = Repo::new();
    let mut planted = Vec::new();
    repo.write("README", "r\n");
    repo.commit("base");
    for i in 0..80u64 {
        let branch = if i % 2 == 0 { "main" } else { "dev" };
        if i == 1 {
            repo.git(&["checkout", "-q", "-b", "dev"]);
        } else {
            repo.git(&["checkout", "-q", branch]);
        }
        let mut text = format!("file {i}\n");
        if i % 10 == 3 {
            text.push_str(&format!("token = {}\n", github_token(100 + i)));
            planted.push(format!("f{i}.txt"));
        }
        repo.write(&format!("f{i}.txt"), &text);
        repo.commit(&format!("c{i}"));
    }
    let git = Repository::open(repo.path()).unwrap();
    let found = Scanner::builtin()
        .unwrap()
        .scan_history(&git, &Budget::unlimited())
        .unwrap();
    let mut files: Vec<String> = found.iter().map(|f| f.file.clone()).collect();
    files.sort();
    planted.sort();
    assert_eq!(files, planted);
    assert!(
        found
            .iter()
            .all(|f| f.start_line == 2 && f.rule_id == "github-pat")
    );
}

/// The same history read loose (through libgit2), packed with deltas (through the scanner's
/// pack reader) plus loose commits on top, and as a shallow clone gives the same findings.
#[test]
fn history_scan_is_the_same_loose_packed_and_shallow() {
    let repo = Repo::new();
    let mut body: Vec<String> = (0..40).map(|i| format!("line {i} of config\n")).collect();
    repo.write("conf/app.txt", &body.concat());
    repo.commit("base");
    let scan = |path: &std::path::Path| {
        let git = Repository::open(path).unwrap();
        let found = Scanner::builtin()
            .unwrap()
            .scan_history(&git, &Budget::unlimited())
            .unwrap();
        summary(&found)
    };
    for i in 0..30u64 {
        // Edits at the start, middle and end of one growing file, and new files.
        match i % 3 {
            0 => body.insert(0, format!("head {i}\n")),
            1 => body.insert(body.len() / 2, format!("middle {i}\n")),
            _ => body.push(format!("tail {i}\n")),
        }
        if i % 4 == 1 {
            let at = (i as usize * 7) % body.len();
            body[at] = format!("token = {}\n", github_token(300 + i));
        }
        repo.write("conf/app.txt", &body.concat());
        repo.write(
            &format!("n/f{i}.txt"),
            &format!("x\nkey {}\n", stripe_token(400 + i)),
        );
        repo.commit(&format!("c{i}"));
    }
    let loose = scan(repo.path());
    assert_eq!(loose.iter().filter(|s| s.contains("github-pat")).count(), 8);
    assert_eq!(loose.iter().filter(|s| s.contains("stripe")).count(), 30);
    repo.git(&["repack", "-adq", "--depth=5"]);
    repo.write("late.txt", &format!("{}\n", github_token(999)));
    let late = repo.commit("late, loose");
    let mut packed = scan(repo.path());
    let late_finding = format!("github-pat late.txt:1 @{}", &late[..7]);
    assert!(packed.contains(&late_finding), "{packed:?}");
    packed.retain(|s| *s != late_finding);
    assert_eq!(packed, loose);

    // A shallow clone: the boundary commit is scanned as a root (its whole tree is added).
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", repo.path().display());
    let out = scan_support::git_in(
        dir.path(),
        &["clone", "-q", "--bare", "--depth", "3", &url, "s.git"],
    );
    assert!(out.status.success(), "{out:?}");
    let shallow = scan(&dir.path().join("s.git"));
    assert!(shallow.contains(&late_finding), "{shallow:?}");
    assert!(shallow.len() >= 3, "{shallow:?}");
}

#[test]
fn ref_update_lines_parse_and_bad_lines_are_named() {
    let u = RefUpdate::parse(&format!("{ZERO} {} refs/heads/x", "a".repeat(40))).unwrap();
    assert!(u.old.is_zero());
    assert_eq!(u.refname, "refs/heads/x");
    let err = RefUpdate::parse("garbage").unwrap_err().to_string();
    assert!(err.contains("expected `<old> <new> <ref>`"), "{err}");
    let err = RefUpdate::parse(&format!("{ZERO} nothex refs/heads/x"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad object id \"nothex\""), "{err}");
}

#[test]
fn nested_trees_and_file_to_directory_changes_are_diffed_in_git_order() {
    let repo = Repo::new();
    // Names around git's tree order edge: "a-b" < "a" (as a tree, "a/") < "a0".
    repo.write("a", "plain file\n");
    repo.write("a-b", "clean\n");
    repo.write("a0", "first\n");
    repo.write("dir/x.txt", "clean\n");
    repo.commit("base");
    let (s1, s2, s3) = (github_token(40), stripe_token(41), github_token(42));
    let (old, new) = unpushed(&repo, |r| {
        std::fs::remove_file(r.path().join("a")).unwrap();
        r.write("a/secret.txt", &format!("{s1}\n"));
        r.write("a0", &format!("first\n{s2}\n"));
        r.write("dir/sub/y.txt", &format!("{s3}\n"));
        r.commit("reshape");
    });
    let git = Repository::open(repo.path()).unwrap();
    let found = Scanner::builtin()
        .unwrap()
        .scan_push(
            &git,
            &[update(&old, &new, "refs/heads/main")],
            &Budget::unlimited(),
        )
        .unwrap();
    let short = &new[..7];
    assert_eq!(
        summary(&found),
        vec![
            format!("github-pat a/secret.txt:1 @{short}"),
            format!("github-pat dir/sub/y.txt:1 @{short}"),
            format!("stripe-secret-key a0:2 @{short}"),
        ]
    );
}
