//! An instruction-level Dockerfile check for `capability-block`.
//!
//! The bundle only needs to know that a proposed Dockerfile *will parse* when the launcher
//! builds it, so an agent learns about a typo now rather than after the operator approved and
//! the bottle stopped. That is BuildKit's front-end grammar at the instruction level: parser
//! directives, comments, line continuations (with the `escape` directive), heredocs, known
//! instruction keywords with arguments, and "the first instruction other than ARG is FROM".
//!
//! Why no crate: the Rust Dockerfile parsers on crates.io (`dockerfile-parser`,
//! `dockerfile-parser-rs` and friends) are unmaintained or young, predate heredocs or the
//! `escape` directive, and pull a parser generator into the one binary that faces the agent.
//! This check is ~200 lines, has no dependencies and is tested against the cases we care about;
//! the real build still runs on the host with Docker's own parser.

use std::fmt;

/// The instructions Docker knows (upper case).
const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Instructions that may carry heredocs (`<<EOF`).
const HEREDOC_INSTRUCTIONS: [&str; 3] = ["RUN", "COPY", "ADD"];

/// Why a Dockerfile does not parse; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for DockerfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One parsed instruction: keyword (upper case), its argument text, and its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    pub line: usize,
}

fn error(line: usize, message: impl Into<String>) -> DockerfileError {
    DockerfileError {
        line,
        message: message.into(),
    }
}

/// Parses `text` into instructions, or says which line is wrong and why.
pub fn parse(text: &str) -> Result<Vec<Instruction>, DockerfileError> {
    if text.contains('\0') {
        return Err(error(1, "the file contains a NUL byte; send plain text"));
    }
    let lines: Vec<&str> = text.lines().collect();
    let (escape, first) = directives(&lines)?;

    let mut instructions = Vec::new();
    let mut i = first;
    while i < lines.len() {
        let raw = lines[i];
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        // Join continuation lines; comment and empty lines inside a continuation are dropped.
        let mut logical = String::new();
        let mut current = raw;
        loop {
            let body = current.trim_end();
            match body.strip_suffix(escape) {
                Some(head) => {
                    logical.push_str(head);
                    logical.push(' ');
                    i += 1;
                    while i < lines.len() {
                        let next = lines[i].trim_start();
                        if next.is_empty() || next.starts_with('#') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    match lines.get(i) {
                        Some(next) => current = next,
                        None => break, // A trailing escape at the end of the file is allowed.
                    }
                }
                None => {
                    logical.push_str(body);
                    i += 1;
                    break;
                }
            }
        }
        let instruction = split_instruction(&logical, start + 1)?;
        if HEREDOC_INSTRUCTIONS.contains(&instruction.keyword.as_str()) {
            i = skip_heredocs(&instruction.args, &lines, i, start + 1)?;
        }
        instructions.push(instruction);
    }

    check_order(&instructions)?;
    Ok(instructions)
}

/// Reads the parser directives at the top (`# syntax=…`, `# escape=…`, `# check=…`); returns
/// the escape character and the index of the first line after them.
fn directives(lines: &[&str]) -> Result<(char, usize), DockerfileError> {
    let mut escape = '\\';
    let mut seen: Vec<String> = Vec::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(comment) = line.trim().strip_prefix('#') else {
            return Ok((escape, index));
        };
        let Some((name, value)) = comment.split_once('=') else {
            return Ok((escape, index));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok((escape, index));
        }
        if seen.contains(&name) {
            return Err(error(
                index + 1,
                format!("the parser directive `{name}` is given twice"),
            ));
        }
        if name == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(error(
                        index + 1,
                        format!("escape directive must be `\\` or a backtick, not {other:?}"),
                    ));
                }
            };
        }
        seen.push(name);
    }
    Ok((escape, lines.len()))
}

