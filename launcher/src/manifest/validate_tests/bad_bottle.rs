//! Bad bottles: each error names the file, the line and the key.

use std::path::Path;

use expect_test::expect;

use super::*;

#[test]
fn bad_no_frontmatter() {
    let got = parse_bottle(Path::new(BOTTLE_FILE), "b", "# just markdown\n")
        .unwrap_err()
        .to_string();
    expect![[r#"/h/.claude-bottle/bottles/b.md:1: `frontmatter`: no YAML frontmatter: the file must start with a line `---`, then the YAML keys, then a closing `---`"#]].assert_eq(&got);
}

#[test]
fn bad_unclosed_frontmatter() {
    let got = parse_bottle(Path::new(BOTTLE_FILE), "b", "---\nenv: {}\n")
        .unwrap_err()
        .to_string();
    expect![[r#"/h/.claude-bottle/bottles/b.md:1: `frontmatter`: the YAML frontmatter opened on line 1 is never closed with a line `---`"#]].assert_eq(&got);
}

#[test]
fn bad_yaml_syntax() {
    check_bottle(
        "env:\n  A: [unclosed\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `frontmatter`: invalid YAML: unclosed bracket '['"
        ],
    );
}

#[test]
fn bad_frontmatter_not_a_mapping() {
    check_bottle(
        "- a\n- b\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `frontmatter`: expected a mapping of keys, found a list"#
        ]],
    );
}

#[test]
fn bad_duplicate_key() {
    check_bottle(
        "supervise: true\nsupervise: false\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `supervise`: written twice (first on line 2); keep one"
        ],
    );
}

#[test]
fn bad_unknown_top_key_suggests() {
    check_bottle(
        "egres:\n  routes: []\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `egres`: unknown key; allowed keys here: env, git, egress, supervise, limits (did you mean `egress`?)"#
        ]],
    );
}

#[test]
fn bad_unknown_key_without_close_match() {
    check_bottle(
        "zzz: 1\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `zzz`: unknown key; allowed keys here: env, git, egress, supervise, limits"#
        ]],
    );
}

#[test]
fn bad_legacy_tokens() {
    check_bottle(
        "tokens:\n  GH: x\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `tokens`: `tokens` was removed: give each credential to the route that needs it, `egress.routes[].auth: {scheme: Bearer, token_ref: HOST_VAR}` (the bundle injects it, the agent never holds it); see the README's manifest reference"#
        ]],
    );
}

#[test]
fn bad_legacy_cred_proxy() {
    check_bottle(
        "supervise: true\ncred_proxy: {}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `cred_proxy`: `cred_proxy` was removed: credentials are injected per route by the bundle, `egress.routes[].auth`; see the README's manifest reference"#
        ]],
    );
}

#[test]
fn bad_legacy_egress_proxy() {
    check_bottle(
        "egress_proxy: true\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `egress_proxy`: `egress_proxy` was removed: the bundle is always the egress proxy; list allowed hosts under `egress.routes` (`- host: NAME`)"#
        ]],
    );
}

#[test]
fn bad_legacy_egress_allowlist() {
    check_bottle(
        "egress:\n  allowlist: [api.github.com]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `egress.allowlist`: `egress.allowlist` was replaced by `egress.routes`: write each host as `- host: NAME` (with optional `path_allowlist` and `auth`)"#
        ]],
    );
}

#[test]
fn bad_legacy_ssh() {
    check_bottle(
        "ssh:\n  - host: x\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `ssh`: `ssh` was removed: git over SSH goes through the bundle's git gate; declare each remote under `git:` with Name, Upstream, IdentityFile and KnownHostKey"#
        ]],
    );
}

#[test]
fn bad_legacy_runtime() {
    check_bottle(
        "runtime: runsc\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `runtime`: `runtime` was removed: the launcher uses gVisor (`runsc`) by itself when Docker has it registered; delete the key"#
        ]],
    );
}

#[test]
fn bad_env_not_a_mapping() {
    check_bottle(
        "env: [A, B]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `env`: expected a mapping of keys, found a list"#
        ]],
    );
}

#[test]
fn bad_env_name() {
    check_bottle(
        "env:\n  1ABC: x\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.1ABC`: not a valid environment variable name: use letters, digits and `_`, not starting with a digit"#
        ]],
    );
}

