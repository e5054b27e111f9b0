//! Raw object reading for history and push scans: commits and trees parsed from their raw
//! bytes, with small caches keyed by object id.
//!
//! Why not `Repository::find_tree`/`find_blob`: libgit2's object layer parses every tree into
//! an allocated entry array and caches little (blobs never), so a history scan spent most of
//! its time in malloc/free and in re-inflating the trees and blobs that the next commit shares
//! with this one. Reading raw bytes through the `Odb` (which still honours alternates and
//! the pre-receive quarantine) and walking tree entries in place removes both. Blobs and trees
//! read for one commit are kept for the next few: in a walk from new to old, the parent's
//! trees of commit N are commit N-1's own trees, and a file's old blob is the new blob of
//! the earlier commit that last changed it.
//!
//! gitoxide (`gix`) was considered for object reading; once tree parsing and re-reads are
//! gone, inflating is a small share of the time (see the README benchmark), not enough to
//! justify a second git implementation in the bundle next to libgit2, which the gate needs.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use std::sync::Arc;

use git2::{Odb, Oid};

use crate::scanner::packs::{CACHE_BYTES, ObjKind, PackReader, Packs};

/// The history walk's pack cache (see [`Objects::for_walk`]).
const WALK_CACHE_BYTES: usize = 1 << 20;

/// Raw object bytes, shared between the cache and the caller.
pub(crate) type Bytes = Rc<Vec<u8>>;

/// A hasher for object ids: they are already uniformly distributed, so eight of their bytes
/// are a good hash (SipHash over 20 bytes showed up in profiles).
#[derive(Default)]
pub(crate) struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

pub(crate) type OidMap<V> = HashMap<Oid, V, BuildHasherDefault<OidHasher>>;

/// An approximate LRU in two generations: lookups promote into the young one; when it holds
/// more than `limit` bytes the old generation is dropped and the young one becomes old.
struct Cache {
    young: OidMap<Bytes>,
    old: OidMap<Bytes>,
    young_bytes: usize,
    limit: usize,
}

impl Cache {
    fn new(limit: usize) -> Cache {
        Cache {
            young: OidMap::default(),
            old: OidMap::default(),
            young_bytes: 0,
            limit,
        }
    }

    fn get(&mut self, oid: &Oid) -> Option<Bytes> {
        if let Some(b) = self.young.get(oid) {
            return Some(b.clone());
        }
        let b = self.old.remove(oid)?;
        self.put(*oid, b.clone());
        Some(b)
    }

    fn put(&mut self, oid: Oid, data: Bytes) {
        if data.len() > self.limit / 2 {
            return;
        }
        self.young_bytes += data.len() + 64;
        self.young.insert(oid, data);
        if self.young_bytes > self.limit {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
    }
}

/// Reads objects of one repository for one worker thread.
pub(crate) struct Objects<'r> {
    odb: Odb<'r>,
    /// The fast path for history scans (see `packs`); libgit2 reads what it does not have.
    packs: Option<PackReader>,
    trees: Cache,
    blobs: Cache,
    /// The last commit read: a scan reads a commit's parent, then scans that parent next.
    last_commit: Option<(Oid, Bytes)>,
    /// Commits the history walk already read, handed over with a stretch of history so
    /// they are not inflated twice.
    handed: OidMap<Bytes>,
}

