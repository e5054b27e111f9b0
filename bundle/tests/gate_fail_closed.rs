//! Every way the gate's pre-receive check can go wrong rejects the push: over budget,
//! a broken config, broken scanner rules, a hook that cannot run, an upstream that hangs.
//! And the gate's key never reaches the agent or the logs.

#[path = "support/gate_env.rs"]
mod gate_env;
#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;

use gate_env::{GateEnv, Options, commit_file, git, git_ok, refs_snapshot, stderr, token};

/// Pushes `main` from `work` and expects a refusal naming `expect`, with the upstream's and the
/// gate's refs unchanged.
fn assert_push_refused(env: &GateEnv, work: &Path, expect: &str) -> String {
    let upstream = refs_snapshot(&env.upstream);
    let mirror = refs_snapshot(&env.mirror());
    let out = git(work, &["push", "origin", "main"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "push accepted:\n{err}");
    assert!(
        err.contains(expect),
        "message lacks {expect:?}:\n{err}\n{}",
        env.gate_log()
    );
    assert_eq!(
        refs_snapshot(&env.upstream),
        upstream,
        "upstream refs changed"
    );
    assert_eq!(refs_snapshot(&env.mirror()), mirror, "gate refs changed");
    err
}

/// `n` bytes of incompressible hex text.
fn noise(n: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 64 == 63 {
                '\n'
            } else {
                char::from_digit((x % 16) as u32, 16).unwrap_or('0')
            }
        })
        .collect()
}

