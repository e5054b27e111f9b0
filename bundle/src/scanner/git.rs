//! Reading what commits add: `git rev-list` for pushes, a revwalk for ranges, an own pipelined
//! walk for whole histories; first-parent tree diffs (`tree_diff`); the added lines of each
//! (old blob, new blob) pair, scanned once.

use std::collections::HashSet;
use std::sync::atomic::{self, AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use git2::{Commit, ObjectType, Oid, Repository, Revwalk, Sort};

use crate::scanner::added::added_runs;
use crate::scanner::engine::Fragment;
use crate::scanner::objects::{Objects, OidHasher, OidMap, parents, parse_commit};
use crate::scanner::packs::Packs;
use crate::scanner::tree_diff::{Change, changed_blobs};
use crate::scanner::{Budget, Finding, RefUpdate, ScanError, Scanner};

/// Shown as the file of a finding in a commit message.
const COMMIT_MESSAGE_FILE: &str = "(commit message)";
/// Shown as the file of a finding in a commit's headers (author, committer, gpgsig, ...).
const COMMIT_HEADER_FILE: &str = "(commit header)";

/// What a scan reads of each commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// What gitleaks reads (`git log -p`): messages and the added lines of text files. Used
    /// for histories and ranges, whose findings stay comparable with gitleaks'.
    Gitleaks,
    /// Everything a push can carry upstream: also every commit header, every new file and
    /// directory name, and binary files (a NUL byte must not hide a token). Used by the gate.
    Push,
}

pub(crate) fn scan_push(
    scanner: &Scanner,
    repo: &Repository,
    updates: &[RefUpdate],
    budget: &Budget,
) -> Result<Vec<Finding>, ScanError> {
    let mut out = Vec::new();
    let spent = AtomicU64::new(0);
    let mut tips = Vec::new();
    for update in updates {
        if update.new.is_zero() {
            continue;
        }
        let mut obj = repo.find_object(update.new, None).map_err(git_err(|| {
            format!("find {} for {}", update.new, update.refname)
        }))?;
        // Annotated (possibly nested) tags: scan each whole tag object (tagger, message,
        // signature), then follow to the target, whatever its type.
        while obj.kind() == Some(ObjectType::Tag) {
            let Some(tag) = obj.as_tag() else { break };
            let odb = repo
                .odb()
                .map_err(git_err(|| "open object database".to_owned()))?;
            let raw = odb
                .read(tag.id())
                .map_err(git_err(|| format!("read tag {}", update.refname)))?;
            charge(budget, &spent, raw.data().len())?;
            let file = format!("(tag {})", update.refname);
            let mut found = scanner.scan_fragment(&Fragment {
                text: raw.data(),
                path: &file,
                commit: "",
                start_line: 1,
            });
            for f in &mut found {
                f.file.clone_from(&file);
                f.commit = tag.id().to_string();
            }
            out.extend(found);
            obj = tag
                .target()
                .map_err(git_err(|| format!("peel tag {}", update.refname)))?;
        }
        match obj.kind() {
            Some(ObjectType::Commit) => tips.push(obj.id()),
            Some(ObjectType::Blob) => {
                let blob = obj
                    .peel_to_blob()
                    .map_err(git_err(|| "read tagged blob".to_owned()))?;
                charge(budget, &spent, blob.content().len())?;
                out.extend(scanner.scan_fragment(&Fragment {
                    text: blob.content(),
                    path: &update.refname,
                    commit: "",
                    start_line: 1,
                }));
            }
            Some(ObjectType::Tree) => {
                scan_whole_tree(
                    scanner,
                    repo,
                    obj.id(),
                    &update.refname,
                    budget,
                    &spent,
                    &mut out,
                )?;
            }
            // Nothing else can be the target of a ref; refuse rather than pass it unscanned.
            other => {
                return Err(ScanError::Git {
                    what: format!("{} points at an object of type {other:?}", update.refname),
                    error: git2::Error::from_str("unexpected object type"),
                });
            }
        }
    }
    if tips.is_empty() {
        crate::scanner::finding::hide_secrets_in_context(&mut out);
        return Ok(out);
    }
    let commits = new_commits(repo, &tips)?;
    // Pushes are small: libgit2 reads their few objects faster than packs could be loaded.
    out.extend(scan_commits(
        scanner,
        repo,
        &commits,
        None,
        budget,
        &spent,
        Coverage::Push,
    )?);
    crate::scanner::finding::hide_secrets_in_context(&mut out);
    Ok(out)
}

