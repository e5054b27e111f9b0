//! The real `claude-bottle` binary, run with HOME set to a temporary directory.
// Helpers outside #[test] fns are test code too: a panic is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_claude-bottle");

/// A temporary HOME with a project directory next to it.
struct Env {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    project: PathBuf,
}

/// Where the tests point the bundle binary: nowhere.
const NO_BUNDLE_BIN: &str = "/nonexistent/bottle-bundle";

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let project = tmp.path().join("project");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&project).unwrap();
        Env {
            _tmp: tmp,
            home,
            project,
        }
    }

    fn root(&self) -> PathBuf {
        self.home.join(".claude-bottle")
    }

    /// Runs the binary in the project dir with a clean environment plus `vars`.
    fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&self.project)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // These tests stop before Docker: a start that gets past the preflight and the
            // secrets fails on the missing bundle binary (tests/ at the workspace root run
            // real bottles).
            .env("CLAUDE_BOTTLE_BUNDLE_BIN", NO_BUNDLE_BIN)
            .stdin(Stdio::null());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        Run(cmd.output().unwrap())
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

struct Run(Output);

impl Run {
    fn code(&self) -> i32 {
        self.0.status.code().unwrap()
    }
    fn stdout(&self) -> String {
        String::from_utf8(self.0.stdout.clone()).unwrap()
    }
    fn stderr(&self) -> String {
        String::from_utf8(self.0.stderr.clone()).unwrap()
    }
    fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code(), 0, "failed:\n{}", self.all());
        self
    }
}

#[test]
fn init_writes_examples_and_never_overwrites() {
    let env = Env::new();
    let out = env.run(&["init"]).ok().stdout();
    assert!(out.contains("wrote    "), "{out}");
    let bottle = env.root().join("bottles/example.md");
    let agent = env.root().join("agents/example.md");
    assert!(bottle.is_file() && agent.is_file());
    // The files init writes are the ones in examples/.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert_eq!(
        std::fs::read_to_string(&bottle).unwrap(),
        std::fs::read_to_string(repo.join("examples/bottles/example.md")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&agent).unwrap(),
        std::fs::read_to_string(repo.join("examples/agents/example.md")).unwrap()
    );

    std::fs::write(&bottle, "---\nsupervise: false\n---\nmine\n").unwrap();
    let out = env.run(&["init"]).ok().stdout();
    assert!(!out.contains("wrote"), "{out}");
    assert_eq!(out.matches("skipped").count(), 2, "{out}");
    assert_eq!(
        std::fs::read_to_string(&bottle).unwrap(),
        "---\nsupervise: false\n---\nmine\n"
    );
}

#[test]
fn init_then_dry_run_shows_the_plan() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let run = env.run(&["start", "example", "--dry-run"]).ok();
    let out = run.stdout();
    let first = out.lines().next().unwrap();
    let identity = first.strip_prefix("Preflight plan for bottle ").unwrap();
    assert_identity(identity);
    for want in [
        "agent      example",
        "command    claude",
        "images     agent claude-bottle-agent:<hash of its inputs>",
        "runtime    ",
        "supervise  on (MCP tools for a stuck agent",
        "api.github.com          paths /repos/anthropics/; no auth",
        "api.anthropic.com       all paths; auth Bearer from $CLAUDE_BOTTLE_OAUTH_TOKEN (NOT SET)",
        "GIT_AUTHOR_NAME   literal in the bottle",
        "git remotes (0)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn dry_run_json_is_the_same_plan() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let out = env
        .run_with(
            &["start", "example", "--dry-run", "--json"],
            &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "sk-ant-oat01-xyz")],
        )
        .ok();
    assert_eq!(out.stderr(), "");
    let plan: serde_json::Value = serde_json::from_str(&out.stdout()).unwrap();
    assert_identity(plan["identity"].as_str().unwrap());
    assert_eq!(plan["agent"]["name"], "example");
    assert_eq!(plan["bottle"]["name"], "example");
    assert_eq!(plan["supervise"], true);
    let routes = plan["routes"].as_array().unwrap();
    let claude = routes
        .iter()
        .find(|r| r["host"] == "api.anthropic.com")
        .unwrap();
    assert_eq!(claude["auth"]["token"], "CLAUDE_BOTTLE_OAUTH_TOKEN");
    assert_eq!(claude["auth"]["token_set"], true);
    assert_eq!(claude["origin"], "claude-credential");
    let env_names: Vec<&str> = plan["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL"]);
    assert!(!out.stdout().contains("sk-ant-oat01-xyz"));
}

