//! The first-parent tree diff of history scans, on raw tree objects: the blobs of a tree that
//! differ from another, skipping identical subtrees by id and the entries both trees share at
//! either end without parsing them (libgit2's tree diff walks every entry, slow on wide trees).

use std::cmp::Ordering;

use git2::Oid;

use crate::scanner::ScanError;
use crate::scanner::bytes::common_suffix;
use crate::scanner::git::git_err;
use crate::scanner::objects::{Kind, Objects, entries, same_leading_entries};

/// A file whose content differs between a commit and its first parent.
pub(crate) struct Change {
    pub(crate) path: String,
    /// Zero when the file is new.
    pub(crate) old: Oid,
    pub(crate) new: Oid,
}

/// Collects the blobs of tree `new` that differ from tree `old`, skipping identical
/// subtrees by id (libgit2's tree diff walks every entry, which is slow on wide trees).
pub(crate) fn changed_blobs(
    objects: &mut Objects<'_>,
    old: Option<Oid>,
    new: Oid,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), ScanError> {
    let what = || match prefix.is_empty() {
        true => "read root tree".to_owned(),
        false => format!("read tree {prefix}"),
    };
    let new_raw = objects.tree(new).map_err(git_err(what))?;
    let old_raw = match old {
        Some(o) => Some(objects.tree(o).map_err(git_err(what))?),
        None => None,
    };
    let old_bytes: &[u8] = old_raw.as_deref().map_or(&[], |raw| raw.as_slice());
    // Both entry lists are in git's tree order, so one merge pass pairs them up. Most of a
    // changed tree is unchanged: the leading entries both trees share are skipped without
    // parsing, and the pass stops once what is left of both is the same bytes.
    let skip = same_leading_entries(old_bytes, &new_raw);
    let mut old_entries = entries(&old_bytes[skip..]);
    let mut new_entries = entries(&new_raw[skip..]);
    let same_tail = common_suffix(old_entries.rest(), new_entries.rest());
    loop {
        let (old_rest, new_rest) = (old_entries.rest(), new_entries.rest());
        if old_rest.len() == new_rest.len() && new_rest.len() <= same_tail {
            break;
        }
        let Some(entry) = new_entries.next() else {
            break;
        };
        let entry = entry.map_err(git_err(what))?;
        // Most entries of a changed tree are unchanged and in the same place.
        if let Some(Ok(o)) = old_entries.peek()
            && o.raw == entry.raw
        {
            old_entries.next();
            continue;
        }
        let is_tree = entry.kind == Kind::Tree;
        let mut before = None;
        while let Some(o) = old_entries.peek() {
            let o = match o {
                Ok(o) => o,
                Err(_) => {
                    return Err(ScanError::Git {
                        what: what(),
                        error: git2::Error::from_str("malformed tree object"),
                    });
                }
            };
            match tree_order(o.name, o.kind == Kind::Tree, entry.name, is_tree) {
                Ordering::Less => {
                    old_entries.next();
                }
                Ordering::Equal => {
                    before = Some(o);
                    old_entries.next();
                    break;
                }
                Ordering::Greater => break,
            }
        }
        if before.is_some_and(|b| b.id == entry.id) {
            continue;
        }
        let name = String::from_utf8_lossy(entry.name);
        let path = match prefix.is_empty() {
            true => name.into_owned(),
            false => format!("{prefix}/{name}"),
        };
        let id = entry.oid().map_err(git_err(what))?;
        match entry.kind {
            Kind::Tree => {
                let old_sub = match before {
                    Some(b) if b.kind == Kind::Tree => Some(b.oid().map_err(git_err(what))?),
                    _ => None,
                };
                changed_blobs(objects, old_sub, id, &path, out)?;
            }
            Kind::Blob => {
                let old_id = match before {
                    Some(b) if b.kind == Kind::Blob => b.oid().map_err(git_err(what))?,
                    _ => Oid::ZERO_SHA1,
                };
                out.push(Change {
                    path,
                    old: old_id,
                    new: id,
                });
            }
            // Submodule commits carry no content of this repository.
            Kind::Gitlink => {}
        }
    }
    Ok(())
}

/// git's tree entry order: names compared bytewise, a tree sorting as if its name ended in `/`.
fn tree_order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> Ordering {
    let common = a.len().min(b.len());
    match a[..common].cmp(&b[..common]) {
        Ordering::Equal => {}
        other => return other,
    }
    let tail = |name: &[u8], tree: bool| match name.get(common) {
        Some(&c) => c,
        None if tree => b'/',
        None => 0,
    };
    tail(a, a_tree).cmp(&tail(b, b_tree))
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Repository;

    /// `changed_blobs` (which skips shared leading and trailing entries without parsing
    /// them) reports exactly the added and modified blobs libgit2's tree diff reports, over
    /// many random edits to trees whose names share prefixes (`a`, `a.txt`, `a-b`, `ab`, a
    /// directory `a`), including files turned into directories and back.
    #[test]
    fn tree_diff_matches_libgit2_over_random_edits() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let names = ["a", "a.txt", "a-b", "ab", "b", "z"];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut prev: Option<Oid> = None;
        let mut objects = Objects::new(&repo, None).unwrap();
        for step in 0..300 {
            // Edit: write, delete, or replace a path with a directory (or the reverse).
            for _ in 0..1 + next(3) {
                let depth = 1 + next(3);
                let mut path = dir.path().to_path_buf();
                for _ in 0..depth {
                    path.push(names[next(names.len())]);
                }
                let _ = match next(4) {
                    0 => std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path)),
                    _ => {
                        let mut p = dir.path().to_path_buf();
                        for c in path.strip_prefix(dir.path()).unwrap().components() {
                            p.push(c);
                            if p != path && p.is_file() {
                                std::fs::remove_file(&p).unwrap();
                            }
                        }
                        if path.is_dir() {
                            std::fs::remove_dir_all(&path).unwrap();
                        }
                        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                        std::fs::write(&path, format!("step {step} {}\n", next(1000)))
                    }
                };
            }
            let mut index = repo.index().unwrap();
            index
                .add_all(["."], git2::IndexAddOption::DEFAULT, None)
                .unwrap();
            index.update_all(["."], None).unwrap();
            let tree = index.write_tree().unwrap();

            let mut ours = Vec::new();
            changed_blobs(&mut objects, prev, tree, "", &mut ours).unwrap();
            let mut ours: Vec<(String, Oid, Oid)> =
                ours.into_iter().map(|c| (c.path, c.old, c.new)).collect();
            ours.sort();

            let old_tree = prev.map(|t| repo.find_tree(t).unwrap());
            let new_tree = repo.find_tree(tree).unwrap();
            let diff = repo
                .diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)
                .unwrap();
            let mut theirs: Vec<(String, Oid, Oid)> = diff
                .deltas()
                .filter(|d| d.new_file().id() != d.old_file().id() && !d.new_file().id().is_zero())
                .map(|d| {
                    let path = d.new_file().path().unwrap().to_str().unwrap().to_owned();
                    (path, d.old_file().id(), d.new_file().id())
                })
                .collect();
            theirs.sort();
            assert_eq!(ours, theirs, "step {step}");
            prev = Some(tree);
        }
    }
}
