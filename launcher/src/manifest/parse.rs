//! Markdown + YAML frontmatter -> a YAML tree that remembers the line of every key and value.
//!
//! The YAML itself is parsed by `serde-saphyr` (built on the maintained `saphyr-parser` family);
//! this module only splits the frontmatter off and turns the document into [`Node`]s through
//! `serde_saphyr::Spanned`, so [`super::validate`] can name the line of any key it rejects.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML value with the (1-based) line it starts on, counted in the whole Markdown file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) line: u32,
    pub(crate) kind: Kind,
}

/// The shape of a YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own line and the document order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and the line it is written on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) name: String,
    pub(crate) line: u32,
}

impl Kind {
    /// How the value is described in "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Kind::Null => "an empty value",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) | Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A manifest file split into its parts.
#[derive(Debug)]
pub(crate) struct Document {
    /// The frontmatter tree (an empty mapping when the frontmatter is empty).
    pub(crate) root: Node,
    /// The Markdown after the closing `---`.
    pub(crate) body: String,
}

/// Why a file could not be read as Markdown with YAML frontmatter. Lines are file lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    pub(crate) line: u32,
    pub(crate) message: String,
}

/// Splits the frontmatter off `text` and parses it.
///
/// The file must open with a line `---` and the frontmatter ends at the next line that is `---`
/// or `...`. YAML error messages are rendered without a source snippet, so a value (which could
/// be a pasted secret) is never echoed.
pub(crate) fn parse_document(text: &str) -> Result<Document, ParseError> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        return Err(ParseError {
            line: 1,
            message: "no YAML frontmatter: the file must start with a line `---`, then the YAML keys, then a closing `---`".into(),
        });
    }
    let mut yaml = String::new();
    let mut closed_at = None;
    let mut consumed = first.len();
    for (i, line) in lines.enumerate() {
        consumed += line.len();
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed == "..." {
            closed_at = Some(i);
            break;
        }
        yaml.push_str(line);
    }
    if closed_at.is_none() {
        return Err(ParseError {
            line: 1,
            message: "the YAML frontmatter opened on line 1 is never closed with a line `---`"
                .into(),
        });
    }
    let body = text[consumed..].to_owned();
    let root = parse_yaml(&yaml, 1)?;
    Ok(Document { root, body })
}

/// Parses YAML text whose first line is file line `offset + 1`.
fn parse_yaml(yaml: &str, offset: u32) -> Result<Node, ParseError> {
    if yaml.trim().is_empty() {
        return Ok(Node {
            line: offset + 1,
            kind: Kind::Map(Vec::new()),
        });
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.strict_booleans = true;
    // `PIN: 007` and `ID: 1_000` stay text: env values must not change on the way through.
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    // Duplicates reach validation, which names them with their full key path.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let parsed: Result<Spanned<RawKind>, _> = serde_saphyr::from_str_with_options(yaml, options);
    match parsed {
        Ok(spanned) => Ok(to_node(spanned, offset)),
        Err(e) => {
            let line = e.location().map(|l| l.line() as u32).unwrap_or(0);
            Err(ParseError {
                line: line + offset,
                message: format!("invalid YAML: {}", yaml_message(&e)),
            })
        }
    }
}

/// The YAML error text without any quoted source and without the parser's own position (which
/// counts lines inside the frontmatter, not the file; the caller gives the file line).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    // Keep only the first line; later lines can carry context from the input.
    let first = text.lines().next().unwrap_or("");
    match first.rfind(" at line ") {
        Some(cut) => first[..cut].to_owned(),
        None => first.to_owned(),
    }
}

fn to_node(spanned: Spanned<RawKind>, offset: u32) -> Node {
    let line = spanned.referenced.line() as u32 + offset;
    let kind = match spanned.value {
        RawKind::Null => Kind::Null,
        RawKind::Bool(b) => Kind::Bool(b),
        RawKind::Int(i) => Kind::Int(i),
        RawKind::Float(f) => Kind::Float(f),
        RawKind::Str(s) => Kind::Str(s),
        RawKind::Seq(items) => Kind::Seq(items.into_iter().map(|n| to_node(n, offset)).collect()),
        RawKind::Map(entries) => Kind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = Key {
                        name: k.value,
                        line: k.referenced.line() as u32 + offset,
                    };
                    (key, to_node(v, offset))
                })
                .collect(),
        ),
    };
    Node { line, kind }
}

/// What serde hands us; converted to [`Kind`] with file lines by [`to_node`].
enum RawKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<String>, Spanned<RawKind>)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        RawKind::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
        Ok(i64::try_from(v).map_or(RawKind::Float(v as f64), RawKind::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawKind>>()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<RawKind>>()?;
            entries.push((key, value));
        }
        Ok(RawKind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(node: &Node) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        if let Kind::Map(entries) = &node.kind {
            for (k, v) in entries {
                out.push((k.name.clone(), k.line));
                out.extend(lines_of(v));
            }
        }
        if let Kind::Seq(items) = &node.kind {
            for item in items {
                out.extend(lines_of(item));
            }
        }
        out
    }

    #[test]
    fn keys_carry_file_lines() {
        let doc = parse_document(
            "---\nenv:\n  A: b\negress:\n  routes:\n    - host: x.test\n---\n# Body\nhello\n",
        )
        .unwrap();
        assert_eq!(
            lines_of(&doc.root),
            vec![
                ("env".to_owned(), 2),
                ("A".to_owned(), 3),
                ("egress".to_owned(), 4),
                ("routes".to_owned(), 5),
                ("host".to_owned(), 6),
            ]
        );
        assert_eq!(doc.body, "# Body\nhello\n");
    }

    #[test]
    fn scalars_keep_their_types() {
        let doc = parse_document("---\na: true\nb: 3\nc: \"3\"\nd:\ne: [x]\n---\n").unwrap();
        let Kind::Map(entries) = doc.root.kind else {
            panic!("not a map")
        };
        let kinds: Vec<_> = entries.into_iter().map(|(_, v)| v.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Bool(true),
                Kind::Int(3),
                Kind::Str("3".into()),
                Kind::Null,
                Kind::Seq(vec![Node {
                    line: 6,
                    kind: Kind::Str("x".into())
                }]),
            ]
        );
    }

    #[test]
    fn empty_frontmatter_is_an_empty_mapping() {
        let doc = parse_document("---\n---\nbody").unwrap();
        assert_eq!(doc.root.kind, Kind::Map(Vec::new()));
    }

    #[test]
    fn yaml_errors_carry_the_file_line_and_no_source_text() {
        let err = parse_document("---\na: 1\nb: [unclosed, sk-secret-value\n---\n").unwrap_err();
        assert!(err.line >= 3, "{err:?}");
        assert!(!err.message.contains("sk-secret-value"), "{err:?}");
    }

    #[test]
    fn duplicate_keys_reach_validation() {
        let doc = parse_document("---\na: 1\na: 2\n---\n").unwrap();
        let Kind::Map(entries) = doc.root.kind else {
            panic!("not a map")
        };
        let lines: Vec<_> = entries
            .iter()
            .map(|(k, _)| (k.name.as_str(), k.line))
            .collect();
        assert_eq!(lines, vec![("a", 2), ("a", 3)]);
    }
}