impl<'r> Objects<'r> {
    pub(crate) fn new(
        repo: &'r git2::Repository,
        packs: Option<Arc<Packs>>,
    ) -> Result<Objects<'r>, git2::Error> {
        // Each cache holds up to twice its limit (two generations). Trees and blobs read
        // from packs are also in the pack reader's cache (the same bytes, shared): with a pack
        // reader these only spare the index lookup, and 1 MiB each measured as fast as 4 and
        // 8 MiB; without one (a push, read through libgit2) they are the only cache.
        let (tree_bytes, blob_bytes) = match packs {
            Some(_) => (1 << 20, 1 << 20),
            None => (4 << 20, 8 << 20),
        };
        Ok(Objects {
            odb: repo.odb()?,
            packs: packs.map(|p| PackReader::new(p, CACHE_BYTES)),
            trees: Cache::new(tree_bytes),
            blobs: Cache::new(blob_bytes),
            last_commit: None,
            handed: OidMap::default(),
        })
    }

    /// For the history walk, which reads only commits: they are seldom delta bases, so its
    /// pack reader keeps little (every worker's cache had held the walk's 32 MiB too).
    pub(crate) fn for_walk(
        repo: &'r git2::Repository,
        packs: Option<Arc<Packs>>,
    ) -> Result<Objects<'r>, git2::Error> {
        let mut objects = Objects::new(repo, packs.clone())?;
        objects.packs = packs.map(|p| PackReader::new(p, WALK_CACHE_BYTES));
        Ok(objects)
    }

    /// The raw bytes of an object, checked to be of `kind`.
    fn read(&mut self, oid: Oid, kind: git2::ObjectType) -> Result<Bytes, git2::Error> {
        if let Some(reader) = &mut self.packs
            && let Some((got, data)) = reader
                .read(oid.as_bytes())
                .map_err(|e| git2::Error::from_str(&e.to_string()))?
        {
            let got = match got {
                ObjKind::Commit => git2::ObjectType::Commit,
                ObjKind::Tree => git2::ObjectType::Tree,
                ObjKind::Blob => git2::ObjectType::Blob,
                ObjKind::Tag => git2::ObjectType::Tag,
            };
            if got != kind {
                return Err(git2::Error::from_str(&format!(
                    "object {oid} is a {got}, expected a {kind}"
                )));
            }
            return Ok(data);
        }
        let obj = self.odb.read(oid)?;
        if obj.kind() != kind {
            return Err(git2::Error::from_str(&format!(
                "object {oid} is a {}, expected a {kind}",
                obj.kind()
            )));
        }
        Ok(Rc::new(obj.data().to_vec()))
    }

    pub(crate) fn tree(&mut self, oid: Oid) -> Result<Bytes, git2::Error> {
        if let Some(t) = self.trees.get(&oid) {
            return Ok(t);
        }
        let t = self.read(oid, git2::ObjectType::Tree)?;
        self.trees.put(oid, t.clone());
        Ok(t)
    }

    pub(crate) fn blob(&mut self, oid: Oid) -> Result<Bytes, git2::Error> {
        if let Some(b) = self.blobs.get(&oid) {
            return Ok(b);
        }
        let b = self.read(oid, git2::ObjectType::Blob)?;
        self.blobs.put(oid, b.clone());
        Ok(b)
    }

    /// Replaces the commits handed over by the walk (see `handed`).
    pub(crate) fn hand_over(&mut self, commits: impl IntoIterator<Item = (Oid, Vec<u8>)>) {
        self.handed.clear();
        self.handed
            .extend(commits.into_iter().map(|(oid, raw)| (oid, Rc::new(raw))));
    }

    /// A commit's raw bytes.
    pub(crate) fn commit(&mut self, oid: Oid) -> Result<Bytes, git2::Error> {
        if let Some((id, raw)) = &self.last_commit
            && *id == oid
        {
            return Ok(raw.clone());
        }
        if let Some(raw) = self.handed.get(&oid) {
            return Ok(raw.clone());
        }
        let raw = self.read(oid, git2::ObjectType::Commit)?;
        self.last_commit = Some((oid, raw.clone()));
        Ok(raw)
    }
}

/// What a scan needs from a commit.
#[derive(Debug)]
pub(crate) struct CommitInfo<'a> {
    pub(crate) tree: Oid,
    pub(crate) first_parent: Option<Oid>,
    /// The message as libgit2 returns it: leading newlines removed.
    pub(crate) message: &'a [u8],
}