#[test]
fn bad_env_reserved_name() {
    check_bottle(
        "env:\n  HTTPS_PROXY: http://evil.test\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.HTTPS_PROXY`: the launcher sets this variable itself (proxy, CA trust or the Claude placeholder); remove it from `env`"#
        ]],
    );
}

#[test]
fn bad_env_value_is_a_list() {
    check_bottle(
        "env:\n  A:\n    - x\n",
        expect![[r#"/h/.claude-bottle/bottles/b.md:4: `env.A`: expected a string, found a list"#]],
    );
}

#[test]
fn bad_env_value_empty() {
    check_bottle(
        "env:\n  A:\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.A`: expected a string, found an empty value"#
        ]],
    );
}

#[test]
fn bad_env_hostvar_syntax() {
    check_bottle(
        "env:\n  A: \"${not-a-name}\"\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.A`: `${not-a-name}` does not name a host variable: write `${NAME}` with letters, digits and `_`"#
        ]],
    );
}

#[test]
fn bad_env_partial_interpolation() {
    check_bottle(
        "env:\n  A: \"Bearer ${TOKEN}\"\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.A`: `${…}` must be the whole value (`"${NAME}"` copies host variable NAME); other text around it is not expanded"#
        ]],
    );
}

#[test]
fn bad_env_claude_credential() {
    check_bottle(
        "env:\n  T: \"${CLAUDE_BOTTLE_OAUTH_TOKEN}\"\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `env.T`: the Claude credential `CLAUDE_BOTTLE_OAUTH_TOKEN` is never given to the agent: the bundle injects it on the api.anthropic.com route; remove this entry"#
        ]],
    );
}

#[test]
fn bad_supervise_not_bool() {
    check_bottle(
        "supervise: \"yes\"\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `supervise`: expected `true` or `false`, found a string"#
        ]],
    );
}

#[test]
fn bad_egress_dlp_value() {
    check_bottle(
        "egress:\n  dlp: warn\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `egress.dlp`: `warn` is not one of block, log, off"
        ],
    );
}

#[test]
fn bad_egress_not_a_mapping() {
    check_bottle(
        "egress: [api.github.com]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `egress`: expected a mapping of keys, found a list"#
        ]],
    );
}

#[test]
fn bad_routes_not_a_list() {
    check_bottle(
        "egress:\n  routes: {host: a.test}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `egress.routes`: expected a list, found a mapping"#
        ]],
    );
}

#[test]
fn bad_route_unknown_key() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      paths: [/x]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].paths`: unknown key; allowed keys here: host, path_allowlist, auth"#
        ]],
    );
}

#[test]
fn bad_route_missing_host() {
    check_bottle(
        "egress:\n  routes:\n    - path_allowlist: [/x]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: missing required key: every route names its `host`"#
        ]],
    );
}

#[test]
fn bad_route_host_with_scheme() {
    check_bottle(
        "egress:\n  routes:\n    - host: https://api.github.com\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: `https://api.github.com` must be a bare host name such as api.github.com (no scheme or path)"#
        ]],
    );
}

#[test]
fn bad_route_host_ip_literal() {
    check_bottle(
        "egress:\n  routes:\n    - host: 10.0.0.1\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: `10.0.0.1` is an IP address; routes name hosts (the proxy refuses IP literals)"#
        ]],
    );
}

#[test]
fn bad_route_host_port() {
    check_bottle(
        "egress:\n  routes:\n    - host: api.github.com:8443\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: `api.github.com:8443` must be a bare host name without a port (routes are for HTTPS on 443)"#
        ]],
    );
}

#[test]
fn bad_route_host_uppercase() {
    check_bottle(
        "egress:\n  routes:\n    - host: API.github.com\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: `API.github.com` must be lowercase: write `api.github.com`"#
        ]],
    );
}

#[test]
fn bad_route_host_deep_wildcard() {
    check_bottle(
        "egress:\n  routes:\n    - host: \"*.*.example.com\"\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: `*.*.example.com` is not a valid host name (labels of a-z, 0-9 and `-`, at least two, optionally starting with `*.`)"#
        ]],
    );
}