/// Scans every blob and every path name of tree `tree` (a tag or ref pointing straight at a
/// tree carries all of it upstream), binary blobs included.
fn scan_whole_tree(
    scanner: &Scanner,
    repo: &Repository,
    tree: Oid,
    refname: &str,
    budget: &Budget,
    spent: &AtomicU64,
    out: &mut Vec<Finding>,
) -> Result<(), ScanError> {
    let tree = repo
        .find_tree(tree)
        .map_err(git_err(|| format!("read tree of {refname}")))?;
    let mut entries: Vec<(String, Oid, Option<ObjectType>)> = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        let name = String::from_utf8_lossy(entry.name_bytes());
        entries.push((format!("{root}{name}"), entry.id(), entry.kind()));
        git2::TreeWalkResult::Ok
    })
    .map_err(git_err(|| format!("walk tree of {refname}")))?;
    let mut seen = HashSet::new();
    for (path, id, kind) in entries {
        scan_name(scanner, &path, "", budget, spent, out)?;
        if kind != Some(ObjectType::Blob) || !seen.insert(id) {
            continue;
        }
        let blob = repo
            .find_blob(id)
            .map_err(git_err(|| format!("read blob {path} of {refname}")))?;
        charge(budget, spent, blob.content().len())?;
        out.extend(scanner.scan_fragment(&Fragment {
            text: blob.content(),
            path: &path,
            commit: "",
            start_line: 1,
        }));
    }
    Ok(())
}

/// Scans a file or directory name as text: a token can travel as a name.
fn scan_name(
    scanner: &Scanner,
    path: &str,
    commit: &str,
    budget: &Budget,
    spent: &AtomicU64,
    out: &mut Vec<Finding>,
) -> Result<(), ScanError> {
    charge(budget, spent, path.len())?;
    let mut found = scanner.scan_fragment(&Fragment {
        text: path.as_bytes(),
        path,
        commit,
        start_line: 1,
    });
    // Path-only rules judge the file, which its content scan already does.
    found.retain(|f| f.start_line != 0);
    for f in &mut found {
        f.file = format!("(file name) {path}");
    }
    out.extend(found);
    Ok(())
}

pub(crate) fn scan_range(
    scanner: &Scanner,
    repo: &Repository,
    range: &str,
    budget: &Budget,
) -> Result<Vec<Finding>, ScanError> {
    let mut walk = revwalk(repo)?;
    match range.contains("..") {
        true => walk.push_range(range),
        false => repo
            .revparse_single(range)
            .and_then(|o| o.peel_to_commit())
            .and_then(|c| walk.push(c.id())),
    }
    .map_err(git_err(|| format!("resolve range {range:?}")))?;
    let commits = collect(walk)?;
    let packs = packs_for(repo, commits.len());
    scan_commits(
        scanner,
        repo,
        &commits,
        packs,
        budget,
        &AtomicU64::new(0),
        Coverage::Gitleaks,
    )
}