#[test]
fn json_requires_dry_run() {
    let env = Env::new();
    let run = env.run(&["start", "example", "--json"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(run.stderr().contains("--dry-run"), "{}", run.stderr());
}

#[test]
fn info_shows_agent_prompt_and_grants() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let out = env.run(&["info", "example"]).ok().stdout();
    for want in [
        "Agent example",
        "bottle       example",
        "description  An example agent that explains a repository",
        "| You are a careful engineer",
        "routes (4; any other host is refused)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn help_on_every_command() {
    let env = Env::new();
    for args in [
        &["--help"][..],
        &["start", "--help"],
        &["info", "--help"],
        &["init", "--help"],
        &["completions", "--help"],
        &["help", "start"],
    ] {
        let out = env.run(args).ok().stdout();
        assert!(out.contains("Usage: claude-bottle"), "{args:?}:\n{out}");
    }
    let out = env.run(&["start", "--help"]).ok().stdout();
    for flag in ["--dry-run", "--json", "--yes", "--cwd", "--detach"] {
        assert!(out.contains(flag), "start --help lacks {flag}:\n{out}");
    }
    // --cwd has no default that copies anything: the help says so, not "the current directory".
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Without --cwd nothing is copied"),
        "start --help:\n{out}"
    );
}

#[test]
fn bash_completes_subcommands_agent_names_and_bottle_ids_from_the_manifest_home() {
    let env = Env::new();
    let root = env.root();
    env.write(&root.join("agents/dev.md"), "---\nbottle: b\n---\n");
    env.write(&root.join("agents/deploy.md"), "---\nbottle: b\n---\n");
    env.write(
        &env.project.join(".claude-bottle/agents/reviewer.md"),
        "---\nbottle: b\n---\n",
    );
    std::fs::create_dir_all(root.join("state/dev-abcde")).unwrap();
    let script = env.run(&["completions", "bash"]).ok().stdout();
    // The binary's directory on PATH, as after an install: the script calls it back by name.
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Real bash: load the script, then do what pressing Tab does for each command line.
    let complete = |line: &str| -> Vec<String> {
        let driver = format!(
            "{script}\nCOMP_LINE={line:?}; read -ra COMP_WORDS <<< \"$COMP_LINE\"; \
             [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=(''); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); \
             COMP_TYPE=9; _clap_complete_claude_bottle claude-bottle \"${{COMP_WORDS[COMP_CWORD]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(driver)
            .current_dir(&env.project)
            .env_clear()
            .env("HOME", &env.home)
            .env("PATH", &path)
            .output()
            .expect("bash is needed for this test: apt-get install bash");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let subcommands = complete("claude-bottle st");
    assert!(subcommands.contains(&"start".to_owned()), "{subcommands:?}");
    assert!(subcommands.contains(&"stop".to_owned()), "{subcommands:?}");
    assert_eq!(
        complete("claude-bottle start de"),
        ["deploy", "dev"],
        "agents of the manifest home"
    );
    assert!(
        complete("claude-bottle info ").contains(&"reviewer".to_owned()),
        "the project's agents too"
    );
    // An empty word gets the command's flags too; the only value offered is the bottle.
    let values: Vec<String> = complete("claude-bottle attach ")
        .into_iter()
        .filter(|w| !w.starts_with('-'))
        .collect();
    assert_eq!(values, ["dev-abcde"]);
    assert_eq!(complete("claude-bottle stop d"), ["dev-abcde"]);
}

#[test]
fn bad_manifest_exits_3_naming_file_line_key() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let bottle = env.root().join("bottles/example.md");
    env.write(
        &bottle,
        "---\nenv:\n  A: b\negress:\n  allowlist: [api.github.com]\n---\n",
    );
    let run = env.run(&["start", "example", "--dry-run"]);
    assert_eq!(run.code(), 3, "{}", run.all());
    let want = format!("error: {}:5: `egress.allowlist`: ", bottle.display());
    assert!(run.stderr().starts_with(&want), "{}", run.stderr());
    assert!(run.stderr().contains("egress.routes"), "{}", run.stderr());
    assert_eq!(run.stdout(), "");
}

/// A header the bundle could never send a credential in (`te` is hop-by-hop) fails at
/// `--dry-run` with the manifest's location, not at start with a crash-looping bundle.
#[test]
fn a_route_the_bundle_would_refuse_fails_the_dry_run_naming_file_line_key() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let bottle = env.root().join("bottles/example.md");
    for header in ["te", "keep-alive", "Upgrade", "cookie"] {
        env.write(
            &bottle,
            &format!(
                "---\negress:\n  routes:\n    - host: api.example.com\n      auth: {{scheme: header, header: {header}, token_ref: EX_KEY}}\n---\n"
            ),
        );
        let run = env.run(&["start", "example", "--dry-run"]);
        assert_eq!(run.code(), 3, "{}", run.all());
        let want = format!(
            "error: {}:5: `egress.routes[0].auth.header`: `{header}` cannot carry a credential",
            bottle.display()
        );
        assert!(run.stderr().starts_with(&want), "{}", run.stderr());
        assert_eq!(run.stdout(), "");
    }
}

#[test]
fn missing_agent_exits_3() {
    let env = Env::new();
    let run = env.run(&["info", "nobody"]);
    assert_eq!(run.code(), 3, "{}", run.all());
    assert!(
        run.stderr().contains("no agent named `nobody`"),
        "{}",
        run.stderr()
    );
}

#[test]
fn stale_json_exits_3_with_migration_hint() {
    let env = Env::new();
    env.run(&["init"]).ok();
    env.write(&env.home.join("claude-bottle.json"), "{}");
    let run = env.run(&["start", "example", "--dry-run"]);
    assert_eq!(run.code(), 3, "{}", run.all());
    assert!(
        run.stderr().contains("stale claude-bottle.json"),
        "{}",
        run.stderr()
    );
}

#[test]
fn project_bottles_are_ignored_with_a_warning() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let evil = "---\negress:\n  routes:\n    - host: evil.test\n---\n";
    env.write(&env.project.join(".claude-bottle/bottles/example.md"), evil);
    let out = env.run(&["start", "example", "--dry-run"]).ok().stdout();
    assert!(!out.contains("evil.test"), "{out}");
    assert!(out.contains("api.github.com"), "{out}");
    assert!(
        out.contains("warnings:\n  - ignoring ") && out.contains("project/.claude-bottle/bottles"),
        "{out}"
    );
}

