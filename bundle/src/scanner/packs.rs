//! A read-only pack reader for whole-history scans.
//!
//! Why not libgit2 for these reads: a history scan reads nearly every tree and blob of the
//! repository, and libgit2 spent most of the scan on its per-object overhead rather than on
//! inflating: a fresh zlib stream (and its 40 KB of state) per delta, an allocation per chain
//! step, and a 16 MiB delta-base cache that is emptied whole when full. Here each object is
//! inflated in one call into a buffer of its known size (libdeflate), every object decoded is
//! kept in a byte-capped cache by pack offset (so a delta chain is walked once), and index
//! files are read once and shared by the scan's threads.
//!
//! Pack data is not held in memory: entries are read with positioned reads (`pread`) through a
//! small cache of 64 KiB windows (an entry larger than its window is read on its own); an entry
//! ends where the next one, in offset order from the index, begins. The kernel's page cache
//! keeps the pack, outside the scan's resident memory; reading packs whole into memory (as
//! before) made a history scan's peak RSS the pack's size plus the caches. Mapping the pack
//! (memmap2) would save the copy but is `unsafe` (a file truncated underneath is undefined
//! behaviour), which the workspace denies.
//!
//! Scope, deliberately narrow: `.idx` version 2 with packs of version 2 or 3, SHA-1 only. An
//! object this reader does not find (loose objects, alternates, a ref-delta to another pack)
//! is read through libgit2 by the caller, so this is a fast path, never the only path. Push
//! scans do not use it: they read few objects, from git's quarantine.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use libdeflater::Decompressor;

use crate::scanner::objects::OidHasher;

/// How many bytes of decoded objects one scanning reader keeps for delta bases. 16 MiB took
/// the same time as 32 MiB on both benchmark histories (`bench/scanner/run`, real and small
/// shape) and, with the smaller object caches of `objects.rs`, brought the peak RSS of a
/// 2-worker history scan from 206 to 134 MB (real) and 190 to 144 MB (small).
pub(crate) const CACHE_BYTES: usize = 16 << 20;

const OBJ_COMMIT: u8 = 1;
const OBJ_TREE: u8 = 2;
const OBJ_BLOB: u8 = 3;
const OBJ_TAG: u8 = 4;
const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackError {
    #[error("pack {pack}: {problem}")]
    Corrupt { pack: String, problem: String },
}

/// The kind of a whole (non-delta) object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjKind {
    Commit,
    Tree,
    Blob,
    Tag,
}

/// A decoded object: its kind and bytes (shared with the reader's cache).
pub(crate) type Object = (ObjKind, Rc<Vec<u8>>);

/// One pack (an open file) and its index (in memory).
#[derive(Debug)]
struct Pack {
    name: String,
    file: std::fs::File,
    idx: Vec<u8>,
    count: usize,
    /// Every entry's offset, sorted, then where the trailing checksum starts: an entry's bytes
    /// end where the next offset in this list begins.
    bounds: Vec<u64>,
}