pub(crate) fn scan_history(
    scanner: &Scanner,
    repo: &Repository,
    budget: &Budget,
) -> Result<Vec<Finding>, ScanError> {
    let mut tips = Vec::new();
    for r in repo
        .references()
        .map_err(git_err(|| "list refs".to_owned()))?
    {
        let r = r.map_err(git_err(|| "read ref".to_owned()))?;
        if let Ok(c) = r.peel_to_commit() {
            tips.push(c.id());
        }
    }
    if tips.is_empty() {
        // A repository without refs (or only HEAD detached) still has HEAD.
        match repo.head().and_then(|h| h.peel_to_commit()) {
            Ok(c) => tips.push(c.id()),
            Err(_) => return Ok(Vec::new()),
        }
    }
    // A whole history reads nearly every object: the packs' indexes are worth loading up
    // front, and the walk itself reads commits through them.
    let packs = Some(Packs::load(&repo.commondir().join("objects")));
    let threads = scanner.threads();
    let mut walker = Objects::for_walk(repo, packs.clone())
        .map_err(git_err(|| "open object database".to_owned()))?;
    if threads < 2 {
        let mut commits = Vec::new();
        walk_history(repo, &mut walker, &tips, |(_, chunk)| {
            commits.extend(chunk.into_iter().map(|(oid, _)| oid));
            true
        })?;
        return scan_commits(
            scanner,
            repo,
            &commits,
            packs,
            budget,
            &AtomicU64::new(0),
            Coverage::Gitleaks,
        );
    }
    // A pipeline: this thread walks the history and hands out stretches of consecutive
    // commits (neighbours share trees, blobs and delta bases, which each worker caches) while
    // the workers scan; findings are put back in walk order at the end. Each worker opens its
    // own handle: git2 repositories are not Sync.
    let path = repo.path().to_path_buf();
    let spent = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<(Oid, Vec<u8>)>)>(threads * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (path, spent, packs, rx, failed) = (&path, &spent, packs.clone(), &rx, &failed);
                s.spawn(move || -> Result<Vec<(usize, Vec<Tagged>)>, ScanError> {
                    let repo = Repository::open(path);
                    let mut worker = match &repo {
                        Ok(repo) => {
                            Worker::new(scanner, repo, packs, budget, spent, Coverage::Gitleaks)
                        }
                        Err(e) => Err(ScanError::Git {
                            what: "open repository".to_owned(),
                            error: git2::Error::from_str(e.message()),
                        }),
                    };
                    let mut done = Vec::new();
                    let mut error = None;
                    loop {
                        // The lock is held only to take the next stretch.
                        let Ok(Ok((n, chunk))) = rx.lock().map(|r| r.recv()) else {
                            break;
                        };
                        // After a failure keep draining, so the walker never blocks.
                        if error.is_some() {
                            continue;
                        }
                        let found = match &mut worker {
                            Ok(w) => w.scan_handed(chunk),
                            Err(e) => Err(ScanError::Input(e.to_string())),
                        };
                        match found {
                            Ok(found) => done.push((n, found)),
                            Err(e) => {
                                failed.store(true, atomic::Ordering::Relaxed);
                                error = Some(e);
                            }
                        }
                    }
                    match (error, worker) {
                        (Some(e), _) | (None, Err(e)) => Err(e),
                        (None, Ok(_)) => Ok(done),
                    }
                })
            })
            .collect();
        let walked = walk_history(repo, &mut walker, &tips, |chunk| {
            !failed.load(atomic::Ordering::Relaxed) && tx.send(chunk).is_ok()
        });
        drop(tx);
        let mut out = Vec::new();
        for h in handles {
            match h.join() {
                Ok(found) => out.extend(found?),
                Err(_) => return Err(ScanError::Input("scan worker panicked".to_owned())),
            }
        }
        walked?;
        out.sort_by_key(|(n, _)| *n);
        first_occurrences(repo, out.into_iter().flat_map(|(_, f)| f).collect())
    })
}

/// Below this many commits a scan reads through libgit2 alone: loading the pack indexes
/// (and sorting their offsets) would cost more than it saves.
const PACKS_FROM_COMMITS: usize = 2000;

/// The repository's packs for a scan of `commits` commits, when worth loading.
fn packs_for(repo: &Repository, commits: usize) -> Option<Arc<Packs>> {
    (commits >= PACKS_FROM_COMMITS).then(|| Packs::load(&repo.commondir().join("objects")))
}