#[test]
fn bad_route_duplicate_host() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n    - host: a.test\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[1].host`: host `a.test` already has a route above; merge the two entries"#
        ]],
    );
}

#[test]
fn bad_path_not_absolute() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [repos/]\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `repos/` must start with `/`, e.g. /repos/alice/"
        ],
    );
}

#[test]
fn bad_path_dot_segment() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [\"/v1/../admin\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `/v1/../admin` contains a `.` or `..` segment"#
        ]],
    );
}

#[test]
fn bad_path_dot_segment_with_parameters() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [\"/v1/..;x/admin\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `/v1/..;x/admin` contains a `.` or `..` segment"#
        ]],
    );
}

#[test]
fn bad_path_control_characters_are_escaped_in_the_message() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [\"/v1/\\0\\e[2J\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `/v1/\u{0}\u{1b}[2J` must be a plain path prefix: no query, fragment, backslash, whitespace, control or invisible formatting character"#
        ]],
    );
}

#[test]
fn bad_path_bidi_override_is_refused_and_escaped() {
    // U+202E would make `/v1/nimda` read as `/v1/admin` in the plan and the dashboard.
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [\"/v1/\\u202Enimda\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `/v1/\u{202e}nimda` must be a plain path prefix: no query, fragment, backslash, whitespace, control or invisible formatting character"#
        ]],
    );
}

#[test]
fn bad_path_percent() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      path_allowlist: [\"/a%2fb\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].path_allowlist[0]`: `/a%2fb` contains `%`: write the decoded path, the proxy compares decoded paths"#
        ]],
    );
}

#[test]
fn bad_auth_unknown_scheme() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: Digest, token_ref: T}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.scheme`: unknown scheme `Digest`; use one of Bearer, token, Basic, header"#
        ]],
    );
}

#[test]
fn bad_auth_scheme_in_another_case() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: bearer, token_ref: T}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.scheme`: scheme `bearer` is spelled `Bearer`: write `scheme: Bearer`"#
        ]],
    );
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: Token, token_ref: T}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.scheme`: scheme `Token` is spelled `token`: write `scheme: token`"#
        ]],
    );
}

#[test]
fn bad_auth_missing_token_ref() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: Bearer}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.token_ref`: missing required key: the HOST environment variable holding the token, e.g. `token_ref: GH_PAT`"#
        ]],
    );
}

#[test]
fn bad_auth_token_value_instead_of_name() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: Bearer, token_ref: \"ghp_abc-123\"}\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.token_ref`: must name a host environment variable in upper case (A-Z, 0-9, `_`, e.g. GH_PAT), not hold the token itself"
        ],
    );
}

#[test]
fn bad_auth_unknown_key_suggests() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth:\n        scheme: Bearer\n        token: T\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:7: `egress.routes[0].auth.token`: unknown key; allowed keys here: scheme, token_ref, header (did you mean `token_ref`?)"#
        ]],
    );
}

#[test]
fn bad_auth_header_scheme_without_name() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: header, token_ref: T}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.header`: missing required key: scheme `header` needs the header's name, e.g. `header: x-api-key`"#
        ]],
    );
}

#[test]
fn bad_auth_header_with_bearer() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: Bearer, header: x-api-key, token_ref: T}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.header`: `header` is only used with `scheme: header`, not `Bearer`"#
        ]],
    );
}

#[test]
fn bad_auth_header_forbidden() {
    check_bottle(
        "egress:\n  routes:\n    - host: a.test\n      auth: {scheme: header, header: Host, token_ref: T}\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:5: `egress.routes[0].auth.header`: `Host` cannot carry a credential (it is framing, hop-by-hop or read as something else); use the header the API expects, such as `x-api-key`"
        ],
    );
}

#[test]
fn bad_git_not_a_list() {
    check_bottle(
        "git:\n  Name: app\n",
        expect![[r#"/h/.claude-bottle/bottles/b.md:3: `git`: expected a list, found a mapping"#]],
    );
}

#[test]
fn bad_git_key_case_suggests() {
    check_bottle(
        "git:\n  - name: app\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `git[0].name`: unknown key; allowed keys here: Name, Upstream, IdentityFile, KnownHostKey, ExtraHosts, AllowDelete, AllowForcePush, MaxPushMB (did you mean `Name`?)"
        ],
    );
}

#[test]
fn bad_git_missing_upstream() {
    check_bottle(
        "git:\n  - Name: app\n    IdentityFile: ~/.ssh/k\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `git[0].Upstream`: missing required key: the real repository, e.g. ssh://git@host:22/owner/repo.git"#
        ]],
    );
}