impl Pack {
    fn load(idx_path: &Path) -> Result<Option<Pack>, std::io::Error> {
        let pack_path = idx_path.with_extension("pack");
        let Ok(file) = std::fs::File::open(&pack_path) else {
            return Ok(None);
        };
        let len = file.metadata()?.len();
        let idx = std::fs::read(idx_path)?;
        // Index v2: magic, version 2, fanout[256], then ids, crcs, offsets, large offsets.
        if idx.len() < 8 + 256 * 4 || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return Ok(None);
        }
        let mut head = [0u8; 12];
        if len < 32 || file.read_exact_at(&mut head, 0).is_err() {
            return Ok(None);
        }
        if &head[..4] != b"PACK" || !matches!(head[7], 2 | 3) {
            return Ok(None);
        }
        let count = be32(&idx, 8 + 255 * 4) as usize;
        if idx.len() < 8 + 256 * 4 + count * 28 {
            return Ok(None);
        }
        let mut pack = Pack {
            name: pack_path.display().to_string(),
            file,
            idx,
            count,
            bounds: Vec::new(),
        };
        let mut bounds = Vec::with_capacity(count + 1);
        for i in 0..count {
            match pack.offset_of(i) {
                Some(at) if (at as u64) < len - 20 => bounds.push(at as u64),
                _ => return Ok(None),
            }
        }
        bounds.push(len - 20);
        bounds.sort_unstable();
        pack.bounds = bounds;
        Ok(Some(pack))
    }

    /// Where the entry at `at` ends (the next entry's offset), or `None` when no entry
    /// starts at `at`.
    fn entry_end(&self, at: usize) -> Option<usize> {
        let i = self.bounds.binary_search(&(at as u64)).ok()?;
        usize::try_from(*self.bounds.get(i + 1)?).ok()
    }

    /// Reads `len` bytes at `at` into `buf` (one `pread`).
    fn read_at(&self, at: usize, len: usize, buf: &mut Vec<u8>) -> Result<(), PackError> {
        buf.clear();
        buf.resize(len, 0);
        self.file
            .read_exact_at(buf, at as u64)
            .map_err(|e| PackError::Corrupt {
                pack: self.name.clone(),
                problem: format!("cannot read {len} bytes at {at}: {e}"),
            })
    }

    /// The offset of object `id` in this pack. Ids are uniformly spread, so the search
    /// interpolates on their leading bytes first (a plain binary search over a large index
    /// is a cache miss per step), then finishes with a binary search.
    fn find(&self, id: &[u8]) -> Option<usize> {
        let first = usize::from(*id.first()?);
        let fan = |i: usize| be32(&self.idx, 8 + i * 4) as usize;
        let (mut lo, mut hi) = (if first == 0 { 0 } else { fan(first - 1) }, fan(first));
        let key = lead(id);
        let id_at = |i: usize| self.idx.get(IDS + i * 20..IDS + i * 20 + 20);
        if hi - lo > 16 {
            let (a, b) = (lead(id_at(lo)?), lead(id_at(hi - 1)?));
            if a < b && (a..=b).contains(&key) {
                let span = (hi - 1 - lo) as f64;
                let guess = lo + (span * ((key - a) as f64 / (b - a) as f64)) as usize;
                let guess = guess.clamp(lo, hi - 1);
                // Gallop from the guess to bracket the id, then bisect the bracket.
                match id_at(guess)?.cmp(id) {
                    std::cmp::Ordering::Equal => return self.offset_of(guess),
                    std::cmp::Ordering::Less => {
                        let mut step = 4;
                        lo = guess + 1;
                        while lo + step < hi && id_at(lo + step)? < id {
                            lo += step + 1;
                            step *= 2;
                        }
                        hi = hi.min(lo + step + 1);
                    }
                    std::cmp::Ordering::Greater => {
                        let mut step = 4;
                        hi = guess;
                        while hi > lo + step && id_at(hi - step - 1)? > id {
                            hi -= step + 1;
                            step *= 2;
                        }
                        lo = lo.max(hi.saturating_sub(step + 1));
                    }
                }
            }
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            match id_at(mid)?.cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.offset_of(mid),
            }
        }
        None
    }

    fn offset_of(&self, i: usize) -> Option<usize> {
        let offsets = 8 + 256 * 4 + self.count * 24;
        let small = be32(&self.idx, offsets + i * 4);
        if small & 0x8000_0000 == 0 {
            return Some(small as usize);
        }
        let large = offsets + self.count * 4 + (small & 0x7fff_ffff) as usize * 8;
        let bytes = self.idx.get(large..large + 8)?;
        usize::try_from(u64::from_be_bytes(bytes.try_into().ok()?)).ok()
    }
}

/// Where the sorted object ids start in an index v2.
const IDS: usize = 8 + 256 * 4;

/// Bytes 1..9 of an id (byte 0 is fixed by the fanout bucket), for interpolation.
fn lead(id: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = id.get(1..9) {
        b.copy_from_slice(s);
    }
    u64::from_be_bytes(b)
}

fn be32(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// The packs of one object directory, shared by the scan's threads.
#[derive(Debug, Default)]
pub(crate) struct Packs {
    packs: Vec<Pack>,
}

impl Packs {
    /// Loads every `pack-*.idx` (with its pack) under `objects/pack`. Packs it cannot use
    /// are skipped; their objects come from libgit2.
    pub(crate) fn load(objects_dir: &Path) -> Arc<Packs> {
        let mut packs = Vec::new();
        if let Ok(dir) = std::fs::read_dir(objects_dir.join("pack")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "idx")
                    && let Ok(Some(pack)) = Pack::load(&path)
                {
                    packs.push(pack);
                }
            }
        }
        // Newest (largest) packs usually hold most objects: look there first.
        packs.sort_by_key(|p| std::cmp::Reverse(p.count));
        Arc::new(Packs { packs })
    }
}

