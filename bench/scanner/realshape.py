"""A git history shaped like a real repository, for bench/scanner/run (`--shape real`).

Written as one `git fast-import` stream, deterministic for a seed:

  * a main line with feature branches forked from it, each of a few commits, merged back by
    `--no-ff` style merge commits; some octopus merges of 3-4 branches, some criss-cross
    merges (two open branches merging each other, then both merged into main), some merges of
    main into an open branch; about a quarter of all commits are merges;
  * trees of ~4,000 files in ~200 directories (the first commit imports half of them, later
    commits add the rest), most commits modifying a few existing files in place (a few
    replaced or inserted lines, the realistic diff), some adding, deleting or renaming files;
  * conflicts: a file both sides changed is resolved by the merge into content of its own;
  * a few large text blobs (several MB, changed now and then) and binary blobs (NUL bytes);
  * ~1,000 tags, lightweight and annotated, and tags of blobs that no commit has;
  * planted secrets in every kind of object: added lines of plain commits (text, large and
    binary files), an evil-merge line in merge commits, commit messages, commit headers
    (author name), file names, annotated tag messages and blobs reached only through a tag.

Each plant records where each tool should report it (see `EXPECTED` in run).
"""

import random
import subprocess
import sys

TOPS = ["src", "lib", "tests", "docs", "tools", "web", "api", "core"]
EXTS = [".rs", ".py", ".js", ".go", ".ts", ".md", ".json", ".yaml", ".c", ".h"]

# Kinds of plant, and which tool/mode is expected to report them:
#   history = `bottle-bundle scan --git` and gitleaks `git` (what `git log -p` shows);
#   push = `bottle-bundle scan --pre-receive` of the whole history into an empty mirror.
KINDS = {
    "commit-line": "an added line in a plain commit",
    "large-blob": "an added line in a multi-MB file",
    "merge-line": "a line only the merge commit wrote (evil merge / conflict resolution)",
    "message": "a commit message",
    "header": "a commit header (author name)",
    "file-name": "a file name",
    "binary": "a line of a binary file (NUL bytes)",
    "tag-message": "an annotated tag's message",
    "tag-blob": "a blob reached only through a tag",
}


class Branch:
    def __init__(self, name, tip, tree, seq, target):
        self.name = name
        self.tip = tip  # mark of the last commit
        self.tree = tree  # path -> blob mark
        self.seq = seq  # main's change log position this branch last synced with
        self.touched = set()  # paths changed on this branch since it forked
        self.commits = 0
        self.target = target  # commits before it is merged