fn split_instruction(logical: &str, line: usize) -> Result<Instruction, DockerfileError> {
    let text = logical.trim();
    let (word, args) = match text.split_once(char::is_whitespace) {
        Some((word, args)) => (word, args.trim()),
        None => (text, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if !INSTRUCTIONS.contains(&keyword.as_str()) {
        return Err(error(
            line,
            format!(
                "unknown instruction `{word}`; known: {}",
                INSTRUCTIONS.join(", ")
            ),
        ));
    }
    if args.is_empty() {
        return Err(error(line, format!("{keyword} needs arguments")));
    }
    if keyword == "ONBUILD" {
        let inner = split_instruction(args, line)?;
        if matches!(inner.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
            return Err(error(
                line,
                format!("ONBUILD cannot trigger {}", inner.keyword),
            ));
        }
    }
    if keyword == "SHELL" && serde_json::from_str::<Vec<String>>(args).is_err() {
        return Err(error(
            line,
            "SHELL needs a JSON array of strings, e.g. SHELL [\"/bin/bash\", \"-c\"]",
        ));
    }
    Ok(Instruction {
        keyword,
        args: args.to_owned(),
        line,
    })
}

/// Skips the bodies of the heredocs an instruction opens (`<<EOF`, `<<-EOF`, `<<"EOF"`),
/// in order; returns the index of the first line after the last one.
fn skip_heredocs(
    args: &str,
    lines: &[&str],
    mut index: usize,
    line: usize,
) -> Result<usize, DockerfileError> {
    for (word, strip_tabs) in heredoc_words(args) {
        loop {
            let Some(body) = lines.get(index) else {
                return Err(error(
                    line,
                    format!("the heredoc `<<{word}` is never closed by a line `{word}`"),
                ));
            };
            index += 1;
            let candidate = if strip_tabs {
                body.trim_start_matches('\t')
            } else {
                body
            };
            if candidate == word {
                break;
            }
        }
    }
    Ok(index)
}

/// The heredoc delimiters in an instruction's arguments, with whether `<<-` strips tabs.
fn heredoc_words(args: &str) -> Vec<(String, bool)> {
    let mut words = Vec::new();
    let mut rest = args;
    while let Some(pos) = rest.find("<<") {
        let mut after = &rest[pos + 2..];
        let strip_tabs = after.starts_with('-');
        if strip_tabs {
            after = &after[1..];
        }
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        if let Some(q) = quote {
            after = &after[1..];
            if let Some(end) = after.find(q) {
                let word = &after[..end];
                if is_heredoc_word(word) {
                    words.push((word.to_owned(), strip_tabs));
                }
                rest = &after[end + 1..];
                continue;
            }
            break;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let word = &after[..end];
        if is_heredoc_word(word) {
            words.push((word.to_owned(), strip_tabs));
        }
        rest = &after[end..];
    }
    words
}

fn is_heredoc_word(word: &str) -> bool {
    word.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_order(instructions: &[Instruction]) -> Result<(), DockerfileError> {
    match instructions.iter().find(|i| i.keyword != "ARG") {
        None => Err(error(
            instructions.last().map_or(1, |i| i.line),
            "no FROM instruction; a Dockerfile starts with FROM (only ARG may come before it)",
        )),
        Some(first) if first.keyword != "FROM" => Err(error(
            first.line,
            format!(
                "{} before FROM; a Dockerfile starts with FROM (only ARG may come before it)",
                first.keyword
            ),
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keywords(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|i| format!("{}@{}", i.keyword, i.line))
            .collect()
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_realistic_agent_dockerfile_parses() {
        let text = "# syntax=docker/dockerfile:1\n\
                    ARG BASE_IMAGE=debian:bookworm\n\
                    FROM ${BASE_IMAGE}\n\
                    \n\
                    # tools the agent asked for\n\
                    RUN apt-get update \\\n\
                    \x20 # a comment inside a continuation\n\
                    \x20 && apt-get install -y --no-install-recommends \\\n\
                    \n\
                    \x20    ripgrep jq \\\n\
                    \x20 && rm -rf /var/lib/apt/lists/*\n\
                    ENV PATH=/opt/bin:$PATH\n\
                    copy --chown=1000 a b\n\
                    SHELL [\"/bin/bash\", \"-c\"]\n\
                    ONBUILD RUN echo hi\n\
                    USER agent\n";
        assert_eq!(
            keywords(text),
            [
                "ARG@2",
                "FROM@3",
                "RUN@6",
                "ENV@12",
                "COPY@13",
                "SHELL@14",
                "ONBUILD@15",
                "USER@16"
            ]
        );
    }

    /// The project's own Dockerfiles are what agents will start from.
    #[test]
    fn the_projects_dockerfiles_parse() {
        for text in [
            include_str!("../../../Dockerfile.agent"),
            include_str!("../../../Dockerfile.bundle"),
        ] {
            let parsed = parse(text).unwrap();
            assert!(parsed.iter().any(|i| i.keyword == "FROM"));
        }
    }

    #[test]
    fn heredocs_are_skipped_and_must_close() {
        let text = "FROM x\nRUN <<EOF bash\nnot an instruction\nEOF\nCOPY <<-'A' <<B /dst\n\tfoo\n\tA\nbar\nB\nUSER a\n";
        assert_eq!(keywords(text), ["FROM@1", "RUN@2", "COPY@5", "USER@10"]);
        assert_eq!(
            err("FROM x\nRUN <<EOF\necho\n"),
            "line 2: the heredoc `<<EOF` is never closed by a line `EOF`"
        );
    }

    #[test]
    fn the_escape_directive_changes_the_continuation_character() {
        let text = "# escape=`\nFROM windows\nRUN dir `\n  c:\\\nUSER a\n";
        assert_eq!(keywords(text), ["FROM@2", "RUN@3", "USER@5"]);
        assert!(err("# escape=x\nFROM a\n").contains("escape directive"));
        assert!(err("# escape=`\n# escape=`\nFROM a\n").contains("given twice"));
    }

    #[test]
    fn a_directive_after_a_comment_is_only_a_comment() {
        // `escape` after an ordinary comment is not a directive: `\` still continues lines.
        let text = "# hello\n# escape=`\nFROM a\nRUN a \\\n b\n";
        assert_eq!(keywords(text), ["FROM@3", "RUN@4"]);
    }

    #[test]
    fn bad_files_name_the_line() {
        expect_test::expect![[r#"
            [
                "line 2: unknown instruction `RUNN`; known: ADD, ARG, CMD, COPY, ENTRYPOINT, ENV, EXPOSE, FROM, HEALTHCHECK, LABEL, MAINTAINER, ONBUILD, RUN, SHELL, STOPSIGNAL, USER, VOLUME, WORKDIR",
                "line 1: RUN before FROM; a Dockerfile starts with FROM (only ARG may come before it)",
                "line 1: no FROM instruction; a Dockerfile starts with FROM (only ARG may come before it)",
                "line 1: no FROM instruction; a Dockerfile starts with FROM (only ARG may come before it)",
                "line 2: RUN needs arguments",
                "line 2: SHELL needs a JSON array of strings, e.g. SHELL [\"/bin/bash\", \"-c\"]",
                "line 2: ONBUILD cannot trigger FROM",
                "line 1: the file contains a NUL byte; send plain text",
                "line 1: unknown instruction `this`; known: ADD, ARG, CMD, COPY, ENTRYPOINT, ENV, EXPOSE, FROM, HEALTHCHECK, LABEL, MAINTAINER, ONBUILD, RUN, SHELL, STOPSIGNAL, USER, VOLUME, WORKDIR",
            ]
        "#]]
        .assert_debug_eq(
            &[
                "FROM a\nRUNN x\n",
                "RUN x\nFROM a\n",
                "ARG A=1\n",
                "# only a comment\n",
                "FROM a\nRUN\n",
                "FROM a\nSHELL /bin/bash -c\n",
                "FROM a\nONBUILD FROM b\n",
                "FROM a\0\n",
                "this is not a dockerfile\n",
            ]
            .map(err),
        );
    }
}