/// Reads objects from [`Packs`] for one thread: its own inflate stream and base cache.
pub(crate) struct PackReader {
    packs: Arc<Packs>,
    inflate: Decompressor,
    cache: OffsetCache,
    /// Buffers for entries' raw bytes, reused from read to read.
    spare: Vec<Vec<u8>>,
    windows: Windows,
}

impl PackReader {
    /// A reader keeping up to `cache_bytes` of decoded objects (delta bases).
    pub(crate) fn new(packs: Arc<Packs>, cache_bytes: usize) -> PackReader {
        PackReader {
            packs,
            inflate: Decompressor::new(),
            cache: OffsetCache::new(cache_bytes),
            spare: Vec::new(),
            windows: Windows::new(WINDOW_CACHE_BYTES),
        }
    }

    /// Object `id`'s kind and bytes, or `None` when no loaded pack has it.
    pub(crate) fn read(&mut self, id: &[u8]) -> Result<Option<Object>, PackError> {
        let packs = Arc::clone(&self.packs);
        for (p, pack) in packs.packs.iter().enumerate() {
            if let Some(offset) = pack.find(id) {
                return self.object_at(pack, p, offset);
            }
        }
        Ok(None)
    }

    /// Decodes the object at `offset`: walks its delta chain down to a cached object or a
    /// whole one, then applies the deltas back up, caching each result.
    fn object_at(
        &mut self,
        pack: &Pack,
        p: usize,
        offset: usize,
    ) -> Result<Option<Object>, PackError> {
        let corrupt = |problem: String| PackError::Corrupt {
            pack: pack.name.clone(),
            problem,
        };
        // (offset of the delta entry, its bytes, where its compressed data starts, its
        // inflated size)
        let mut chain: Vec<(usize, Raw, usize, usize)> = Vec::new();
        let mut at = offset;
        let (kind, mut data) = loop {
            if let Some(hit) = self.cache.get(p, at) {
                break hit;
            }
            let entry = self.entry(pack, p, at)?;
            let h = header(entry.bytes(), 0)
                .ok_or_else(|| corrupt(format!("bad object header at {at}")))?;
            match h.kind {
                OBJ_COMMIT | OBJ_TREE | OBJ_BLOB | OBJ_TAG => {
                    let kind = match h.kind {
                        OBJ_COMMIT => ObjKind::Commit,
                        OBJ_TREE => ObjKind::Tree,
                        OBJ_BLOB => ObjKind::Blob,
                        _ => ObjKind::Tag,
                    };
                    let data = Rc::new(self.inflate(pack, &entry.bytes()[h.data..], h.size, at)?);
                    self.recycle(entry);
                    self.cache.put(p, at, kind, data.clone());
                    break (kind, data);
                }
                OBJ_OFS_DELTA => {
                    let (back, used) = ofs_delta_base(entry.bytes(), h.data)
                        .ok_or_else(|| corrupt(format!("bad delta base at {at}")))?;
                    let next = at
                        .checked_sub(back)
                        .ok_or_else(|| corrupt(format!("delta base before pack start at {at}")))?;
                    chain.push((at, entry, h.data + used, h.size));
                    at = next;
                }
                OBJ_REF_DELTA => {
                    let base = entry
                        .bytes()
                        .get(h.data..h.data + 20)
                        .ok_or_else(|| corrupt(format!("truncated delta at {at}")))?;
                    let Some(base) = pack.find(base) else {
                        // A base outside this pack: let libgit2 read the whole object.
                        return Ok(None);
                    };
                    chain.push((at, entry, h.data + 20, h.size));
                    at = base;
                }
                other => return Err(corrupt(format!("unknown object type {other} at {at}"))),
            }
            if chain.len() > 10_000 {
                return Err(corrupt(format!("delta chain too long at {offset}")));
            }
        };
        while let Some((at, entry, start, size)) = chain.pop() {
            let delta = self.inflate(pack, &entry.bytes()[start..], size, at)?;
            self.recycle(entry);
            let out =
                apply_delta(&data, &delta).ok_or_else(|| corrupt(format!("bad delta at {at}")))?;
            data = Rc::new(out);
            self.cache.put(p, at, kind, data.clone());
        }
        Ok(Some((kind, data)))
    }