#[test]
fn pushes_over_the_size_budget_are_rejected_naming_the_limit_and_its_key() {
    // The remote's own limit (`MaxPushMB`) is the one enforced, not the gate-wide default.
    let env = GateEnv::start(Options {
        max_push_bytes: 64 << 20,
        remote_max_push_bytes: Some(16 * 1024),
        ..Options::default()
    });
    let work = env.clone_work("work");
    let limit = "bottle gate: pushes to `app` may be at most 16 KiB";

    // A pack larger than the budget: receive-pack stops reading it, and the gate drains the
    // rest so git's own message, and the gate's line after it, still reach the agent.
    commit_file(&work, "big.txt", &noise(256 * 1024), "big");
    let err = assert_push_refused(&env, &work, "pack exceeds maximum allowed size");
    let git_line = err.find("pack exceeds maximum allowed size").unwrap();
    let gate_line = err
        .find(limit)
        .unwrap_or_else(|| panic!("no limit in:\n{err}"));
    assert!(git_line < gate_line, "{err}");
    assert!(err.contains("`MaxPushMB` on the `app` git entry"), "{err}");

    // A small pack that expands past the scan budget: the scanner refuses it.
    git_ok(&work, &["reset", "--quiet", "--hard", "origin/main"]);
    commit_file(
        &work,
        "repeat.txt",
        &"the same line again\n".repeat(8 * 1024),
        "repeat",
    );
    let err = assert_push_refused(&env, &work, "too large to scan");
    assert!(err.contains(limit), "{err}");
    assert!(err.contains("`MaxPushMB`"), "{err}");

    // Within the budget it goes through.
    git_ok(&work, &["reset", "--quiet", "--hard", "origin/main"]);
    commit_file(&work, "small.txt", "small\n", "small");
    let out = git(&work, &["push", "origin", "main"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_broken_config_or_rule_file_rejects_the_push() {
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        "title = \"mine\"\n[extend]\nuseDefault = true\n",
    )
    .unwrap();
    let env = GateEnv::start(Options {
        scanner_rules: Some(gate_env::s(rules.path())),
        ..Options::default()
    });
    let work = env.clone_work("work");
    commit_file(&work, "a.txt", "a\n", "a");

    // Rules that no longer parse: the scan cannot run, so the push is refused.
    std::fs::write(rules.path(), "this is [not toml").unwrap();
    assert_push_refused(
        &env,
        &work,
        "the secret scanner's rules could not be loaded",
    );
    std::fs::remove_file(rules.path()).unwrap();
    assert_push_refused(
        &env,
        &work,
        "the secret scanner's rules could not be loaded",
    );

    // A config the hook cannot read.
    std::fs::write(rules.path(), "[extend]\nuseDefault = true\n").unwrap();
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    std::fs::write(&env.config_path, "{ not json").unwrap();
    assert_push_refused(&env, &work, "the gate cannot read its configuration");

    // Restored, the same push goes through: the refusals above were the failures themselves.
    std::fs::write(&env.config_path, config).unwrap();
    let out = git(&work, &["push", "origin", "main"]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), env.gate_log());
}

#[test]
fn a_hook_that_cannot_run_rejects_the_push() {
    let bin_dir = tempfile::tempdir().unwrap();
    let program = bin_dir.path().join("bottle-bundle");
    std::fs::copy(env!("CARGO_BIN_EXE_bottle-bundle"), &program).unwrap();
    let env = GateEnv::start(Options {
        program: Some(program.clone()),
        ..Options::default()
    });
    let work = env.clone_work("work");
    commit_file(&work, "a.txt", "a\n", "a");
    // The running gate keeps working; the hook it installed now points at nothing.
    std::fs::remove_file(&program).unwrap();
    let before = env.sshd.connections();
    assert_push_refused(&env, &work, "pre-receive hook declined");
    assert_eq!(env.sshd.connections(), before, "the upstream was contacted");
}

/// The upstream's pre-receive hangs, so the forward times out before the upstream took
/// anything: the push is refused, and the gate says what it found when it asked afterwards.
#[test]
fn an_upstream_that_hangs_past_the_time_limit_rejects_the_push() {
    let env = GateEnv::start(Options {
        push_timeout_secs: 3,
        ..Options::default()
    });
    env.upstream_hook(
        "pre-receive",
        &format!(
            "#!/bin/sh\ncat >/dev/null\n{}\nexit 1\n",
            env.wait_for_release()
        ),
    );
    let work = env.clone_work("work");
    commit_file(&work, "a.txt", "a\n", "a");
    let started = std::time::Instant::now();
    let err = assert_push_refused(&env, &work, "the upstream did not answer in time");
    env.release();
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(
        err.contains("refs/heads/main: not taken: the upstream still has"),
        "{err}"
    );
    assert!(
        err.contains("its copy was refreshed from the upstream"),
        "{err}"
    );
    assert!(!err.contains("nothing was pushed"), "{err}");
}

/// Every file under `dir`, as bytes.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let path = entry.path();
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

#[test]
fn the_gate_key_never_reaches_the_agent_or_the_logs() {
    let mut env = GateEnv::start(Options::default());
    let key = std::fs::read_to_string(&env.identity).unwrap();
    // The key's base64 body lines, any of which would be a leak.
    let key_lines: Vec<&str> = key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!key_lines.is_empty());
    let key_path = gate_env::s(&env.identity);
    let mut agent_saw = String::new();
    let mut record = |out: &std::process::Output| {
        agent_saw.push_str(&String::from_utf8_lossy(&out.stdout));
        agent_saw.push_str(&String::from_utf8_lossy(&out.stderr));
    };

    let work = env.clone_work("work");
    commit_file(&work, "a.txt", "a\n", "clean");
    record(&git(&work, &["push", "origin", "main"]));
    commit_file(&work, "b.txt", &format!("t = \"{}\"\n", token()), "leak");
    record(&git(&work, &["push", "origin", "main"]));
    record(&git(&work, &["ls-remote", "origin"]));
    env.sshd.stop();
    record(&git(&work, &["fetch", "origin"]));
    record(&git(&work, &["push", "origin", "HEAD~1:refs/heads/other"]));
    env.sshd.resume();

    let ls = git_ok(&work, &["ls-remote", "origin"]);
    for line in ls.lines() {
        let name = line.split('\t').nth(1).unwrap_or_default();
        assert!(
            name == "HEAD" || name.starts_with("refs/heads/") || name.starts_with("refs/tags/"),
            "the gate serves {name}"
        );
    }

    let gate_log = env.gate_log();
    assert!(
        gate_log.contains("refresh from upstream failed"),
        "the log lacks the failure: {gate_log}"
    );
    for (what, text) in [("agent output", &agent_saw), ("gate log", &gate_log)] {
        assert!(
            !text.contains(&key_path),
            "{what} names the key file:\n{text}"
        );
        for line in &key_lines {
            assert!(!text.contains(line), "{what} holds key material");
        }
    }
    for dir in [work.as_path(), env.mirrors.as_path()] {
        for (path, bytes) in all_files(dir) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&key_path),
                "{} names the key file",
                path.display()
            );
            for line in &key_lines {
                assert!(
                    !text.contains(line),
                    "{} holds key material",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_gate_refuses_to_start_on_an_unreadable_key_or_broken_rules() {
    let env = GateEnv::start(Options::default());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&env.config_path).unwrap()).unwrap();
    let start = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut config = config.clone();
        edit(&mut config);
        let path = env.tmp.path().join("edited.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bottle-bundle"))
            .args(["gate", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the gate started");
        stderr(&out)
    };
    let missing_key = env.tmp.path().join("keys/absent");
    let err =
        start(&|c| c["gate"]["remotes"][0]["identity_file"] = gate_env::s(&missing_key).into());
    assert!(
        err.contains("gate.remotes[app].identity_file: the key file cannot be read"),
        "{err}"
    );
    assert!(!err.contains(&gate_env::s(&missing_key)), "{err}");

    let rules = env.tmp.path().join("rules.toml");
    std::fs::write(&rules, "[[rules]]\nid = \"x\"\nregex = '''(unclosed'''\n").unwrap();
    let err = start(&|c| c["gate"]["scanner_rules"] = gate_env::s(&rules).into());
    assert!(err.contains("gate.scanner_rules"), "{err}");
    assert!(err.contains("rules.toml"), "{err}");
}

/// Without a pre-receive hook git would accept anything: the gate refuses the push itself.
#[test]
fn a_missing_hook_file_refuses_pushes_instead_of_accepting_them() {
    let env = GateEnv::start(Options::default());
    let work = env.clone_work("work");
    commit_file(&work, "a.txt", &format!("t = \"{}\"\n", token()), "leak");
    std::fs::remove_file(env.mirrors.join(".gate/hooks/pre-receive")).unwrap();
    let before = env.sshd.connections();
    assert_push_refused(
        &env,
        &work,
        "pushes are disabled: the gate's hook is not installed",
    );
    assert_eq!(env.sshd.connections(), before);
}