#[test]
fn project_agent_and_cwd_flag() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let other = env.home.join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    env.write(
        &env.project.join(".claude-bottle/agents/local.md"),
        "---\nbottle: example\ncommand: echo hi\n---\nLocal.\n",
    );
    // Found from the project dir, and with --cwd from anywhere else.
    env.run(&["info", "local"]).ok();
    let project = env.project.display().to_string();
    let out = env
        .run(&["start", "local", "--dry-run", "--cwd", &project])
        .ok()
        .stdout();
    assert!(out.contains("command    /bin/sh -c 'echo hi'"), "{out}");
}

#[test]
fn claude_bottle_home_overrides_the_manifest_home() {
    let env = Env::new();
    let alt = env.home.join("alt");
    let alt_s = alt.display().to_string();
    let out = env
        .run_with(&["init"], &[("CLAUDE_BOTTLE_HOME", &alt_s)])
        .ok()
        .stdout();
    assert!(out.contains(&alt_s), "{out}");
    assert!(alt.join("bottles/example.md").is_file());
    assert!(!env.root().exists());
    env.run_with(
        &["start", "example", "--dry-run"],
        &[("CLAUDE_BOTTLE_HOME", &alt_s)],
    )
    .ok();
}

#[test]
fn start_resolves_secrets_then_stops_before_docker_when_the_bundle_binary_is_missing() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "sk-ant-oat01-SECRETVALUE")],
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stdout().starts_with("Preflight plan"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr()
            .contains("resolved 2 env values and 1 route token"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains(&format!(
            "CLAUDE_BOTTLE_BUNDLE_BIN={NO_BUNDLE_BIN} is not a file"
        )),
        "{}",
        run.stderr()
    );
}