    /// The raw bytes of the entry at `at`: a slice of a cached window of the pack when the
    /// entry lies within one (most do: pack entries are small, and neighbours in the pack are
    /// read together), else read on its own.
    fn entry(&mut self, pack: &Pack, p: usize, at: usize) -> Result<Raw, PackError> {
        let end = pack.entry_end(at).ok_or_else(|| PackError::Corrupt {
            pack: pack.name.clone(),
            problem: format!("no entry starts at {at}"),
        })?;
        let w = at / WINDOW;
        if end <= (w + 1) * WINDOW {
            let window = match self.windows.get(p, w) {
                Some(window) => window,
                None => {
                    let start = w * WINDOW;
                    let len = (WINDOW).min(pack.bounds.last().map_or(0, |&l| l as usize) - start);
                    let mut buf = Vec::new();
                    pack.read_at(start, len, &mut buf)?;
                    let window = Rc::new(buf);
                    self.windows.put(p, w, window.clone());
                    window
                }
            };
            return Ok(Raw::Window(window, at - w * WINDOW, end - w * WINDOW));
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        pack.read_at(at, end - at, &mut buf)?;
        Ok(Raw::Owned(buf))
    }

    /// Keeps an entry's buffer for the next read, unless it is large.
    fn recycle(&mut self, raw: Raw) {
        if let Raw::Owned(buf) = raw
            && buf.capacity() <= SPARE_BYTES
            && self.spare.len() < 16
        {
            self.spare.push(buf);
        }
    }

    /// Inflates a zlib stream that the entry header (at `at`) says holds `size` bytes. The
    /// size is known up front, so the whole object is inflated in one call into a buffer of
    /// exactly that size (libdeflate, about twice zlib's speed on small objects; see
    /// ARCHITECTURE.md); a stream that yields more or fewer bytes is corrupt.
    fn inflate(
        &mut self,
        pack: &Pack,
        input: &[u8],
        size: usize,
        at: usize,
    ) -> Result<Vec<u8>, PackError> {
        let mut out = vec![0u8; size];
        match self.inflate.zlib_decompress(input, &mut out) {
            Ok(n) if n == size => Ok(out),
            Ok(_) | Err(_) => Err(PackError::Corrupt {
                pack: pack.name.clone(),
                problem: format!("cannot inflate the object at {at}"),
            }),
        }
    }
}

/// Entry buffers larger than this are not kept for reuse.
const SPARE_BYTES: usize = 1 << 20;

/// Pack bytes are read in aligned windows of this size (git's `core.packedGitWindowSize` in
/// miniature): one `pread` serves the many small entries a window holds, where a `pread` per
/// entry tripled the scan's system time.
const WINDOW: usize = 64 << 10;

/// How many bytes of windows one reader keeps (in two generations).
const WINDOW_CACHE_BYTES: usize = 8 << 20;

/// An entry's raw bytes: part of a cached window, or read on their own.
enum Raw {
    Window(Rc<Vec<u8>>, usize, usize),
    Owned(Vec<u8>),
}

impl Raw {
    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Window(w, start, end) => &w[*start..*end],
            Raw::Owned(b) => b,
        }
    }
}

/// Windows of packs by (pack, window number), in two generations capped by count.
struct Windows {
    young: WindowMap,
    old: WindowMap,
    limit: usize,
}

type WindowMap = std::collections::HashMap<
    (usize, usize),
    Rc<Vec<u8>>,
    std::hash::BuildHasherDefault<OidHasher>,
>;

impl Windows {
    fn new(bytes: usize) -> Windows {
        Windows {
            young: WindowMap::default(),
            old: WindowMap::default(),
            limit: (bytes / 2 / WINDOW).max(1),
        }
    }

    fn get(&mut self, p: usize, w: usize) -> Option<Rc<Vec<u8>>> {
        if let Some(hit) = self.young.get(&(p, w)) {
            return Some(hit.clone());
        }
        let hit = self.old.remove(&(p, w))?;
        self.put(p, w, hit.clone());
        Some(hit)
    }

    fn put(&mut self, p: usize, w: usize, window: Rc<Vec<u8>>) {
        self.young.insert((p, w), window);
        if self.young.len() >= self.limit {
            self.old = std::mem::take(&mut self.young);
        }
    }
}