/// Every commit reachable from `tips`, breadth first (so neighbours in the list are
/// neighbours in history, which the workers' caches rely on), with its raw bytes (the walk
/// reads them anyway; a worker need not inflate them again). Shallow boundary commits
/// (`.git/shallow`) count as roots, as in git.
fn walk_history(
    repo: &Repository,
    objects: &mut Objects<'_>,
    tips: &[Oid],
    mut emit: impl FnMut((usize, Vec<(Oid, Vec<u8>)>)) -> bool,
) -> Result<(), ScanError> {
    let shallow = shallow_commits(repo);
    let mut seen: OidMap<()> = OidMap::default();
    let mut queue: std::collections::VecDeque<Oid> = std::collections::VecDeque::new();
    for &t in tips {
        if seen.insert(t, ()).is_none() {
            queue.push_back(t);
        }
    }
    let mut chunk = Vec::with_capacity(WALK_CHUNK);
    let mut n = 0;
    while let Some(c) = queue.pop_front() {
        let raw = match shallow.contains_key(&c) {
            true => None,
            false => Some(
                objects
                    .commit(c)
                    .map_err(git_err(|| format!("read commit {c}")))?,
            ),
        };
        if let Some(raw) = &raw {
            for p in parents(raw) {
                let p = p.map_err(git_err(|| format!("parse commit {c}")))?;
                if seen.insert(p, ()).is_none() {
                    queue.push_back(p);
                }
            }
        }
        // A shallow boundary commit is handed over without bytes: the worker reads it.
        chunk.push((c, raw.map(|r| r.to_vec()).unwrap_or_default()));
        // The first stretches are short, so every worker starts at once.
        if chunk.len() >= (64usize << n.min(5)).min(WALK_CHUNK) {
            if !emit((n, std::mem::take(&mut chunk))) {
                return Ok(());
            }
            n += 1;
        }
    }
    if !chunk.is_empty() {
        emit((n, chunk));
    }
    Ok(())
}

/// How many consecutive commits the history walk hands a worker at a time: large enough
/// that the worker's caches pay off, small enough that the workers start early.
const WALK_CHUNK: usize = 2048;

/// The boundary commits of a shallow clone: their parents are not in the repository.
fn shallow_commits(repo: &Repository) -> OidMap<()> {
    std::fs::read_to_string(repo.commondir().join("shallow"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Oid::from_str(l.trim()).ok())
        .map(|o| (o, ()))
        .collect()
}

fn revwalk(repo: &Repository) -> Result<Revwalk<'_>, ScanError> {
    // Unsorted: order does not matter to a scan, and sorting would force a full walk first.
    let mut walk = repo
        .revwalk()
        .map_err(git_err(|| "start revwalk".to_owned()))?;
    walk.set_sorting(Sort::NONE)
        .map_err(git_err(|| "sort revwalk".to_owned()))?;
    Ok(walk)
}

/// The commits reachable from `tips` and from no existing ref: `git rev-list <tips> --not
/// --glob=refs/*`, as a subprocess. libgit2's revwalk took seconds with a thousand refs
/// (one `hide` per ref); git answers in milliseconds. Run in a pre-receive hook, git inherits the
/// quarantine environment, so it sees the pushed objects; the refs are still the old ones.
/// A ref git cannot read makes this fail, and the push is rejected: the safe side.
fn new_commits(repo: &Repository, tips: &[Oid]) -> Result<Vec<Oid>, ScanError> {
    let fail = |what: String| ScanError::Git {
        what: "list the pushed commits (git rev-list)".to_owned(),
        error: git2::Error::from_str(&what),
    };
    let output = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo.path())
        .arg("rev-list")
        .args(tips.iter().map(Oid::to_string))
        // Every ref, but not HEAD: a detached HEAD is no ref the push can be compared with
        // (libgit2's reference list, used before, has no HEAD either).
        .args(["--not", "--glob=refs/*"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run git: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(format!(
            "{}: {}",
            output.status,
            stderr.trim().chars().take(500).collect::<String>()
        )));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| Oid::from_str(l.trim()).map_err(|e| fail(format!("bad output {l:?}: {e}"))))
        .collect()
}