#[test]
fn start_without_tty_or_yes_refuses_to_guess() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let run = env.run_with(&["start", "example"], &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.stderr().contains("pass -y"), "{}", run.stderr());
}

#[test]
fn start_without_the_claude_credential_refuses_before_asking() {
    let env = Env::new();
    env.run(&["init"]).ok();
    // No -y: were it asked, the question would come first (and fail here, with no terminal).
    let run = env.run(&["start", "example"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stderr().contains(
            "route `api.anthropic.com`: its token comes from the host variable `CLAUDE_BOTTLE_OAUTH_TOKEN`, which is not set"
        ),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("[y/N]"), "{}", run.all());
}

#[test]
fn start_errors_name_unset_variables_and_prompts_without_tty() {
    let env = Env::new();
    env.run(&["init"]).ok();
    let bottle = env.root().join("bottles/example.md");
    env.write(&bottle, "---\nenv:\n  GITHUB_TOKEN: \"${GH_PAT}\"\n---\n");
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    let want = format!(
        "{}:3: `env.GITHUB_TOKEN`: host variable `GH_PAT` is not set (or empty)",
        bottle.display()
    );
    assert!(run.stderr().contains(&want), "{}", run.stderr());

    env.write(&bottle, "---\nenv:\n  GITEA_TOKEN: \"?paste it\"\n---\n");
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stderr().contains(
            "`env.GITEA_TOKEN` asks for a value on the terminal, but stdin is not a terminal"
        ),
        "{}",
        run.stderr()
    );

    // A route token that is unset names the route and the variable.
    env.write(
        &bottle,
        "---\negress:\n  routes:\n    - host: api.github.com\n      auth: {scheme: Bearer, token_ref: GH_PAT}\n---\n",
    );
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.stderr().contains("route `api.github.com`: its token comes from the host variable `GH_PAT`, which is not set (or empty)"),
        "{}",
        run.stderr()
    );
}

/// Secret values given to the real binary never show up in anything it prints, even with
/// trace logging on.
#[test]
fn no_secret_value_in_any_output() {
    let env = Env::new();
    env.run(&["init"]).ok();
    env.write(
        &env.root().join("bottles/example.md"),
        "---\nenv:\n  GITHUB_TOKEN: \"${GH_PAT}\"\n  PASTED: literal-SECRET-4\negress:\n  routes:\n    - host: api.github.com\n      auth: {scheme: Bearer, token_ref: GH_PAT}\n    - host: api.linear.app\n      auth: {scheme: header, header: x-api-key, token_ref: LINEAR}\n---\n",
    );
    let vars = [
        ("GH_PAT", "ghp-SECRET-1"),
        ("LINEAR", "lin-SECRET-2"),
        ("CLAUDE_BOTTLE_OAUTH_TOKEN", "sk-ant-SECRET-3"),
        ("CLAUDE_BOTTLE_LOG", "trace"),
    ];
    let mut seen = String::new();
    for args in [
        &["start", "example", "--dry-run"][..],
        &["start", "example", "--dry-run", "--json"],
        &["start", "example", "-y"],
        &["info", "example"],
    ] {
        let run = env.run_with(args, &vars);
        seen.push_str(&run.all());
    }
    // The runs did see the variables (so the check is not vacuous).
    assert!(seen.contains("auth Bearer from $GH_PAT (set)"), "{seen}");
    assert!(
        seen.contains("resolved 2 env values and 3 route tokens"),
        "{seen}"
    );
    assert!(!seen.contains("SECRET"), "a secret leaked:\n{seen}");
}

#[track_caller]
fn assert_identity(identity: &str) {
    let suffix = identity
        .strip_prefix("example-")
        .unwrap_or_else(|| panic!("{identity}"));
    assert_eq!(suffix.len(), 5, "{identity}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()),
        "{identity}"
    );
}

