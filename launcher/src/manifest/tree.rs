//! Typed access to the YAML tree. Every accessor fails with a [`ManifestError::Invalid`]
//! naming the file, the line and the dotted key path.

use std::path::Path;

use super::ManifestError;
use super::parse::{Key, Kind, Node};

/// The file being validated, for error messages.
pub(super) struct Cx<'a> {
    pub(super) file: &'a Path,
}

impl Cx<'_> {
    pub(super) fn err(&self, line: u32, key: &str, message: String) -> ManifestError {
        ManifestError::Invalid {
            file: self.file.to_owned(),
            line,
            key: key.to_owned(),
            message,
        }
    }

    pub(super) fn type_err(&self, node: &Node, key: &str, expected: &str) -> ManifestError {
        self.err(
            node.line,
            key,
            format!("expected {expected}, found {}", node.kind.describe()),
        )
    }

    /// A mapping's entries; a key written twice is refused here, for every mapping.
    pub(super) fn map<'n>(
        &self,
        node: &'n Node,
        key: &str,
    ) -> Result<&'n [(Key, Node)], ManifestError> {
        let entries = match &node.kind {
            Kind::Map(entries) => entries,
            // `env:` with nothing under it is an empty mapping, as in a template.
            Kind::Null => return Ok(&[]),
            _ => return Err(self.type_err(node, key, "a mapping of keys")),
        };
        for (i, (k, _)) in entries.iter().enumerate() {
            if let Some((first, _)) = entries[..i].iter().find(|(e, _)| e.name == k.name) {
                let path = match key {
                    "frontmatter" => k.name.clone(),
                    _ => join(key, &k.name),
                };
                return Err(self.err(
                    k.line,
                    &path,
                    format!("written twice (first on line {}); keep one", first.line),
                ));
            }
        }
        Ok(entries)
    }

    pub(super) fn seq<'n>(&self, node: &'n Node, key: &str) -> Result<&'n [Node], ManifestError> {
        match &node.kind {
            Kind::Seq(items) => Ok(items),
            Kind::Null => Ok(&[]),
            _ => Err(self.type_err(node, key, "a list")),
        }
    }

    pub(super) fn string(&self, node: &Node, key: &str) -> Result<String, ManifestError> {
        match &node.kind {
            Kind::Str(s) if !s.trim().is_empty() => Ok(s.clone()),
            Kind::Str(_) => Err(self.err(node.line, key, "must not be empty".into())),
            _ => Err(self.type_err(node, key, "a string")),
        }
    }

    pub(super) fn bool(&self, node: &Node, key: &str) -> Result<bool, ManifestError> {
        match &node.kind {
            Kind::Bool(b) => Ok(*b),
            _ => Err(self.type_err(node, key, "`true` or `false`")),
        }
    }

    pub(super) fn string_or_list(
        &self,
        node: &Node,
        key: &str,
    ) -> Result<Vec<String>, ManifestError> {
        match &node.kind {
            Kind::Str(_) => Ok(vec![self.string(node, key)?]),
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &format!("{key}[{i}]")))
                .collect(),
            _ => Err(self.type_err(node, key, "a string or a list of strings")),
        }
    }

    /// Refuses unknown and legacy keys (duplicates are refused by [`Cx::map`]).
    pub(super) fn check_keys(
        &self,
        entries: &[(Key, Node)],
        prefix: &str,
        allowed: &[&str],
        legacy: &[(&str, &str)],
    ) -> Result<(), ManifestError> {
        for (key, _) in entries {
            let path = join(prefix, &key.name);
            if let Some((_, hint)) = legacy.iter().find(|(k, _)| *k == key.name) {
                return Err(self.err(key.line, &path, (*hint).to_owned()));
            }
            if !allowed.contains(&key.name.as_str()) {
                let mut message = format!("unknown key; allowed keys here: {}", allowed.join(", "));
                if let Some(best) = suggest(&key.name, allowed) {
                    message.push_str(&format!(" (did you mean `{best}`?)"));
                }
                return Err(self.err(key.line, &path, message));
            }
        }
        Ok(())
    }
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The allowed key closest to `key`, if close enough to be a likely typo.
fn suggest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (strsim::jaro_winkler(&lower, &a.to_ascii_lowercase()), *a))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, a)| a)
}
