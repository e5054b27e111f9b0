//! A read-only pack reader for whole-history scans.
//!
//! Why not libgit2 for these reads: a history scan reads nearly every tree and blob of the
//! repository, and libgit2 spent most of the scan on its per-object overhead rather than on
//! inflating: a fresh zlib stream (and its 40 KB of state) per delta, an allocation per chain
//! step, and a 16 MiB delta-base cache that is emptied whole when full. Here each object is
//! inflated in one call into a buffer of its known size (libdeflate), every object decoded is kept in a byte-capped cache by pack
//! offset (so a delta chain is walked once), and pack and index files are read once and
//! shared by the scan's threads.
//!
//! Scope, deliberately narrow: `.idx` version 2 with packs of version 2 or 3, SHA-1 only,
//! packs up to [`MAX_PACK_BYTES`] (read into memory; larger packs are left to libgit2). An
//! object this reader does not find (loose objects, alternates, a ref-delta to another pack)
//! is read through libgit2 by the caller, so this is a fast path, never the only path. Push
//! scans do not use it: they read few objects, from git's quarantine.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use libdeflater::Decompressor;

use crate::scanner::objects::OidHasher;

/// Packs larger than this are not loaded (their objects are read through libgit2).
pub(crate) const MAX_PACK_BYTES: u64 = 2 << 30;

/// How many bytes of decoded objects one reader keeps for delta bases.
const CACHE_BYTES: usize = 32 << 20;

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

/// One pack and its index, in memory.
#[derive(Debug)]
struct Pack {
    name: String,
    data: Vec<u8>,
    idx: Vec<u8>,
    count: usize,
}

impl Pack {
    fn load(idx_path: &Path) -> Result<Option<Pack>, std::io::Error> {
        let pack_path = idx_path.with_extension("pack");
        let Ok(meta) = std::fs::metadata(&pack_path) else {
            return Ok(None);
        };
        if meta.len() > MAX_PACK_BYTES {
            return Ok(None);
        }
        let idx = std::fs::read(idx_path)?;
        let data = read_parallel(&pack_path, meta.len())?;
        // Index v2: magic, version 2, fanout[256], then ids, crcs, offsets, large offsets.
        if idx.len() < 8 + 256 * 4 || idx[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
            return Ok(None);
        }
        if data.len() < 12 || &data[..4] != b"PACK" || !matches!(data[7], 2 | 3) {
            return Ok(None);
        }
        let count = be32(&idx, 8 + 255 * 4) as usize;
        if idx.len() < 8 + 256 * 4 + count * 28 {
            return Ok(None);
        }
        Ok(Some(Pack {
            name: pack_path.display().to_string(),
            data,
            idx,
            count,
        }))
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

/// Reads a whole file with one thread per core, each into its own part of the buffer: a
/// large pack is mostly page faults and copying, which one thread does at a fraction of the
/// machine's speed while the scan's workers wait for it.
fn read_parallel(path: &Path, len: u64) -> Result<Vec<u8>, std::io::Error> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    let file = std::fs::File::open(path)?;
    let mut data = vec![0u8; len];
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let part = len.div_ceil(threads).max(1 << 20);
    std::thread::scope(|s| {
        let readers: Vec<_> = data
            .chunks_mut(part)
            .enumerate()
            .map(|(i, chunk)| {
                let file = &file;
                s.spawn(move || file.read_exact_at(chunk, (i * part) as u64))
            })
            .collect();
        readers.into_iter().try_for_each(|r| {
            r.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("pack reader thread panicked")))
        })
    })?;
    Ok(data)
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
}

impl PackReader {
    pub(crate) fn new(packs: Arc<Packs>) -> PackReader {
        PackReader {
            packs,
            inflate: Decompressor::new(),
            cache: OffsetCache::new(CACHE_BYTES),
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
        // (offset of the delta entry, start of its compressed data, its inflated size)
        let mut chain: Vec<(usize, usize, usize)> = Vec::new();
        let mut at = offset;
        let (kind, mut data) = loop {
            if let Some(hit) = self.cache.get(p, at) {
                break hit;
            }
            let h = header(&pack.data, at)
                .ok_or_else(|| corrupt(format!("bad object header at {at}")))?;
            match h.kind {
                OBJ_COMMIT | OBJ_TREE | OBJ_BLOB | OBJ_TAG => {
                    let kind = match h.kind {
                        OBJ_COMMIT => ObjKind::Commit,
                        OBJ_TREE => ObjKind::Tree,
                        OBJ_BLOB => ObjKind::Blob,
                        _ => ObjKind::Tag,
                    };
                    let data = Rc::new(self.inflate_at(pack, h.data, h.size)?);
                    self.cache.put(p, at, kind, data.clone());
                    break (kind, data);
                }
                OBJ_OFS_DELTA => {
                    let (back, used) = ofs_delta_base(&pack.data, h.data)
                        .ok_or_else(|| corrupt(format!("bad delta base at {at}")))?;
                    chain.push((at, h.data + used, h.size));
                    at = at
                        .checked_sub(back)
                        .ok_or_else(|| corrupt(format!("delta base before pack start at {at}")))?;
                }
                OBJ_REF_DELTA => {
                    let base_id = pack
                        .data
                        .get(h.data..h.data + 20)
                        .ok_or_else(|| corrupt(format!("truncated delta at {at}")))?;
                    let Some(base) = pack.find(base_id) else {
                        // A base outside this pack: let libgit2 read the whole object.
                        return Ok(None);
                    };
                    chain.push((at, h.data + 20, h.size));
                    at = base;
                }
                other => return Err(corrupt(format!("unknown object type {other} at {at}"))),
            }
            if chain.len() > 10_000 {
                return Err(corrupt(format!("delta chain too long at {offset}")));
            }
        };
        while let Some((at, start, size)) = chain.pop() {
            let delta = self.inflate_at(pack, start, size)?;
            let out =
                apply_delta(&data, &delta).ok_or_else(|| corrupt(format!("bad delta at {at}")))?;
            data = Rc::new(out);
            self.cache.put(p, at, kind, data.clone());
        }
        Ok(Some((kind, data)))
    }

    /// Inflates the zlib stream at `start`, which the entry header says holds `size` bytes.
    /// The size is known up front, so the whole object is inflated in one call into a buffer
    /// of exactly that size (libdeflate, about twice zlib's speed on small objects; see
    /// ARCHITECTURE.md); a stream that yields more or fewer bytes is corrupt.
    fn inflate_at(&mut self, pack: &Pack, start: usize, size: usize) -> Result<Vec<u8>, PackError> {
        let input = pack.data.get(start..).unwrap_or_default();
        let mut out = vec![0u8; size];
        match self.inflate.zlib_decompress(input, &mut out) {
            Ok(n) if n == size => Ok(out),
            Ok(_) | Err(_) => Err(PackError::Corrupt {
                pack: pack.name.clone(),
                problem: format!("cannot inflate the object data at {start}"),
            }),
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
        let mut reader = PackReader::new(packs);
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
            data: Vec::new(),
            idx,
            count: n,
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