class Generator:
    def __init__(self, out, r, pool, formats, commits, files, dirs, tags, plants_per_kind):
        self.out = out
        self.r = r
        self.pool = pool
        self.formats = formats
        self.commits_wanted = commits
        self.files_wanted = files
        self.tags_wanted = tags
        self.plants_per_kind = plants_per_kind
        self.mark = 0
        self.content = {}  # blob mark -> bytes
        self.ts = 1_500_000_000
        self.ncommits = 0
        self.nmerges = 0
        self.planted = []
        self.main_log = []  # paths main changed, in order
        self.dirs = self.make_dirs(dirs)
        self.next_file = 0
        self.commit_marks = []  # every commit mark, in order
        self.tagged = []  # (name, commit mark, annotated, message)
        self.bigfiles = []
        self.binfiles = []
        self.plan = self.plant_schedule()
        self.merged = []  # branch refs merged into main, deleted after the import

    # ---------------------------------------------------------------- objects

    def new_mark(self):
        self.mark += 1
        return self.mark

    def blob(self, data):
        m = self.new_mark()
        self.out.write(b"blob\nmark :%d\ndata %d\n" % (m, len(data)))
        self.out.write(data)
        self.out.write(b"\n")
        self.content[m] = data
        return m

    def commit(self, ref, parents, changes, message, author="Dev Eloper"):
        """changes: list of (path, mark or None for delete)."""
        m = self.new_mark()
        self.ts += self.r.randint(30, 4000)
        email = author.split()[0].lower() + "@example.test"
        w = self.out.write
        w(b"commit %s\nmark :%d\n" % (ref.encode(), m))
        w(b"author %s <%s> %d +0000\n" % (author.encode(), email.encode(), self.ts))
        w(b"committer %s <%s> %d +0000\n" % (author.encode(), email.encode(), self.ts))
        msg = message.encode()
        w(b"data %d\n%s\n" % (len(msg), msg))
        if parents:
            w(b"from :%d\n" % parents[0])
            for p in parents[1:]:
                w(b"merge :%d\n" % p)
        for path, blob in changes:
            if blob is None:
                w(b"D %s\n" % path.encode())
            else:
                mode = b"100644"
                w(b"M %s :%d %s\n" % (mode, blob, path.encode()))
        w(b"\n")
        self.ncommits += 1
        if len(parents) > 1:
            self.nmerges += 1
        self.commit_marks.append(m)
        return m

    # ---------------------------------------------------------------- content

    def make_dirs(self, n):
        r = self.r
        dirs = []
        words = ["auth", "http", "db", "cache", "queue", "ui", "cli", "net", "io", "log", "cfg",
                 "util", "model", "view", "store", "sync", "jobs", "mail", "pay", "search",
                 "admin", "report", "media", "geo", "crypto", "i18n", "metrics", "plugin"]
        i = 0
        while len(dirs) < n:
            top = TOPS[i % len(TOPS)]
            sub = "%s/%s%d" % (top, words[(i // len(TOPS)) % len(words)], i // (len(TOPS) * len(words)))
            dirs.append(sub)
            # About one in four directories has a nested one.
            if r.random() < 0.25 and len(dirs) < n:
                dirs.append(sub + "/" + r.choice(words))
            i += 1
        return dirs

    def lines(self, k):
        return self.r.choices(self.pool, k=k)

    def new_path(self):
        self.next_file += 1
        d = self.r.choice(self.dirs)
        return "%s/%s_%s_%d%s" % (d, self.word(), self.word(), self.next_file, self.r.choice(EXTS))

    def word(self):
        return self.r.choice(["value", "count", "index", "buffer", "result", "config", "handler",
                              "request", "client", "server", "parse", "render", "update",
                              "stream", "reader", "writer", "context", "session", "event",
                              "record", "worker", "task", "state", "error"])

    def new_file_body(self):
        n = int(self.r.lognormvariate(4.4, 0.9))  # median ~80 lines, a long tail
        return ("\n".join(self.lines(max(3, min(n, 4000)))) + "\n").encode()

    def edit(self, data, plant=None):
        """A few hunks: lines replaced, inserted, deleted. Returns (new bytes, planted line)."""
        r = self.r
        ls = data.decode().split("\n")
        if ls and ls[-1] == "":
            ls.pop()
        for _ in range(r.choice([1, 1, 2, 2, 3, 4])):
            at = r.randrange(len(ls) + 1)
            op = r.random()
            if op < 0.5 and at < len(ls):
                k = r.randint(1, 3)
                ls[at:at + k] = self.lines(r.randint(1, 3))
            elif op < 0.9:
                # Heavy-tailed: most inserts are a few lines, some are hundreds.
                ls[at:at] = self.lines(min(400, max(1, int(r.lognormvariate(1.4, 1.2)))))
            elif len(ls) > 4:
                del ls[at:at + r.randint(1, 2)]
        line = None
        if plant is not None:
            at = r.randrange(len(ls) + 1)
            ls.insert(at, plant)
            line = at + 1
        return ("\n".join(ls) + "\n").encode(), line

    def secret_line(self):
        rule, make, tpl = self.formats[len(self.planted) % len(self.formats)]
        secret = make(self.r)
        return rule, secret, tpl.format(secret)

    # ---------------------------------------------------------------- plants

    def plant_schedule(self):
        """Which commit numbers carry which plant kind (history kinds spread evenly)."""
        n = self.plants_per_kind
        plan = {}
        span = self.commits_wanted
        for k, kind in enumerate(["commit-line", "message", "header", "file-name", "binary"]):
            count = n * (3 if kind == "commit-line" else 1)
            for i in range(count):
                at = 50 + (i * span // count + k * 37) % (span - 100)
                while at in plan:
                    at += 1
                plan[at] = kind
        return sorted(plan.items())

    def record(self, kind, commit, file, line, rule, secret):
        self.planted.append({"kind": kind, "commit": commit, "file": file, "line": line,
                             "rule": rule, "secret": secret})

    # ---------------------------------------------------------------- history

    def run(self):
        r = self.r
        # The first commit: half the files.
        tree = {}
        changes = []
        for _ in range(self.files_wanted // 2):
            p = self.new_path()
            tree[p] = self.blob(self.new_file_body())
            changes.append((p, tree[p]))
        root = self.commit("refs/heads/main", [], changes, "initial import")
        main = Branch("refs/heads/main", root, tree, 0, 0)
        self.main = main
        open_branches = []
        nbranch = 0
        pending_merge_plants = self.plants_per_kind
        pending_big = self.plants_per_kind // 2 or 1
        merge_every = max(1, self.commits_wanted // (4 * self.plants_per_kind))
        while self.ncommits < self.commits_wanted:
            x = r.random()
            ready = [b for b in open_branches if b.commits >= b.target]
            if ready and x < 0.32:
                # Merge: usually one branch, sometimes an octopus of 2-3.
                if len(ready) >= 3 and r.random() < 0.06:
                    group = ready[:r.randint(2, 3)]
                else:
                    group = [ready[0]]
                evil = pending_merge_plants > 0 and self.nmerges % merge_every == merge_every - 1
                self.merge(main, group, evil)
                if evil:
                    pending_merge_plants -= 1
                for b in group:
                    open_branches.remove(b)
            elif len(open_branches) >= 2 and 0.32 <= x < 0.328:
                # Criss-cross: two open branches merge each other's tips.
                a, b = r.sample(open_branches, 2)
                a_tip, b_tip = a.tip, b.tip
                a_tree, b_tree = dict(a.tree), dict(b.tree)
                self.merge_into_branch(a, b, b_tip, b_tree)
                self.merge_into_branch(b, a, a_tip, a_tree)
            elif open_branches and 0.328 <= x < 0.34:
                # Main merged into an open branch (a sync).
                b = r.choice(open_branches)
                self.sync(b, main)
            elif len(open_branches) < 8 and 0.34 <= x < 0.56:
                nbranch += 1
                b = Branch("refs/heads/topic/%d" % nbranch, main.tip, dict(main.tree),
                           len(self.main_log), r.choice([1, 1, 1, 1, 1, 2, 2, 2, 3, 5]))
                open_branches.append(b)
                self.work(b)
            elif open_branches and x < 0.95:
                self.work(r.choice(open_branches))
            else:
                self.work(main)
            if self.ncommits % 4000 == 0:
                self.gc([main] + open_branches)
            if pending_big and self.ncommits > self.commits_wanted // 3 and not self.bigfiles:
                self.add_big(main)
            if self.bigfiles and r.random() < 0.001:
                plant = pending_big > 0 and r.random() < 0.5
                self.touch_big(main, plant)
                pending_big -= plant
        while pending_big > 0 and self.bigfiles:
            self.touch_big(main, True)
            pending_big -= 1
        for b in open_branches:
            # Left open: still a branch, as in real repositories.
            self.out.write(b"reset %s\nfrom :%d\n\n" % (b.name.encode(), b.tip))
        self.make_tags()
        return self.main

    def work(self, b):
        """One ordinary commit on branch b: a few files modified, sometimes added/removed."""
        r = self.r
        n = self.ncommits
        kind = None
        if self.plan and self.plan[0][0] <= n:
            kind = self.plan.pop(0)[1]
        changes = []
        paths = list(b.tree)
        nmod = r.choice([1, 1, 1, 2, 2, 3, 4, 6])
        # Files of one or two directories, as a real change is.
        anchor = r.choice(paths)
        d = anchor.rsplit("/", 1)[0]
        near = [p for p in paths[max(0, paths.index(anchor) - 40):paths.index(anchor) + 40]
                if p.startswith(d) and not p.startswith("assets/") and not p.startswith("data/")]
        targets = set(r.sample(near, min(nmod, len(near)))) if near else {anchor}
        plant_line = None
        planted = None
        if kind == "commit-line":
            rule, secret, plant_line = self.secret_line()
        for i, p in enumerate(sorted(targets)):
            if p.startswith("assets/") or p.startswith("data/"):
                continue
            data, line = self.edit(self.content[b.tree[p]], plant_line if i == 0 else None)
            m = self.blob(data)
            b.tree[p] = m
            changes.append((p, m))
            if line is not None:
                planted = (p, line)
        x = r.random()
        files_now = len(b.tree)
        grow = self.files_wanted * (0.5 + 0.5 * n / self.commits_wanted)
        if kind == "file-name" or x < (0.3 if files_now < grow else 0.015):
            p = self.new_path()
            if kind == "file-name":
                rule, secret, _ = self.secret_line_for_name()
                p = "%s/%s" % (r.choice(self.dirs), secret)
            m = self.blob(self.new_file_body())
            b.tree[p] = m
            changes.append((p, m))
            if kind == "file-name":
                planted_name = p
        elif 0.3 <= x < 0.315 and len(paths) > 100:
            # Rename, with a small edit (git sees a rename; we see a new path).
            old = r.choice(paths)
            if not old.startswith(("assets/", "data/")) and old not in targets:
                new = old.rsplit("/", 1)[0] + "/renamed_%d_" % self.next_file + old.rsplit("/", 1)[1]
                self.next_file += 1
                data, _ = self.edit(self.content[b.tree[old]]) if r.random() < 0.5 else (self.content[b.tree[old]], None)
                m = b.tree.pop(old)
                m = self.blob(data) if data is not self.content[m] else m
                b.tree[new] = m
                changes += [(old, None), (new, m)]
                b.touched.add(old)
        elif 0.315 <= x < 0.325 and len(paths) > 100:
            old = r.choice(paths)
            if not old.startswith(("assets/", "data/")) and old not in targets:
                del b.tree[old]
                changes.append((old, None))
        if kind == "binary" or (x > 0.985):
            p, m, line = self.binary(b, kind == "binary")
            changes.append((p, m))
            if kind == "binary":
                rule, secret = line
                planted_bin = p
        msg = self.message()
        author = "Dev Eloper"
        if kind == "message":
            rule, secret, text = self.secret_line()
            msg += "\n\nDeployed with " + text
        if kind == "header":
            rule, secret, _ = self.secret_line_for_name()
            author = "Dev " + secret
        c = self.commit(b.name, [b.tip], changes, msg, author)
        b.tip = c
        b.commits += 1
        for p, _ in changes:
            b.touched.add(p)
            if b is self.main:
                self.main_log.append(p)
        if kind == "commit-line" and planted:
            self.record(kind, c, planted[0], planted[1], rule, secret)
        elif kind == "message":
            self.record(kind, c, "(commit message)", None, rule, secret)
        elif kind == "header":
            self.record(kind, c, "(commit header)", None, rule, secret)
        elif kind == "file-name":
            self.record(kind, c, "(file name) " + planted_name, None, rule, secret)
        elif kind == "binary":
            self.record(kind, c, planted_bin, None, rule, secret)
        elif kind is not None:
            self.plan.insert(0, (n, kind))  # could not plant here: the next commit

    def secret_line_for_name(self):
        # A token that can be a file name or an author name: no quotes, slashes or spaces.
        rules = [f for f in self.formats if f[0] in ("github-pat", "aws-access-key-id", "gitlab-pat")]
        rule, make, _ = rules[len(self.planted) % len(rules)]
        return rule, make(self.r), None

    def binary(self, b, plant):
        r = self.r
        existing = [p for p in b.tree if p.startswith("assets/")]
        if existing and not plant and r.random() < 0.6:
            p = r.choice(existing)
        else:
            p = "assets/img/icon_%d.png" % self.next_file
            self.next_file += 1
        body = bytearray(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")
        body += bytes(r.getrandbits(8) for _ in range(r.randint(2000, 40000)))
        secret = None
        if plant:
            rule, secret, text = self.secret_line()
            body += b"\n" + text.encode() + b"\n"
            secret = (rule, secret)
        m = self.blob(bytes(body))
        b.tree[p] = m
        return p, m, secret

    def add_big(self, main):
        changes = []
        for i in range(4):
            p = "data/fixtures/table_%d.csv" % i
            rows = self.r.randint(60_000, 150_000)
            body = "\n".join("%d,%s,%s,%d" % (j, self.word(), self.word(), self.r.randint(0, 10**9))
                             for j in range(rows)) + "\n"
            m = self.blob(body.encode())
            main.tree[p] = m
            changes.append((p, m))
            self.bigfiles.append(p)
        c = self.commit(main.name, [main.tip], changes, "add fixture tables")
        main.tip = c
        self.main_log += [p for p, _ in changes]

    def touch_big(self, main, plant):
        p = self.r.choice(self.bigfiles)
        rule = secret = text = None
        if plant:
            rule, secret, text = self.secret_line()
        data, line = self.edit(self.content[main.tree[p]], text)
        m = self.blob(data)
        main.tree[p] = m
        c = self.commit(main.name, [main.tip], [(p, m)], "refresh fixture " + p)
        main.tip = c
        self.main_log.append(p)
        if plant:
            self.record("large-blob", c, p, line, rule, secret)

    def resolve(self, ours, theirs):
        """A conflict resolution: their edit redone on our version (binary files: theirs)."""
        if self.content[ours].startswith(b"\x89PNG"):
            return theirs
        data, _ = self.edit(self.content[ours])
        return self.blob(data)

    def merge(self, main, group, evil):
        """Merges the branches of `group` into main (a --no-ff merge; an octopus for several)."""
        changes = {}
        main_changed = set(self.main_log[min(b.seq for b in group):])
        for b in group:
            for p in sorted(b.touched):
                theirs = b.tree.get(p)
                ours = main.tree.get(p)
                if theirs == ours:
                    continue
                if p in main_changed and ours is not None and theirs is not None:
                    m = self.resolve(ours, theirs)
                elif p in main_changed and theirs is None:
                    continue  # deleted there, changed here: keep ours
                else:
                    m = theirs
                changes[p] = m
        planted = None
        if evil:
            # A line only the merge wrote, in a file the branch changed (or any file).
            cand = [p for p, m in changes.items() if m is not None and not p.startswith(("assets/", "data/"))]
            if not cand:
                cand = [p for p in main.tree if not p.startswith(("assets/", "data/"))][:50]
            p = self.r.choice(cand)
            base = changes.get(p) or main.tree[p]
            rule, secret, text = self.secret_line()
            data, line = self.edit(self.content[base], text)
            changes[p] = self.blob(data)
            planted = (p, line, rule, secret)
        for p, m in changes.items():
            if m is None:
                main.tree.pop(p, None)
            else:
                main.tree[p] = m
        names = ", ".join(b.name.rsplit("/", 1)[1] for b in group)
        msg = "Merge branch%s 'topic/%s'" % ("es" if len(group) > 1 else "", names)
        c = self.commit(main.name, [main.tip] + [b.tip for b in group], sorted(changes.items()), msg)
        main.tip = c
        self.main_log += list(changes)
        self.merged += [b.name for b in group]
        if planted:
            self.record("merge-line", c, planted[0], planted[1], planted[2], planted[3])

    def merge_into_branch(self, b, other, other_tip, other_tree):
        """Branch b merges another open branch's tip (one half of a criss-cross)."""
        changes = {}
        for p in sorted(other.touched):
            theirs = other_tree.get(p)
            ours = b.tree.get(p)
            if theirs == ours:
                continue
            if p in b.touched and ours is not None and theirs is not None:
                m = self.resolve(ours, theirs)
            elif theirs is None:
                continue
            else:
                m = theirs
            changes[p] = m
        for p, m in changes.items():
            b.tree[p] = m
        c = self.commit(b.name, [b.tip, other_tip], sorted(changes.items()),
                        "Merge branch '%s' into %s" % (other.name[11:], b.name[11:]))
        b.tip = c
        b.touched |= set(changes)
        b.commits += 1

    def sync(self, b, main):
        changes = {}
        for p in sorted(set(self.main_log[b.seq:])):
            theirs = main.tree.get(p)
            ours = b.tree.get(p)
            if theirs == ours:
                continue
            if p in b.touched and ours is not None and theirs is not None:
                changes[p] = self.resolve(theirs, ours)
                b.touched.add(p)
            elif theirs is None:
                if ours is not None and p not in b.touched:
                    changes[p] = None
            elif p not in b.touched or ours is None:
                changes[p] = theirs
        for p, m in changes.items():
            if m is None:
                b.tree.pop(p, None)
            else:
                b.tree[p] = m
        c = self.commit(b.name, [b.tip, main.tip], sorted(changes.items()),
                        "Merge branch 'main' into %s" % b.name[11:])
        b.tip = c
        b.seq = len(self.main_log)
        b.commits += 1

    def message(self):
        r = self.r
        kind = r.choice(["fix", "feat", "refactor", "docs", "test", "chore", "perf"])
        return "%s(%s): %s the %s %s" % (kind, r.choice(TOPS), r.choice(["update", "handle", "rework", "simplify", "guard"]),
                                         self.word(), self.word())

    def gc(self, branches):
        live = set()
        for b in branches:
            live.update(b.tree.values())
        for m in list(self.content):
            if m not in live:
                del self.content[m]

    def make_tags(self):
        """~tags_wanted tags on commits spread over the history, a third of them annotated."""
        r = self.r
        marks = self.commit_marks
        n = self.tags_wanted
        plants = self.plants_per_kind
        for i in range(n):
            c = marks[min(len(marks) - 1, (i * len(marks)) // n + r.randrange(max(1, len(marks) // n)))]
            name = "v%d.%d.%d" % (i // 100, (i // 10) % 10, i % 10)
            if i % 3 == 0:
                msg = "release %s" % name
                if plants > 0 and i % (3 * max(1, n // (3 * self.plants_per_kind))) == 0:
                    rule, secret, text = self.secret_line()
                    msg += "\n\nsigned off with " + text
                    self.tagged.append((name, rule, secret))
                    plants -= 1
                m = msg.encode()
                self.out.write(b"tag %s\nfrom :%d\ntagger Rel Ease <rel@example.test> %d +0000\ndata %d\n%s\n"
                               % (name.encode(), c, self.ts, len(m), m))
            else:
                self.out.write(b"reset refs/tags/%s\nfrom :%d\n\n" % (name.encode(), c))


def generate(repo, args, pool, formats, seed):
    r = random.Random(seed)
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--export-marks=" + str(repo / "marks")],
                            cwd=repo, stdin=subprocess.PIPE)
    g = Generator(proc.stdin, r, pool, formats, args.commits, args.files, args.dirs, args.tags,
                  args.plants_per_kind)
    g.run()
    # Blobs reached only through a tag: written now, tagged below with git itself.
    tag_blobs = []
    for i in range(max(1, args.plants_per_kind // 2)):
        rule, secret, text = g.secret_line()
        body = ("# key material for the release pipeline\n%s\n" % text).encode()
        m = g.blob(body)
        tag_blobs.append((i, m, rule, secret))
    proc.stdin.close()
    if proc.wait() != 0:
        sys.exit("git fast-import failed")
    marks = {}
    for l in (repo / "marks").read_text().splitlines():
        m, sha = l.split()
        marks[int(m[1:])] = sha
    planted = g.planted
    for p in planted:
        p["commit"] = marks[p["commit"]]
    git = lambda *a, **kw: subprocess.run(["git", "-C", str(repo), *a], check=True,
                                          capture_output=True, **kw).stdout.decode().strip()
    # Merged topic branches are deleted, as on a real server.
    dels = "".join("delete %s\n" % name for name in g.merged)
    git("update-ref", "--stdin", input=dels.encode())
    for name, rule, secret in g.tagged:
        tag = git("rev-parse", "refs/tags/" + name)
        planted.append({"kind": "tag-message", "commit": tag, "file": "(tag refs/tags/%s)" % name,
                        "line": None, "rule": rule, "secret": secret})
    for i, m, rule, secret in tag_blobs:
        blob = marks[m]
        if i % 2 == 0:
            ref = "refs/tags/keys-%d" % i
            git("update-ref", ref, blob)
        else:
            text = ("object %s\ntype blob\ntag keyblob-%d\ntagger Rel Ease <rel@example.test> %d +0000\n\n"
                    "key blob\n" % (blob, i, g.ts))
            tag = git("mktag", input=text.encode())
            ref = "refs/tags/keyblob-%d" % i
            git("update-ref", ref, tag)
        planted.append({"kind": "tag-blob", "commit": "", "file": ref, "line": None,
                        "rule": rule, "secret": secret})
    stats = {"commits": g.ncommits, "merges": g.nmerges, "files": len(g.main.tree),
             "dirs": len({p.rsplit("/", 1)[0] for p in g.main.tree})}
    return planted, stats