#[test]
fn bad_git_https_upstream() {
    check_bottle(
        "git:\n  - Name: app\n    Upstream: https://github.com/a/b.git\n    IdentityFile: k\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[0].Upstream`: `https://github.com/a/b.git` is not an ssh:// URL; write it as ssh://user@host[:port]/path.git (the gate pushes over SSH)"#
        ]],
    );
}

#[test]
fn bad_git_max_push_mb() {
    let remote = "git:\n  - Name: app\n    Upstream: ssh://git@h/a.git\n    IdentityFile: k\n";
    check_bottle(
        &format!("{remote}    MaxPushMB: 0\n"),
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:6: `git[0].MaxPushMB`: 0 is out of range: a whole number of MiB from 1 to 2048 (default 100)"#
        ]],
    );
    check_bottle(
        &format!("{remote}    MaxPushMB: 500MB\n"),
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:6: `git[0].MaxPushMB`: expected a whole number of MiB, e.g. `MaxPushMB: 500`, found a string"#
        ]],
    );
}

#[test]
fn bad_git_name() {
    check_bottle(
        "git:\n  - Name: ../etc\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `git[0].Name`: `../etc` is not a remote name: use letters, digits, `.`, `_`, `-` (it becomes git://git-gate/<Name>.git)"#
        ]],
    );
}

#[test]
fn bad_git_duplicate_name() {
    check_bottle(
        "git:\n  - {Name: app, Upstream: \"ssh://h/a.git\", IdentityFile: k}\n  - {Name: app, Upstream: \"ssh://h/b.git\", IdentityFile: k}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[1].Name`: remote `app` is declared twice; each Name is served once as git://git-gate/<Name>.git"#
        ]],
    );
}

#[test]
fn bad_git_host_key() {
    check_bottle(
        "git:\n  - Name: app\n    KnownHostKey: AAAAC3NzaC1lZDI1NTE5\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[0].KnownHostKey`: expected `<type> <base64 key>`, e.g. the second and third field of a known_hosts line (`ssh-keyscan HOST`)"#
        ]],
    );
}

#[test]
fn bad_git_host_key_type() {
    check_bottle(
        "git:\n  - Name: app\n    KnownHostKey: ssh-dss AAAAC3NzaC1lZDI1NTE5AAAA\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[0].KnownHostKey`: unknown host key type `ssh-dss`; expected one of ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa"#
        ]],
    );
    // A security-key host key: OpenSSH knows it, the gate's client cannot verify it.
    check_bottle(
        "git:\n  - Name: app\n    KnownHostKey: sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[0].KnownHostKey`: unknown host key type `sk-ssh-ed25519@openssh.com`; expected one of ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa"#
        ]],
    );
}

#[test]
fn bad_git_allow_delete_not_a_bool() {
    check_bottle(
        "git:\n  - Name: app\n    AllowDelete: \"yes\"\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `git[0].AllowDelete`: expected `true` or `false`, found a string"
        ],
    );
}

#[test]
fn bad_git_allow_force_push_not_a_bool() {
    check_bottle(
        "git:\n  - Name: app\n    AllowForcePush: [true]\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `git[0].AllowForcePush`: expected `true` or `false`, found a list"
        ],
    );
}

#[test]
fn bad_git_allow_key_spelling_suggests() {
    check_bottle(
        "git:\n  - Name: app\n    allow_force_push: true\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `git[0].allow_force_push`: unknown key; allowed keys here: Name, Upstream, IdentityFile, KnownHostKey, ExtraHosts, AllowDelete, AllowForcePush, MaxPushMB (did you mean `AllowForcePush`?)"
        ],
    );
}

#[test]
fn bad_git_extra_hosts_address() {
    check_bottle(
        "git:\n  - Name: app\n    ExtraHosts: {gitea.example.com: not-an-ip}\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:4: `git[0].ExtraHosts.gitea.example.com`: `not-an-ip` is not an IP address"#
        ]],
    );
}

#[test]
fn errors_never_echo_literal_env_values() {
    // A bad entry next to a literal secret: the message names the key only.
    let text = "---\nenv:\n  TOKEN: ghp_supersecret123\n  HTTPS_PROXY: ghp_supersecret123\n---\n";
    let err = parse_bottle(Path::new(BOTTLE_FILE), "b", text)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("ghp_supersecret"), "{err}");
    let text = "---\nenv:\n  TOKEN: [ghp_supersecret123\n---\n";
    let err = parse_bottle(Path::new(BOTTLE_FILE), "b", text)
        .unwrap_err()
        .to_string();
    assert!(!err.contains("ghp_supersecret"), "{err}");
}