struct Header {
    kind: u8,
    size: usize,
    /// Where the bytes after the header start.
    data: usize,
}

/// A pack entry header: type in bits 4-6 of the first byte, size in little-endian 7-bit groups.
fn header(data: &[u8], at: usize) -> Option<Header> {
    let mut pos = at;
    let mut c = *data.get(pos)?;
    pos += 1;
    let kind = (c >> 4) & 7;
    let mut size = usize::from(c & 15);
    let mut shift = 4;
    while c & 0x80 != 0 {
        c = *data.get(pos)?;
        pos += 1;
        if shift > 57 {
            return None;
        }
        size |= usize::from(c & 0x7f) << shift;
        shift += 7;
    }
    Some(Header {
        kind,
        size,
        data: pos,
    })
}

/// An offset delta's distance back to its base (git's big-endian "offset encoding"), and the
/// bytes it took.
fn ofs_delta_base(data: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut pos = at;
    let mut c = *data.get(pos)?;
    pos += 1;
    let mut back = usize::from(c & 0x7f);
    while c & 0x80 != 0 {
        c = *data.get(pos)?;
        pos += 1;
        back = back.checked_add(1)?.checked_mul(128)? | usize::from(c & 0x7f);
    }
    Some((back, pos - at))
}

/// Applies a git delta (source size, target size, then copy and insert instructions).
fn apply_delta(base: &[u8], delta: &[u8]) -> Option<Vec<u8>> {
    let mut pos = 0;
    let varint = |pos: &mut usize| -> Option<usize> {
        let mut value = 0usize;
        let mut shift = 0;
        loop {
            let c = *delta.get(*pos)?;
            *pos += 1;
            if shift > 57 {
                return None;
            }
            value |= usize::from(c & 0x7f) << shift;
            shift += 7;
            if c & 0x80 == 0 {
                return Some(value);
            }
        }
    };
    let src_size = varint(&mut pos)?;
    let dst_size = varint(&mut pos)?;
    if src_size != base.len() {
        return None;
    }
    let mut out = Vec::with_capacity(dst_size);
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut offset = 0usize;
            let mut size = 0usize;
            for i in 0..4 {
                if op & (1 << i) != 0 {
                    offset |= usize::from(*delta.get(pos)?) << (8 * i);
                    pos += 1;
                }
            }
            for i in 0..3 {
                if op & (0x10 << i) != 0 {
                    size |= usize::from(*delta.get(pos)?) << (8 * i);
                    pos += 1;
                }
            }
            if size == 0 {
                size = 0x10000;
            }
            out.extend_from_slice(base.get(offset..offset.checked_add(size)?)?);
        } else if op != 0 {
            let n = usize::from(op);
            out.extend_from_slice(delta.get(pos..pos + n)?);
            pos += n;
        } else {
            return None;
        }
    }
    (out.len() == dst_size).then_some(out)
}

/// Decoded objects by (pack, offset), in two generations capped in bytes.
struct OffsetCache {
    young: OidMapByOffset,
    old: OidMapByOffset,
    young_bytes: usize,
    limit: usize,
}

type OidMapByOffset = std::collections::HashMap<
    (usize, usize),
    (ObjKind, Rc<Vec<u8>>),
    std::hash::BuildHasherDefault<OidHasher>,
>;

impl OffsetCache {
    fn new(limit: usize) -> OffsetCache {
        OffsetCache {
            young: OidMapByOffset::default(),
            old: OidMapByOffset::default(),
            young_bytes: 0,
            limit: limit / 2,
        }
    }

    fn get(&mut self, p: usize, at: usize) -> Option<(ObjKind, Rc<Vec<u8>>)> {
        if let Some(hit) = self.young.get(&(p, at)) {
            return Some(hit.clone());
        }
        let hit = self.old.remove(&(p, at))?;
        self.put(p, at, hit.0, hit.1.clone());
        Some(hit)
    }