/// Parses a raw commit: `tree`, `parent` headers, then the message after the first blank line.
pub(crate) fn parse_commit(raw: &[u8]) -> Result<CommitInfo<'_>, git2::Error> {
    let bad = || git2::Error::from_str("malformed commit object");
    let (headers, message) = match memchr::memmem::find(raw, b"\n\n") {
        Some(at) => (&raw[..at + 1], &raw[at + 2..]),
        None => (raw, &raw[raw.len()..]),
    };
    let mut tree = None;
    let mut first_parent = None;
    for line in headers.split(|&b| b == b'\n') {
        if let Some(hex) = line.strip_prefix(b"tree ") {
            tree = Some(hex_oid(hex).ok_or_else(bad)?);
        } else if let Some(hex) = line.strip_prefix(b"parent ") {
            if first_parent.is_none() {
                first_parent = Some(hex_oid(hex).ok_or_else(bad)?);
            }
        } else if tree.is_some() && !line.starts_with(b"parent ") {
            // `tree` and `parent` come first in a well-formed commit.
            break;
        }
    }
    let start = message
        .iter()
        .position(|&b| b != b'\n')
        .unwrap_or(message.len());
    Ok(CommitInfo {
        tree: tree.ok_or_else(bad)?,
        first_parent,
        message: &message[start..],
    })
}

/// Every parent of a raw commit, in order.
pub(crate) fn parents(raw: &[u8]) -> impl Iterator<Item = Result<Oid, git2::Error>> + '_ {
    let headers = match memchr::memmem::find(raw, b"\n\n") {
        Some(at) => &raw[..at],
        None => raw,
    };
    headers
        .split(|&b| b == b'\n')
        .skip_while(|l| l.starts_with(b"tree "))
        .map_while(|l| l.strip_prefix(b"parent "))
        .map(|hex| hex_oid(hex).ok_or_else(|| git2::Error::from_str("malformed commit object")))
}

/// A 40-digit hex object id (libgit2's parser showed up in history-scan profiles).
fn hex_oid(hex: &[u8]) -> Option<Oid> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if hex.len() != 40 {
        return None;
    }
    let mut raw = [0u8; 20];
    for (byte, pair) in raw.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Oid::from_bytes(&raw).ok()
}

/// What a tree entry points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Tree,
    /// Regular files and symlinks.
    Blob,
    /// A submodule's commit: no content of this repository.
    Gitlink,
}

/// One entry of a raw tree, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub(crate) kind: Kind,
    pub(crate) name: &'a [u8],
    pub(crate) id: &'a [u8],
    /// The whole entry (mode, name, id): equal bytes mean an unchanged entry.
    pub(crate) raw: &'a [u8],
}

impl Entry<'_> {
    pub(crate) fn oid(&self) -> Result<Oid, git2::Error> {
        Oid::from_bytes(self.id)
    }
}

/// The entries of a raw tree object (`<octal mode> <name>\0<20-byte id>` each), in order.
/// A malformed tree ends with one error.
pub(crate) fn entries(raw: &[u8]) -> Entries<'_> {
    Entries { rest: raw }
}

/// A cursor over a raw tree's entries; see [`entries`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    /// The bytes not yet read: always starts at an entry boundary.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The next entry, without moving past it.
    pub(crate) fn peek(&self) -> Option<Result<Entry<'a>, git2::Error>> {
        if self.rest.is_empty() {
            return None;
        }
        Some(parse_entry(self.rest).ok_or_else(|| git2::Error::from_str("malformed tree object")))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, git2::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.peek()?;
        self.rest = match &next {
            Ok(entry) => &self.rest[entry.raw.len()..],
            Err(_) => &[],
        };
        Some(next)
    }
}