#[test]
fn bad_duplicate_nested_key() {
    check_bottle(
        "env:\n  A: x\n  A: y\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `env.A`: written twice (first on line 3); keep one"
        ],
    );
}

#[test]
fn bad_git_extra_hosts_wildcard() {
    check_bottle(
        "git:\n  - Name: app\n    ExtraHosts: {\"*.example.com\": 10.0.0.1}\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `git[0].ExtraHosts.*.example.com`: a wildcard cannot map to one address; name the host"
        ],
    );
}

#[test]
fn bad_non_string_key() {
    check_bottle(
        "env:\n  1: x\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `env.1`: not a valid environment variable name: use letters, digits and `_`, not starting with a digit"
        ],
    );
}

#[test]
fn bad_env_float_value() {
    check_bottle(
        "env:\n  VERSION: 1.10\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `env.VERSION`: a decimal number would be rewritten (1.10 becomes 1.1); quote the value to keep it exactly"
        ],
    );
}

#[test]
fn crlf_files_parse_with_the_same_lines() {
    let text = "---\r\nenv:\r\n  A: x\r\nsupervise: 1\r\n---\r\nbody\r\n";
    let err = parse_bottle(Path::new(BOTTLE_FILE), "b", text)
        .unwrap_err()
        .to_string();
    expect![
        "/h/.claude-bottle/bottles/b.md:4: `supervise`: expected `true` or `false`, found a number"
    ]
    .assert_eq(&err);
}

#[test]
fn leading_zero_numbers_stay_text() {
    let b = parse_bottle(Path::new(BOTTLE_FILE), "b", "---\nenv:\n  PIN: 007\n---\n").unwrap();
    match &b.env[0].source {
        EnvSource::Literal(s) => assert_eq!(s.expose(), "007"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_sections_are_empty() {
    check_bottle("env:\ngit:\negress:\n  routes:\n", expect!["ok"]);
    check_agent("bottle: b\nskills:\n", expect!["ok"]);
    check_bottle(
        "egress:\n  routes:\n    -\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:4: `egress.routes[0].host`: missing required key: every route names its `host`"
        ],
    );
}

#[test]
fn bad_allow_private_everything() {
    check_bottle(
        "egress:\n  allow_private:\n    - 10.0.0.0/8\n    - 0.0.0.0/0\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:5: `egress.allow_private[1]`: `0.0.0.0/0` is wider than /8: it would let the bundle dial private and special addresses for every route, the built-in ones too; list only the blocks your internal hosts use, e.g. 10.20.0.0/16"
        ],
    );
}

#[test]
fn bad_allow_private_metadata() {
    check_bottle(
        "egress:\n  allow_private: [\"169.254.169.254/32\"]\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `egress.allow_private[0]`: `169.254.169.254/32` takes in link-local 169.254.0.0/16, where cloud metadata services answer (169.254.169.254), which the bundle never dials; list only the blocks your internal hosts use, e.g. 10.20.0.0/16"
        ],
    );
}

#[test]
fn bad_allow_private_not_a_cidr() {
    check_bottle(
        "egress:\n  allow_private: [\"10.0.0.1\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `egress.allow_private[0]`: `10.0.0.1` is not a CIDR block; write an address block such as 10.20.0.0/16 or fd12:3456:789a::/48"#
        ]],
    );
}

#[test]
fn bad_allow_private_host_bits() {
    check_bottle(
        "egress:\n  allow_private:\n    - 10.0.0.0/8\n    - 172.17.0.1/16\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:5: `egress.allow_private[1]`: `172.17.0.1/16` has host bits set; write the block's first address (e.g. 10.20.0.0/16)"#
        ]],
    );
}

#[test]
fn bad_allow_private_prefix_too_long() {
    check_bottle(
        "egress:\n  allow_private: [\"10.0.0.0/33\"]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `egress.allow_private[0]`: `10.0.0.0/33`: the prefix length must be 0 to 32"#
        ]],
    );
}