    fn put(&mut self, p: usize, at: usize, kind: ObjKind, data: Rc<Vec<u8>>) {
        if data.len() > self.limit / 8 {
            return;
        }
        self.young_bytes += data.len() + 64;
        self.young.insert((p, at), (kind, data));
        if self.young_bytes > self.limit {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every object of a real packed repository reads back exactly as libgit2 reads it.
    #[test]
    fn every_packed_object_matches_libgit2() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=T", "-c", "user.email=t@example.test"])
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        git(&["init", "-q"]);
        let mut text = String::new();
        for i in 0..60 {
            for j in 0..20 {
                text.push_str(&format!("line {i} {j} of a file that grows\n"));
            }
            std::fs::create_dir_all(dir.path().join(format!("d{}", i % 3))).unwrap();
            std::fs::write(dir.path().join(format!("d{}/f.txt", i % 3)), &text).unwrap();
            std::fs::write(dir.path().join("big.bin"), vec![i as u8; 70_000 + i]).unwrap();
            git(&["add", "-A"]);
            git(&["commit", "-qm", &format!("commit {i}")]);
        }
        git(&["tag", "-a", "v1", "-m", "tag"]);
        git(&["repack", "-adq", "--depth=20"]);
        let repo = git2::Repository::open(dir.path()).unwrap();
        let packs = Packs::load(&repo.path().join("objects"));
        assert_eq!(packs.packs.len(), 1);
        let mut reader = PackReader::new(packs, CACHE_BYTES);
        let odb = repo.odb().unwrap();
        let mut n = 0;
        odb.foreach(|id| {
            let (kind, data) = reader.read(id.as_bytes()).unwrap().unwrap();
            let want = odb.read(*id).unwrap();
            assert_eq!(&*data, want.data(), "{id}");
            let want_kind = match want.kind() {
                git2::ObjectType::Commit => ObjKind::Commit,
                git2::ObjectType::Tree => ObjKind::Tree,
                git2::ObjectType::Blob => ObjKind::Blob,
                _ => ObjKind::Tag,
            };
            assert_eq!(kind, want_kind);
            n += 1;
            true
        })
        .unwrap();
        assert!(n > 200, "{n}");
        assert!(reader.read(&[0u8; 20]).unwrap().is_none());
    }

    /// A large index, where the interpolation search matters: every id is found at its
    /// offset, and absent ids are not.
    #[test]
    fn index_lookup_finds_every_id_of_a_large_index() {
        use sha1::Digest;
        let n = 20_000usize;
        let mut ids: Vec<[u8; 20]> = (0..n)
            .map(|i| sha1::Sha1::digest(i.to_string().as_bytes()).into())
            .collect();
        ids.sort();
        let mut idx = vec![0xff, b't', b'O', b'c', 0, 0, 0, 2];
        for b in 0..256usize {
            let upto = ids.iter().filter(|id| usize::from(id[0]) <= b).count();
            idx.extend_from_slice(&(upto as u32).to_be_bytes());
        }
        for id in &ids {
            idx.extend_from_slice(id);
        }
        idx.extend(std::iter::repeat_n(0u8, n * 4));
        for i in 0..n {
            // Every 1000th object sits past 2 GiB, through the large-offset table.
            let small = match i % 1000 {
                0 => 0x8000_0000 | (i / 1000) as u32,
                _ => (i * 7) as u32,
            };
            idx.extend_from_slice(&small.to_be_bytes());
        }
        for i in (0..n).step_by(1000) {
            idx.extend_from_slice(&((5u64 << 30) + i as u64).to_be_bytes());
        }
        let pack = Pack {
            name: "test".into(),
            file: tempfile::tempfile().unwrap(),
            idx,
            count: n,
            bounds: Vec::new(),
        };
        for (i, id) in ids.iter().enumerate() {
            let want = match i % 1000 {
                0 => (5usize << 30) + i,
                _ => i * 7,
            };
            assert_eq!(pack.find(id), Some(want), "{i}");
            let mut absent = *id;
            absent[19] ^= 0x5a;
            assert_eq!(pack.find(&absent), None);
        }
    }

    #[test]
    fn deltas_copy_and_insert_and_reject_garbage() {
        let base = b"hello world";
        // src 11, dst 10: copy "hello" (offset 0, size 5), insert " you!".
        let delta = [11, 10, 0x90, 5, 5, b' ', b'y', b'o', b'u', b'!'];
        assert_eq!(apply_delta(base, &delta).unwrap(), b"hello you!");
        assert!(apply_delta(base, &[12, 1, 1, b'x']).is_none());
        assert!(apply_delta(base, &[11, 5, 0x90, 50]).is_none());
        assert!(apply_delta(base, &[11, 1, 0]).is_none());
    }
}