fn collect(walk: Revwalk<'_>) -> Result<Vec<Oid>, ScanError> {
    walk.collect::<Result<Vec<_>, _>>()
        .map_err(git_err(|| "walk commits".to_owned()))
}

fn scan_commits(
    scanner: &Scanner,
    repo: &Repository,
    commits: &[Oid],
    packs: Option<Arc<Packs>>,
    budget: &Budget,
    spent: &AtomicU64,
    coverage: Coverage,
) -> Result<Vec<Finding>, ScanError> {
    let tagged = Worker::new(scanner, repo, packs, budget, spent, coverage)?.scan(commits)?;
    first_occurrences(repo, tagged)
}

/// A finding, with where its blob pair occurred when it came from one.
struct Tagged {
    finding: Finding,
    occurrence: Option<Occurrence>,
}

/// One occurrence of a blob pair: in which commit, and where in that commit's tree diff.
#[derive(Clone, Copy)]
struct Occurrence {
    old: Oid,
    new: Oid,
    order: Order,
}

/// Committer time, then commit id, then the change's index in the commit's diff: the order
/// among commits not related by ancestry.
type Order = (i64, Oid, u32);

/// Keeps, for each blob pair, only the findings of its first occurrence, so a pair is
/// reported once and by the same commit whatever the threads or the order they ran in.
/// First: a commit none of whose ancestors among the pair's commits also has findings for
/// it (the commit that introduced the pair, not a merge that brought it in again); among
/// those, the oldest by committer time, then by commit id; within a commit, the first path
/// in tree order. Only pairs with findings in several commits need the ancestry check.
fn first_occurrences(repo: &Repository, tagged: Vec<Tagged>) -> Result<Vec<Finding>, ScanError> {
    let mut candidates: std::collections::HashMap<(Oid, Oid), Vec<Order>> =
        std::collections::HashMap::new();
    for t in &tagged {
        if let Some(o) = t.occurrence {
            let list = candidates.entry((o.old, o.new)).or_default();
            if !list.contains(&o.order) {
                list.push(o.order);
            }
        }
    }
    let mut first: std::collections::HashMap<(Oid, Oid), Order> =
        std::collections::HashMap::with_capacity(candidates.len());
    for (pair, mut list) in candidates {
        list.sort_unstable();
        let mut chosen = list[0];
        if list.len() > 1 {
            for &c in &list {
                let mut has_earlier_ancestor = false;
                for &other in &list {
                    if other.1 != c.1
                        && repo
                            .graph_descendant_of(c.1, other.1)
                            .map_err(git_err(|| format!("ancestry of {}", c.1)))?
                    {
                        has_earlier_ancestor = true;
                        break;
                    }
                }
                if !has_earlier_ancestor {
                    chosen = c;
                    break;
                }
            }
        }
        first.insert(pair, chosen);
    }
    Ok(tagged
        .into_iter()
        .filter(|t| {
            t.occurrence
                .is_none_or(|o| first.get(&(o.old, o.new)) == Some(&o.order))
        })
        .map(|t| t.finding)
        .collect())
}

