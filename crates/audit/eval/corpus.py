#!/usr/bin/env python3
"""Locate, fetch and extract the evaluation corpus (python3 >= 3.11, git, tar).

Every repository is pinned by commit in corpus.toml. Third-party code is never committed
here: this script brings each repository onto the machine and extracts exactly the
pinned commit into a scratch directory.

Where a repository comes from, in order:
  1. a bare git directory named by $AUDIT_MIRROR (a directory holding `owner+name/repo`
     snapshots; /work/.mirror is used when it exists), if it contains the pinned commit;
  2. a cached clone in $AUDIT_CORPUS/.git-cache/owner+name (made by step 3);
  3. `git clone --filter=blob:none https://github.com/owner/name` into that cache
     (network; only when steps 1-2 miss and --offline is not given).
Then `git archive <commit> | tar -x` into $AUDIT_CORPUS/<owner+name> (default
/tmp/audit-corpus). A `.commit` file records what was extracted, so re-runs are free.

Usage: corpus.py [--split dev|holdout|all] [--repo NAME] [--offline]
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

HERE = pathlib.Path(__file__).resolve().parent


def corpus_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("AUDIT_CORPUS", "/tmp/audit-corpus"))


def load_repos(split: str = "all", only: str | None = None) -> list[dict]:
    data = tomllib.loads((HERE / "corpus.toml").read_text())
    repos = data["repo"]
    if split != "all":
        repos = [r for r in repos if r["split"] == split]
    if only:
        repos = [r for r in repos if r["name"] == only]
    return repos


def slug(name: str) -> str:
    return name.replace("/", "+")


def has_commit(git_dir: pathlib.Path, commit: str) -> bool:
    r = subprocess.run(
        ["git", "--git-dir", str(git_dir), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
    )
    return r.returncode == 0


def mirrors() -> list[pathlib.Path]:
    out = []
    for d in os.environ.get("AUDIT_MIRROR", "").split(":"):
        if d:
            out.append(pathlib.Path(d))
    if pathlib.Path("/work/.mirror").is_dir():
        out.append(pathlib.Path("/work/.mirror"))
    return out


def git_dir_for(repo: dict, offline: bool) -> pathlib.Path:
    name, commit = repo["name"], repo["commit"]
    for m in mirrors():
        for cand in (m / slug(name) / "repo", m / slug(name) / "repo" / ".git"):
            if cand.is_dir() and has_commit(cand, commit):
                return cand
    cache = corpus_dir() / ".git-cache" / slug(name)
    if cache.is_dir() and has_commit(cache, commit):
        return cache
    if offline:
        raise SystemExit(f"{name}: commit {commit} not found locally and --offline was given")
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.is_dir():
        subprocess.run(
            ["git", "clone", "--bare", "--filter=blob:none",
             f"https://github.com/{name}", str(cache)],
            check=True,
        )
    if not has_commit(cache, commit):
        subprocess.run(["git", "--git-dir", str(cache), "fetch", "origin", commit], check=True)
    return cache


def write_tree(git_dir: pathlib.Path, commit: str, dest: pathlib.Path) -> list[str]:
    """Writes every blob of `commit` under `dest` (like `git archive | tar -x`, but
    tolerating blobs absent from a partial snapshot). Returns the paths left out."""
    ls = subprocess.run(
        ["git", "--git-dir", str(git_dir), "ls-tree", "-r", "-z", commit],
        capture_output=True, check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    entries = []
    for rec in ls.split("\0"):
        if not rec:
            continue
        meta, path = rec.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob" and mode != "120000":
            entries.append((sha, path))
    batch = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    missing = []
    for sha, path in entries:
        batch.stdin.write(sha.encode() + b"\n")
        batch.stdin.flush()
        header = batch.stdout.readline().decode().split()
        if len(header) < 3 or header[1] == "missing":
            missing.append(path)
            continue
        size = int(header[2])
        body = batch.stdout.read(size)
        batch.stdout.read(1)
        out = dest / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(body)
    batch.stdin.close()
    batch.wait()
    return missing


def extract(repo: dict, offline: bool = False) -> pathlib.Path:
    """The directory holding `repo` at its pinned commit (extracting it if needed)."""
    dest = corpus_dir() / slug(repo["name"])
    stamp = dest / ".commit"
    if stamp.is_file() and stamp.read_text().strip() == repo["commit"]:
        return dest
    git_dir = git_dir_for(repo, offline)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    missing = write_tree(git_dir, repo["commit"], dest)
    if missing:
        # Snapshots may lack very large files (media, fixtures); none are source the
        # audit reads at these sizes, and the list is kept for the record.
        (dest / ".missing").write_text("".join(m + "\n" for m in missing))
    stamp.write_text(repo["commit"] + "\n")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="all", choices=["dev", "holdout", "all"])
    ap.add_argument("--repo")
    ap.add_argument("--offline", action="store_true")
    a = ap.parse_args()
    for r in load_repos(a.split, a.repo):
        d = extract(r, a.offline)
        print(f"{r['name']:<50} {r['commit'][:10]} {d}")


if __name__ == "__main__":
    sys.exit(main())
