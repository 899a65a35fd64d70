#!/usr/bin/env python3
"""Runs the audit over the pinned corpus and scores it against the labels
(python3 >= 3.11).

Labels (labels/dev.toml, labels/holdout.toml) list the real per-instance state of each
repository as [[state]] entries: file, line, the rule family that should report it, and a
one-line justification. A finding is a true positive when it points at a labelled state
(same file and the same line as the state or one of its `lines` / `also` places, or
within +-2 lines of one when the finding's rule names the same kind of state); a second finding on the same
state is a duplicate and counts as a false positive, as does a finding that points at no
labelled state. Recall = labelled states found / labelled states.

Held-out states carry `added = "after-run"` when they were added after the tool's first
run on the repository (a finding that turned out to be real state the labeller had
missed), and [[alias]] entries (always after the run) say that a finding's place is the
same construct as a state labelled at another place. Both only count in the adjudicated
figures; the strict figures use the labels as committed before the run.

Language of a finding or state: the extension of its file (.js/.jsx/.mjs -> javascript,
.ts/.tsx -> typescript, ...); config files count under the repository's main language.

Usage:
  score.py [--split dev|holdout|all] [--repo NAME] [--no-scan] [--show fp,fn]
           [--scan BIN] [--offline]
--no-scan scores the cached results from the last run ($AUDIT_CORPUS/results).
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time
import tomllib
from collections import defaultdict

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402

TOL = 2
EXT = {
    "js": "javascript", "jsx": "javascript", "mjs": "javascript", "cjs": "javascript",
    "ts": "typescript", "tsx": "typescript", "mts": "typescript", "cts": "typescript",
    "py": "python", "go": "go", "java": "java", "rs": "rust", "php": "php",
    "rb": "ruby", "rake": "ruby",
}


def language(path: str, repo: dict) -> str:
    ext = path.rsplit(".", 1)[-1] if "." in path else ""
    return EXT.get(ext, repo["language"])


def load_labels() -> list[dict]:
    states, aliases = [], []
    for f in sorted((HERE / "labels").glob("*.toml")):
        data = tomllib.loads(f.read_text())
        for s in data.get("state", []):
            for k in ("repo", "file", "line", "rule", "why"):
                if k not in s:
                    raise SystemExit(f"{f.name}: state {s} lacks `{k}`")
            states.append(s)
        aliases.extend(data.get("alias", []))
    # An after-run alias says a finding's place is the same construct as a labelled state
    # reported elsewhere; it only counts in the adjudicated figures.
    for a in aliases:
        target = [s for s in states if s["repo"] == a["repo"] and f"{s['file']}:{s['line']}" == a["state"]]
        if len(target) != 1:
            raise SystemExit(f"alias {a} names no single state")
        target[0].setdefault("after_run_also", []).append(f"{a['file']}:{a['line']}")
    return states


def scanner(path: str | None) -> str:
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", str(HERE.parents[2] / "target"))
    return str(pathlib.Path(target) / "release" / "examples" / "scan")


def run_scan(bin_: str, repo: dict, root: pathlib.Path) -> dict:
    out_dir = corpus.corpus_dir() / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    scope = root / repo.get("scope", ".")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    r = subprocess.run([bin_, str(scope), "--json", "--threads", "1"], capture_output=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"{repo['name']}: scan failed: {r.stderr.decode()[-500:]}")
    doc = json.loads(r.stdout)
    doc["_wall_s"] = wall
    doc["_cpu_s"] = cpu
    (out_dir / (corpus.slug(repo["name"]) + ".json")).write_text(json.dumps(doc))
    return doc


def cached(repo: dict) -> dict:
    p = corpus.corpus_dir() / "results" / (corpus.slug(repo["name"]) + ".json")
    if not p.is_file():
        raise SystemExit(f"{repo['name']}: no cached result at {p}; run without --no-scan")
    return json.loads(p.read_text())


FAMILY = [
    ("EMBEDDED-DB", "database"), ("SESSION", "sessions"), ("LRU", "caches"), ("CACHE", "caches"),
    ("UPLOAD", "local-files"), ("LOCAL-WRITE", "local-files"), ("LOCAL-DISK", "local-files"),
    ("LOCAL-STORAGE", "local-files"), ("QUEUE", "queues"), ("JOB", "jobs"), ("TICKER", "jobs"),
    ("INTERVAL", "jobs"), ("SCHEDULED", "jobs"), ("TIMER", "jobs"), ("RATELIMIT", "rate-limits"),
    ("PUBSUB", "pubsub"), ("WS-", "pubsub"), ("LOCK", "locks"), ("SEARCH", "search-index"),
    ("MAINTENANCE", "flags"),
]


def family(rule: str) -> str:
    """The kind of state a rule id names (global-state when nothing more specific)."""
    for key, fam in FAMILY:
        if key in rule:
            return fam
    return "global-state"


def prefix_path(repo: dict, rel: str) -> str:
    scope = repo.get("scope", ".")
    return rel if scope in (".", "") else f"{scope}/{rel}"


def match(repo: dict, findings: list[dict], states: list[dict], strict: bool):
    """Returns (tp findings, fp findings, found states, missed states)."""
    live = [s for s in states if not (strict and s.get("added") == "after-run")]
    used: set[int] = set()
    tp, fp = [], []
    for f in findings:
        path = prefix_path(repo, f["path"])
        cands = []
        for i, s in enumerate(live):
            places = [(s["file"], l) for l in [s["line"]] + list(s.get("lines", []))]
            extra = s.get("also", []) + ([] if strict else s.get("after_run_also", []))
            for a in extra:
                af, al = a.rsplit(":", 1)
                places.append((af, int(al)))
            ds = [abs(f["line"] - l) for pf, l in places if pf == path]
            # An exact place matches whatever the rule; a nearby line only when the
            # finding names the same kind of state (adjacent config keys are different
            # constructs).
            if ds and (min(ds) == 0 or (min(ds) <= TOL and family(f["rule_id"]) == family(s["rule"]))):
                cands.append((min(ds), i))
        cands.sort()
        free = [i for _, i in cands if i not in used]
        if free:
            used.add(free[0])
            tp.append((f, live[free[0]]))
        else:
            fp.append((f, "duplicate" if cands else "no labelled state"))
    found = [s for i, s in enumerate(live) if i in used]
    missed = [s for i, s in enumerate(live) if i not in used]
    return tp, fp, found, missed


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(title: str, rows: dict, out) -> None:
    print(f"  {title:<22} {'tp':>4} {'fp':>4} {'found':>5} {'missed':>6} {'precision':>9} {'recall':>6}", file=out)
    tot = [0, 0, 0, 0]
    for k in sorted(rows):
        tp, fp, fo, mi = rows[k]
        tot = [a + b for a, b in zip(tot, rows[k])]
        print(f"  {k:<22} {tp:>4} {fp:>4} {fo:>5} {mi:>6} {ratio(tp, tp + fp):>9} {ratio(fo, fo + mi):>6}", file=out)
    tp, fp, fo, mi = tot
    print(f"  {'TOTAL':<22} {tp:>4} {fp:>4} {fo:>5} {mi:>6} {ratio(tp, tp + fp):>9} {ratio(fo, fo + mi):>6}", file=out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="all", choices=["dev", "holdout", "all"])
    ap.add_argument("--repo")
    ap.add_argument("--no-scan", action="store_true")
    ap.add_argument("--scan")
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--show", default="", help="comma list: fp, fn, tp")
    ap.add_argument("--round", type=int, help="only held-out repositories of this round (and no dev)")
    a = ap.parse_args()
    show = set(filter(None, a.show.split(",")))
    repos = corpus.load_repos(a.split, a.repo)
    if a.round is not None:
        repos = [r for r in repos if r.get("round") == a.round]
    states = load_labels()
    names = {r["name"] for r in corpus.load_repos()}
    for s in states:
        if s["repo"] not in names:
            raise SystemExit(f"label for unknown repo {s['repo']}")
    bin_ = scanner(a.scan)
    if not a.no_scan and not os.path.exists(bin_):
        raise SystemExit(f"{bin_} not found: cargo build --release -p audit --example scan")
    results = {}
    for r in repos:
        if a.no_scan:
            results[r["name"]] = cached(r)
        else:
            results[r["name"]] = run_scan(bin_, r, corpus.extract(r, a.offline))

    splits = ["dev", "holdout", "all"] if a.split == "all" else [a.split]
    for split in splits:
        sel = [r for r in repos if split == "all" or r["split"] == split]
        if not sel:
            continue
        for strict in ([True, False] if split != "dev" else [False]):
            per_lang = defaultdict(lambda: [0, 0, 0, 0])
            per_rule = defaultdict(lambda: [0, 0, 0, 0])
            per_repo = defaultdict(lambda: [0, 0, 0, 0])
            details = []
            for r in sel:
                doc = results[r["name"]]
                rs = [s for s in states if s["repo"] == r["name"]]
                tp, fp, found, missed = match(r, doc["findings"], rs, strict)
                for f, s in tp:
                    for d, k in ((per_lang, language(s["file"], r)), (per_rule, f["rule_id"]), (per_repo, r["name"])):
                        d[k][0] += 1
                for f, why in fp:
                    p = prefix_path(r, f["path"])
                    for d, k in ((per_lang, language(p, r)), (per_rule, f["rule_id"]), (per_repo, r["name"])):
                        d[k][1] += 1
                    details.append(("fp", r["name"], p, f["line"], f["rule_id"], f"{why}: {f['message']}"))
                for s in found:
                    for d, k in ((per_lang, language(s["file"], r)), (per_rule, s["rule"]), (per_repo, r["name"])):
                        d[k][2] += 1
                    details.append(("tp", r["name"], s["file"], s["line"], s["rule"], s["why"]))
                for s in missed:
                    for d, k in ((per_lang, language(s["file"], r)), (per_rule, s["rule"]), (per_repo, r["name"])):
                        d[k][3] += 1
                    details.append(("fn", r["name"], s["file"], s["line"], s["rule"], s["why"]))
            mode = "" if split == "dev" else (" (strict: labels written before the run)" if strict else " (adjudicated: with after-run additions)")
            rounds = sorted({r.get("round", 0) for r in sel if r["split"] == "holdout"})
            if split == "holdout" and rounds:
                mode += f" rounds {rounds}"
            print(f"== {split}: {len(sel)} repositories{mode}")
            if any(r.get("round") == 1 for r in sel):
                print("  note: round 1 repositories were used to improve the rules after their first run;")
                print("  their first-run figures are in BENCHMARKS.md. Use --round 3 for a held-out figure (rounds 1-2 were tuned on).")
            print("  tp/fp count findings; found/missed count labelled states", file=sys.stdout)
            table("language", per_lang, sys.stdout)
            print()
            table("rule", per_rule, sys.stdout)
            print()
            if len(sel) > 1:
                table("repository", per_repo, sys.stdout)
                print()
            for kind, repo, path, line, rule, text in sorted(details):
                if kind in show:
                    print(f"  {kind.upper()} {repo} {path}:{line} {rule} {text}")
            if show:
                print()
    if not a.no_scan:
        print("== speed (one thread; CPU = user + system of the scan process)")
        for r in repos:
            d = results[r["name"]]
            print(f"  {r['name']:<50} {d['files_scanned']:>6} files {d['lines_scanned']:>8} lines"
                  f" {d['_cpu_s']:6.2f} s CPU {d['_wall_s']:6.2f} s wall")


if __name__ == "__main__":
    main()