/// What a merge contributes: of the files that differ from its first parent (`changed`), only
/// those whose content differs from every other parent too. A file taken as it is from one
/// parent was scanned in the commits that made it there (gitleaks, like `git log -p`, shows a
/// merge no diff at all); what is left is what the merge itself wrote, such as a conflict
/// resolution or an "evil merge", scanned as its lines added to the first parent. A commit
/// with one parent keeps `changed` as it is.
fn keep_what_no_parent_has(
    objects: &mut Objects<'_>,
    raw: &[u8],
    tree: Oid,
    changed: &mut Vec<Change>,
) -> Result<(), ScanError> {
    let others: Vec<Oid> = parents(raw)
        .skip(1)
        .collect::<Result<_, _>>()
        .map_err(git_err(|| "parse the parents of a merge".to_owned()))?;
    let mut differs = Vec::new();
    for parent in others {
        if changed.is_empty() {
            break;
        }
        let parent_tree = match objects.commit(parent) {
            Ok(raw) => {
                parse_commit(&raw)
                    .map_err(git_err(|| format!("parse commit {parent}")))?
                    .tree
            }
            // A shallow boundary: that parent's content is not here to compare with.
            Err(e) if e.code() == git2::ErrorCode::NotFound => continue,
            Err(e) => {
                return Err(ScanError::Git {
                    what: format!("read parent {parent}"),
                    error: e,
                });
            }
        };
        differs.clear();
        changed_blobs(objects, Some(parent_tree), tree, "", &mut differs)?;
        let differs: std::collections::HashSet<(&str, Oid)> =
            differs.iter().map(|c| (c.path.as_str(), c.new)).collect();
        changed.retain(|c| differs.contains(&(c.path.as_str(), c.new)));
    }
    Ok(())
}

/// One thread's scan state, kept across the stretches of history it is given.
struct Worker<'r, 's> {
    ctx: Ctx<'s>,
    repo: &'r Repository,
    objects: Objects<'r>,
    /// (old blob, new blob, path) triples already scanned, and whether they had findings.
    seen: Seen,
    changed: Vec<Change>,
    /// The blob pair each range of the findings of the current stretch came from.
    spans: Vec<Span>,
}

/// Findings `start..end` of a stretch came from one blob pair occurrence.
struct Span {
    start: usize,
    end: usize,
    occurrence: Occurrence,
}

impl<'r, 's> Worker<'r, 's> {
    fn new(
        scanner: &'s Scanner,
        repo: &'r Repository,
        packs: Option<Arc<Packs>>,
        budget: &'s Budget,
        spent: &'s AtomicU64,
        coverage: Coverage,
    ) -> Result<Worker<'r, 's>, ScanError> {
        Ok(Worker {
            ctx: Ctx {
                scanner,
                budget,
                spent,
                coverage,
                commit_dependent: scanner.commit_dependent(),
            },
            repo,
            objects: Objects::new(repo, packs)
                .map_err(git_err(|| "open object database".to_owned()))?,
            seen: Seen::default(),
            changed: Vec::new(),
            spans: Vec::new(),
        })
    }

    /// Scans a stretch of the history walk, reusing the commit bytes the walk read.
    fn scan_handed(&mut self, chunk: Vec<(Oid, Vec<u8>)>) -> Result<Vec<Tagged>, ScanError> {
        let commits: Vec<Oid> = chunk.iter().map(|(oid, _)| *oid).collect();
        self.objects
            .hand_over(chunk.into_iter().filter(|(_, raw)| !raw.is_empty()));
        self.scan(&commits)
    }

    fn scan(&mut self, commits: &[Oid]) -> Result<Vec<Tagged>, ScanError> {
        let mut out = Vec::new();
        self.spans.clear();
        for &oid in commits {
            let start = out.len();
            self.ctx.scan_commit(
                &mut self.objects,
                oid,
                &mut self.seen,
                &mut self.changed,
                &mut self.spans,
                &mut out,
            )?;
            if out.len() > start {
                let commit = self
                    .repo
                    .find_commit(oid)
                    .map_err(git_err(|| format!("read commit {oid}")))?;
                annotate(&commit, &mut out[start..]);
            }
        }
        let mut spans = self.spans.drain(..).peekable();
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, finding)| {
                while spans.next_if(|s| s.end <= i).is_some() {}
                let occurrence = spans
                    .peek()
                    .filter(|s| s.start <= i && i < s.end)
                    .map(|s| s.occurrence);
                Tagged {
                    finding,
                    occurrence,
                }
            })
            .collect())
    }
}