fn parse_entry(rest: &[u8]) -> Option<Entry<'_>> {
    // Modes and names are short: plain loops beat memchr's call overhead here.
    let space = rest.iter().position(|&b| b == b' ')?;
    let nul = space + 1 + rest[space + 1..].iter().position(|&b| b == 0)?;
    let id = rest.get(nul + 1..nul + 21)?;
    let kind = match &rest[..space] {
        b"40000" | b"040000" => Kind::Tree,
        b"160000" => Kind::Gitlink,
        _ => Kind::Blob,
    };
    Some(Entry {
        kind,
        name: &rest[space + 1..nul],
        id,
        raw: &rest[..nul + 21],
    })
}

/// The length of the longest run of whole entries at the start of two raw trees that are
/// byte for byte the same (so unchanged). Hops entry to entry without parsing them.
pub(crate) fn same_leading_entries(a: &[u8], b: &[u8]) -> usize {
    let same = crate::scanner::bytes::common_prefix(a, b);
    let mut at = 0;
    // An entry is `<mode> <name>\0` and a 20-byte id; only the id may hold a NUL.
    while let Some(nul) = memchr::memchr(0, &b[at..same]) {
        let end = at + nul + 21;
        if end > same {
            break;
        }
        at = end;
    }
    at
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn commits_parse_like_libgit2() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::now("A", "a@example.test").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let root = repo
            .commit(None, &sig, &sig, "\n\nfirst\n\nbody\n", &tree, &[])
            .unwrap();
        let root_c = repo.find_commit(root).unwrap();
        let child = repo
            .commit(None, &sig, &sig, "second", &tree, &[&root_c])
            .unwrap();
        let mut objects = Objects::new(&repo, None).unwrap();
        for oid in [root, child] {
            let raw = objects.commit(oid).unwrap();
            let info = parse_commit(&raw).unwrap();
            let c = repo.find_commit(oid).unwrap();
            assert_eq!(info.tree, c.tree_id());
            assert_eq!(info.first_parent, c.parent_ids().next());
            assert_eq!(info.message, c.message_bytes());
            let all: Vec<Oid> = parents(&raw).map(Result::unwrap).collect();
            assert_eq!(all, c.parent_ids().collect::<Vec<_>>());
        }
        assert!(objects.commit(tree.id()).is_err());
    }

    #[test]
    fn hex_ids_parse_only_when_whole() {
        let id = "0123456789abcdefABCDEF0123456789abcdef01";
        assert_eq!(hex_oid(id.as_bytes()), Some(Oid::from_str(id).unwrap()));
        assert_eq!(hex_oid(&id.as_bytes()[..39]), None);
        assert_eq!(hex_oid(b"g123456789abcdef0123456789abcdef01234567"), None);
        assert_eq!(hex_oid(b""), None);
    }

    #[test]
    fn tree_entries_parse_in_place_and_malformed_trees_fail() {
        let raw = b"100644 a.txt\0aaaaaaaaaaaaaaaaaaaa40000 dir\0bbbbbbbbbbbbbbbbbbbb160000 sub\0cccccccccccccccccccc";
        let got: Vec<_> = entries(raw)
            .map(|e| {
                let e = e.unwrap();
                (e.kind, e.name.to_vec(), e.id[0])
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Kind::Blob, b"a.txt".to_vec(), b'a'),
                (Kind::Tree, b"dir".to_vec(), b'b'),
                (Kind::Gitlink, b"sub".to_vec(), b'c'),
            ]
        );
        let truncated = &raw[..raw.len() - 3];
        assert!(entries(truncated).any(|e| e.is_err()));
    }

    #[test]
    fn cache_keeps_recent_objects_within_its_limit() {
        let mut c = Cache::new(1000);
        let id = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        for n in 0..20u8 {
            c.put(id(n), Rc::new(vec![n; 100]));
        }
        assert!(c.get(&id(19)).is_some());
        assert!(c.get(&id(0)).is_none());
        // Too large for the cache: not kept.
        c.put(id(99), Rc::new(vec![0u8; 600]));
        assert!(c.get(&id(99)).is_none());
    }
}