#[test]
fn bad_extra_ca_not_a_string() {
    check_bottle(
        "egress:\n  extra_ca: [a, b]\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `egress.extra_ca`: expected a string, found a list"#
        ]],
    );
}

#[test]
fn bad_limits_not_a_mapping() {
    check_bottle(
        "limits: 4g\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:2: `limits`: expected a mapping of keys, found a string"#
        ]],
    );
}

#[test]
fn bad_limits_unknown_key_suggests() {
    check_bottle(
        "limits:\n  mem: 4g\n",
        expect![
            "/h/.claude-bottle/bottles/b.md:3: `limits.mem`: unknown key; allowed keys here: memory, pids, cpus (did you mean `memory`?)"
        ],
    );
    check_bottle(
        "limits:\n  pid: 64\n",
        expect![[
            r#"/h/.claude-bottle/bottles/b.md:3: `limits.pid`: unknown key; allowed keys here: memory, pids, cpus (did you mean `pids`?)"#
        ]],
    );
}

#[test]
fn bad_limits_memory() {
    for (yaml, want) in [
        (
            "limits:\n  memory: 4096\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: a bare number has no unit; expected a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g"#
            ]],
        ),
        (
            "limits:\n  memory: 4gb\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: `4gb` is not a size; expected a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g"#
            ]],
        ),
        (
            "limits:\n  memory: 1.5g\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: `1.5g` is not a size; expected a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g"#
            ]],
        ),
        (
            "limits:\n  memory: -1g\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: `-1g` is not a size; expected a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g"#
            ]],
        ),
        (
            "limits:\n  memory: 32m\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: `32m` is too little: at least 64m (the agent's provisioning and relay need it)"#
            ]],
        ),
        (
            "limits:\n  memory: 99999999999999g\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: `99999999999999g` is too large"#
            ]],
        ),
        (
            "limits:\n  memory: [4g]\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.memory`: expected a size: a whole number with k, m or g (KiB, MiB, GiB), e.g. 512m or 4g, found a list"#
            ]],
        ),
    ] {
        check_bottle(yaml, want);
    }
}

#[test]
fn bad_limits_pids() {
    for (yaml, want) in [
        (
            "limits:\n  pids: 8\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.pids`: 8 is too few: at least 32 (the agent's command, the relay's threads and each exec count); expected a whole number of processes, e.g. 1024"#
            ]],
        ),
        (
            "limits:\n  pids: -1\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.pids`: -1 is too few: at least 32 (the agent's command, the relay's threads and each exec count); expected a whole number of processes, e.g. 1024"#
            ]],
        ),
        (
            "limits:\n  pids: 5000000\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.pids`: 5000000 is more than Linux allows (4194304); expected a whole number of processes, e.g. 1024"#
            ]],
        ),
        (
            "limits:\n  pids: \"1024\"\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.pids`: expected a whole number of processes, e.g. 1024, found a string"#
            ]],
        ),
        (
            "limits:\n  pids: 64.5\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.pids`: expected a whole number of processes, e.g. 1024, found a number"#
            ]],
        ),
    ] {
        check_bottle(yaml, want);
    }
}

#[test]
fn bad_limits_cpus() {
    for (yaml, want) in [
        (
            "limits:\n  cpus: 0.05\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.cpus`: 0.05 is too little: at least 0.1; expected a number of CPUs, whole or decimal, e.g. 2 or 0.5"#
            ]],
        ),
        (
            "limits:\n  cpus: 0\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.cpus`: 0 is too little: at least 0.1; expected a number of CPUs, whole or decimal, e.g. 2 or 0.5"#
            ]],
        ),
        (
            "limits:\n  cpus: .inf\n",
            expect![
                "/h/.claude-bottle/bottles/b.md:3: `frontmatter`: invalid YAML: non-finite float `.inf` rejected by the configured policy"
            ],
        ),
        (
            "limits:\n  cpus: 2000\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.cpus`: 2000 is not a CPU count; expected a number of CPUs, whole or decimal, e.g. 2 or 0.5"#
            ]],
        ),
        (
            "limits:\n  cpus: \"2\"\n",
            expect![[
                r#"/h/.claude-bottle/bottles/b.md:3: `limits.cpus`: expected a number of CPUs, whole or decimal, e.g. 2 or 0.5, found a string"#
            ]],
        ),
    ] {
        check_bottle(yaml, want);
    }
}