/// (old blob, new blob, hash of the path) already scanned, hashed like ids, and whether the
/// rules found anything there. The path is part of the key because path rules and
/// allowlists make a pair's findings depend on it: which path a worker met first must not
/// decide what is reported.
type Seen =
    std::collections::HashMap<(Oid, Oid, u64), bool, std::hash::BuildHasherDefault<OidHasher>>;

/// What every commit of one scan shares.
struct Ctx<'s> {
    scanner: &'s Scanner,
    budget: &'s Budget,
    spent: &'s AtomicU64,
    coverage: Coverage,
    /// `Scanner::commit_dependent`, asked once.
    commit_dependent: bool,
}

impl Ctx<'_> {
    fn scan_commit(
        &self,
        objects: &mut Objects<'_>,
        oid: Oid,
        seen: &mut Seen,
        changed: &mut Vec<Change>,
        spans: &mut Vec<Span>,
        out: &mut Vec<Finding>,
    ) -> Result<(), ScanError> {
        let raw = objects
            .commit(oid)
            .map_err(git_err(|| format!("read commit {oid}")))?;
        let info = parse_commit(&raw).map_err(git_err(|| format!("parse commit {oid}")))?;
        let time = committer_time(&raw);
        let id = oid.to_string();
        charge(self.budget, self.spent, info.message.len())?;
        let mut found = self.scanner.scan_fragment(&Fragment {
            text: info.message,
            path: "",
            commit: &id,
            start_line: 1,
        });
        for f in &mut found {
            f.file = COMMIT_MESSAGE_FILE.to_owned();
        }
        out.extend(found);
        if self.coverage == Coverage::Push {
            // Author, committer, gpgsig and any other header can carry text upstream.
            let headers = &raw[..raw.len() - info.message.len()];
            charge(self.budget, self.spent, headers.len())?;
            let mut found = self.scanner.scan_fragment(&Fragment {
                text: headers,
                path: "",
                commit: &id,
                start_line: 1,
            });
            for f in &mut found {
                f.file = COMMIT_HEADER_FILE.to_owned();
            }
            out.extend(found);
        }

        let parent_tree = match info.first_parent {
            // A shallow clone's boundary commit has no parent here: git shows it as a root.
            Some(p) => match objects.commit(p) {
                Ok(raw) => Some(
                    parse_commit(&raw)
                        .map_err(git_err(|| format!("parse commit {p}")))?
                        .tree,
                ),
                Err(e) if e.code() == git2::ErrorCode::NotFound => None,
                Err(e) => {
                    return Err(ScanError::Git {
                        what: format!("read parent {p} of {id}"),
                        error: e,
                    });
                }
            },
            None => None,
        };
        changed.clear();
        changed_blobs(objects, parent_tree, info.tree, "", changed)?;
        if parent_tree.is_some() {
            keep_what_no_parent_has(objects, &raw, info.tree, changed)?;
        }
        for (index, change) in changed.drain(..).enumerate() {
            // A new path (added or renamed to) carries its name upstream, whatever its
            // content; checked before the content, which may have been seen under another name.
            if self.coverage == Coverage::Push && change.old.is_zero() {
                scan_name(
                    self.scanner,
                    &change.path,
                    &id,
                    self.budget,
                    self.spent,
                    out,
                )?;
            }
            // A pair seen clean under this path is clean again, unless an allowlist names
            // commits; one that had findings is scanned again, so every commit that carries
            // it is a candidate for `first_occurrences` and the result cannot depend on
            // which commits this worker happened to see first.
            let key = (change.old, change.new, path_hash(&change.path));
            if seen.get(&key) == Some(&false) && !self.commit_dependent {
                continue;
            }
            let start = out.len();
            let detected = self.scan_change(objects, &change, &id, out)?;
            seen.insert(key, detected);
            if out.len() > start {
                spans.push(Span {
                    start,
                    end: out.len(),
                    occurrence: Occurrence {
                        old: change.old,
                        new: change.new,
                        order: (time, oid, u32::try_from(index).unwrap_or(u32::MAX)),
                    },
                });
            }
        }
        Ok(())
    }

    /// Scans the lines `change` adds: the whole blob for a new file, else the runs of added
    /// lines (the `+` side of zero-context hunks), one fragment each. Returns whether the
    /// rules found anything, before the ignore list.
    fn scan_change(
        &self,
        objects: &mut Objects<'_>,
        change: &Change,
        commit: &str,
        out: &mut Vec<Finding>,
    ) -> Result<bool, ScanError> {
        let mut detected = false;
        let path = &change.path;
        let new = objects
            .blob(change.new)
            .map_err(git_err(|| format!("read blob {path}")))?;
        // gitleaks (like `git log -p`) skips binary files; a push scans them too, since a NUL
        // byte at the start must not hide a token behind it.
        // Path-only rules still judge the file by its name.
        if self.coverage == Coverage::Gitleaks && is_binary(&new) {
            out.extend(self.scanner.scan_path_rules(path, commit, &mut detected));
            return Ok(detected);
        }
        if change.old.is_zero() {
            charge(self.budget, self.spent, new.len())?;
            out.extend(self.scanner.scan_fragment_noting(
                &Fragment {
                    text: &new,
                    path,
                    commit,
                    start_line: 1,
                },
                &mut detected,
            ));
            return Ok(detected);
        }
        let old = objects
            .blob(change.old)
            .map_err(git_err(|| format!("read blob {path}")))?;
        let runs = added_runs(&old, &new).map_err(git_err(|| format!("diff {path}")))?;
        for run in runs {
            charge(self.budget, self.spent, run.text.len())?;
            out.extend(self.scanner.scan_fragment_noting(
                &Fragment {
                    text: &run.text,
                    path,
                    commit,
                    start_line: run.start_line,
                },
                &mut detected,
            ));
        }
        Ok(detected)
    }
}

