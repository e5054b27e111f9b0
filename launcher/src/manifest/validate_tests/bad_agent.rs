//! Bad agents: each error names the file, the line and the key.

use expect_test::expect;

use super::*;

#[test]
fn bad_agent_missing_bottle() {
    check_agent(
        "model: opus\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:2: `bottle`: missing required key: name the bottle this agent runs in, e.g. `bottle: example` (a file ~/.claude-bottle/bottles/example.md)"#
        ]],
    );
}

#[test]
fn bad_agent_bottle_name() {
    check_agent(
        "bottle: ../../etc/passwd\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:2: `bottle`: `../../etc/passwd` is not a bottle name: names match [a-z][a-z0-9-]* (the file ~/.claude-bottle/bottles/<name>.md)"#
        ]],
    );
}

#[test]
fn bad_agent_unknown_key_suggests() {
    check_agent(
        "bottle: b\nskill: [x]\n",
        expect![
            "/h/.claude-bottle/agents/a.md:3: `skill`: unknown key; allowed keys here: bottle, skills, command, name, description, model, tools, color, permissionMode (did you mean `skills`?)"
        ],
    );
}

#[test]
fn bad_agent_skill_path() {
    check_agent(
        "bottle: b\nskills: [\"../secrets\"]\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:3: `skills[0]`: `../secrets` is not a skill name: use the directory name under ~/.claude/skills/ (letters, digits, `.`, `_`, `-`; no `/`)"#
        ]],
    );
}

#[test]
fn bad_agent_empty_command() {
    check_agent(
        "bottle: b\ncommand: []\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:3: `command`: must not be empty; omit `command` to run `claude`"#
        ]],
    );
}

#[test]
fn bad_agent_command_type() {
    check_agent(
        "bottle: b\ncommand: {run: x}\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:3: `command`: expected a string (run by /bin/sh -c) or a list (argv), found a mapping"#
        ]],
    );
}

#[test]
fn bad_agent_tools_type() {
    check_agent(
        "bottle: b\ntools: 3\n",
        expect![[
            r#"/h/.claude-bottle/agents/a.md:3: `tools`: expected a string or a list of strings, found a number"#
        ]],
    );
}

#[test]
fn bad_agent_legacy_bottle_keys_are_unknown() {
    check_agent(
        "bottle: b\nenv: {A: b}\n",
        expect![
            "/h/.claude-bottle/agents/a.md:3: `env`: unknown key; allowed keys here: bottle, skills, command, name, description, model, tools, color, permissionMode"
        ],
    );
}

#[test]
fn bad_agent_permission_mode() {
    check_agent(
        "bottle: b\npermissionMode: yolo\n",
        expect![
            "/h/.claude-bottle/agents/a.md:3: `permissionMode`: `yolo` is not a Claude Code permission mode: use one of bypassPermissions, acceptEdits, default, plan, auto, dontAsk (default bypassPermissions in a bottle)"
        ],
    );
}