/// How long the pty test waits for each expected prompt.
const PROMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A `?prompt` value is asked on the terminal and never echoed. `script` (util-linux) gives the
/// binary a real pseudo-terminal; the test answers each prompt once it appears.
#[test]
fn prompt_on_a_real_tty_is_not_echoed() {
    use std::io::{Read, Write};
    use std::sync::mpsc;

    let env = Env::new();
    env.run(&["init"]).ok();
    env.write(
        &env.root().join("bottles/example.md"),
        "---\nenv:\n  GITEA_TOKEN: \"?paste your token\"\n---\n",
    );
    let mut child = Command::new("script")
        .args(["-qec", &format!("{BIN} start example"), "/dev/null"])
        .current_dir(&env.project)
        .env_clear()
        .env("HOME", &env.home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")
        .env("CLAUDE_BOTTLE_BUNDLE_BIN", NO_BUNDLE_BIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` is needed for this test: apt-get install bsdutils");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |want: &str, seen: &mut String| {
        let deadline = std::time::Instant::now() + PROMPT_TIMEOUT;
        while !seen.contains(want) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("no {want:?} in:\n{seen}"),
            }
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    wait_for("[y/N] ", &mut seen);
    stdin.write_all(b"y\n").unwrap();
    wait_for("paste your token (GITEA_TOKEN): ", &mut seen);
    stdin.write_all(b"typed-SECRET-9\n").unwrap();
    wait_for("is not a file", &mut seen);
    drop(stdin);
    child.wait().unwrap();
    while let Ok(chunk) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The terminal echoes normally (the `y` shows), but not the secret.
    assert!(seen.contains("[y/N] y"), "{seen}");
    assert!(
        seen.contains("resolved 1 env value and 1 route token"),
        "{seen}"
    );
    assert!(!seen.contains("SECRET"), "the secret was echoed:\n{seen}");
}

#[test]
fn start_refuses_missing_skill_and_key_files() {
    let env = Env::new();
    env.run(&["init"]).ok();
    env.write(
        &env.root().join("agents/example.md"),
        "---\nbottle: example\nskills: [nope]\n---\n",
    );
    let dry = env.run(&["start", "example", "--dry-run"]).ok().stdout();
    assert!(dry.contains("skill `nope`:"), "{dry}");
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
    );
    assert_eq!(run.code(), 1, "{}", run.all());
    let want = format!("{}", env.home.join(".claude/skills/nope").display());
    assert!(run.stderr().contains(&want), "{}", run.stderr());
    // Once the skill exists, the start gets past the check.
    std::fs::create_dir_all(env.home.join(".claude/skills/nope")).unwrap();
    let run = env.run_with(
        &["start", "example", "-y"],
        &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
    );
    assert!(run.stderr().contains("is not a file"), "{}", run.stderr());
}

#[test]
fn resume_refuses_a_bottle_without_state_or_not_suspended() {
    let env = Env::new();
    let run = env.run(&["resume", "dev-zzzzz", "-y"]);
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr()
            .contains("no saved state for bottle `dev-zzzzz`"),
        "{}",
        run.all()
    );
    assert!(run.stderr().contains("claude-bottle list"), "{}", run.all());

    // A running (not suspended) bottle's state.
    let state = env.root().join("state/dev-run00");
    std::fs::create_dir_all(&state).unwrap();
    env.write(
        &state.join("metadata.json"),
        r#"{"identity":"dev-run00","agent":"dev","bottle":"b","started":1,
            "agent_container":"a","bundle_container":"bu","agent_image":"ai",
            "bundle_image":"bi","detached":true,"launcher_pid":1}"#,
    );
    let run = env.run(&["resume", "dev-run00", "-y"]);
    assert_eq!(run.code(), 1);
    assert!(run.stderr().contains("is not suspended"), "{}", run.all());
    assert!(
        run.stderr().contains("claude-bottle attach dev-run00"),
        "{}",
        run.all()
    );

    // Suspended, but the saved Dockerfile is gone.
    env.write(
        &state.join("metadata.json"),
        r#"{"identity":"dev-run00","agent":"dev","bottle":"b","started":1,
            "agent_container":"a","bundle_container":"bu","agent_image":"ai",
            "bundle_image":"bi","detached":true,"launcher_pid":1,"suspended":true,
            "project":"/"}"#,
    );
    let run = env.run(&["resume", "dev-run00", "-y"]);
    assert_eq!(run.code(), 1);
    assert!(run.stderr().contains("agent.Dockerfile"), "{}", run.all());
    assert!(
        state.join("metadata.json").exists(),
        "a refused resume keeps the state"
    );
}

/// Runs `f` on a thread; fails if it takes more than 20 s (a launcher blocked on a FIFO or
/// reading `/dev/zero` fails the test instead of hanging it).
fn within_20s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the launcher did not finish within 20 s")
}

#[test]
fn start_refuses_unusable_ca_and_key_files_before_asking_for_secrets() {
    let env = std::sync::Arc::new(Env::new());
    env.run(&["init"]).ok();
    let fifo = env.home.join("key.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let bottle = env.root().join("bottles/example.md");
    let write_bottle = |ca: &str, key: &str| {
        env.write(
            &bottle,
            &format!(
                "---\nenv:\n  T: \"?token\"\ngit:\n  - Name: app\n    Upstream: ssh://git@h.test/a.git\n    IdentityFile: {key}\negress:\n  extra_ca: {ca}\n---\n"
            ),
        );
    };
    write_bottle("/dev/zero", &fifo.display().to_string());
    let file = bottle.display().to_string();
    let ca_error = format!(
        "{file}:9: `egress.extra_ca`: /dev/zero is a character device, not a regular file; name a PEM file"
    );
    let key_error = format!(
        "{file}:7: `git[0].IdentityFile`: {} is a FIFO, not a regular file; name the unencrypted private key",
        fifo.display()
    );

    let e = env.clone();
    let dry = within_20s(move || e.run(&["start", "example", "--dry-run"]).ok().stdout());
    assert!(dry.contains(&ca_error), "{dry}");
    assert!(dry.contains(&key_error), "{dry}");

    let e = env.clone();
    let run = within_20s(move || {
        e.run_with(
            &["start", "example", "-y"],
            &[("CLAUDE_BOTTLE_OAUTH_TOKEN", "x")],
        )
    });
    assert_eq!(run.code(), 3, "{}", run.all());
    assert!(run.stderr().contains(&ca_error), "{}", run.stderr());
    // Refused before the prompt for `T` (no terminal here, which would be the error).
    assert!(!run.stderr().contains("`env.T`"), "{}", run.stderr());

    // `/proc/self/environ` would copy the launcher's environment: refused, never shown.
    let key = env.home.join("id");
    std::fs::write(&key, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ user@host\n").unwrap();
    write_bottle("/proc/self/environ", &key.display().to_string());
    let e = env.clone();
    let run = within_20s(move || {
        e.run_with(
            &["start", "example", "--dry-run"],
            &[("CANARY", "environ-canary-value")],
        )
    });
    assert!(
        run.stdout().contains("/proc/self/environ is on procfs"),
        "{}",
        run.all()
    );
    assert!(run.stdout().contains("it is a public key"), "{}", run.all());
    assert!(!run.all().contains("environ-canary-value"), "{}", run.all());
}

#[test]
fn a_project_agent_cannot_drive_the_terminal_through_info_or_the_plan() {
    let env = Env::new();
    env.run(&["init"]).ok();
    // A cloned repository's agent file, with escape sequences in what the plan shows.
    env.write(
        &env.project.join(".claude-bottle/agents/evil.md"),
        "---\nbottle: example\ndescription: \"ok\\e[2K\\u202e\"\nmodel: \"m\\e]52;c;eA==\\a\"\ncommand: \"echo \\e]52;c;eA==\\a\\r\"\n---\nPrompt \u{1b}[8mhidden\n",
    );
    for args in [&["info", "evil"][..], &["start", "evil", "--dry-run"]] {
        let run = env.run(args).ok();
        let out = run.all();
        let raw = out
            .chars()
            .find(|c| (c.is_control() && !matches!(c, '\n' | '\t')) || *c == '\u{202e}');
        assert!(raw.is_none(), "{args:?} printed a raw {raw:?}:\n{out}");
        assert!(out.contains(r"\u{1b}]52;c;eA==\u{7}"), "{out}");
    }
}