/// The committer time of a raw commit (seconds since the epoch), 0 when unreadable: only an
/// order among commits, never shown.
fn committer_time(raw: &[u8]) -> i64 {
    let headers = memchr::memmem::find(raw, b"\n\n").map_or(raw, |at| &raw[..at]);
    headers
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"committer "))
        .and_then(|l| l.rsplit(|&b| b == b' ').nth(1))
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn path_hash(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// git's test for a binary file (what `git log -p` shows as "Binary files differ"): a NUL
/// byte in the first 8000 bytes.
fn is_binary(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(8000)]).is_some()
}

/// Fills in who made the commit, for the report.
fn annotate(commit: &Commit<'_>, findings: &mut [Finding]) {
    let author = commit.author();
    let name = String::from_utf8_lossy(author.name_bytes()).into_owned();
    let email = String::from_utf8_lossy(author.email_bytes()).into_owned();
    let date = format_time(author.when());
    let summary = String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned();
    for f in findings {
        f.author.clone_from(&name);
        f.email.clone_from(&email);
        f.date.clone_from(&date);
        f.message.clone_from(&summary);
    }
}

/// Seconds since the epoch plus offset, as `YYYY-MM-DDTHH:MM:SSZ` in UTC.
fn format_time(t: git2::Time) -> String {
    let secs = t.seconds();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn charge(budget: &Budget, spent: &AtomicU64, bytes: usize) -> Result<(), ScanError> {
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    let total = spent
        .fetch_add(bytes, atomic::Ordering::Relaxed)
        .saturating_add(bytes);
    if total > budget.max_bytes {
        return Err(ScanError::OverBudget {
            what: format!("more than {} bytes to scan", budget.max_bytes),
        });
    }
    if budget
        .deadline
        .is_some_and(|d| std::time::Instant::now() > d)
    {
        return Err(ScanError::OverBudget {
            what: "scan took longer than allowed".to_owned(),
        });
    }
    Ok(())
}

pub(crate) fn git_err<F: FnOnce() -> String>(what: F) -> impl FnOnce(git2::Error) -> ScanError {
    // The context is built only on error: these sit on the per-object hot path.
    move |error| ScanError::Git {
        what: what(),
        error,
    }
}
