#!/usr/bin/env python3
"""Precision and recall per language from labels.toml (python3 >= 3.11).

precision = tp / (tp + fp) over labelled findings;
recall    = tp / (tp + missed), where `missed` lists known per-instance state that no
finding points at. Findings of config rules (CFG-*) count under "config".
Usage: score.py [labels.toml]
"""
import sys
import tomllib
from collections import defaultdict

LANG = {"JS": "javascript", "PY": "python", "GO": "go", "JAVA": "java", "RS": "rust",
        "PHP": "php", "RB": "ruby", "CFG": "config"}

path = sys.argv[1] if len(sys.argv) > 1 else __file__.replace("score.py", "labels.toml")
data = tomllib.load(open(path, "rb"))
sets = {r["name"]: r.get("set", "dev") for r in data["repo"]}
for which in ("dev", "holdout", "all"):
    tp, fp, miss = defaultdict(int), defaultdict(int), defaultdict(int)
    for f in data.get("finding", []):
        if which != "all" and sets[f["repo"]] != which:
            continue
        lang = LANG[f["rule"].split("-")[0]]
        (tp if f["label"] == "tp" else fp)[lang] += 1
    for m in data.get("missed", []):
        if which != "all" and sets[m["repo"]] != which:
            continue
        miss[m["language"]] += 1
    print(f"== {which}: repos {sum(1 for s in sets.values() if which in ('all', s))}")
    print(f"{'language':<11} {'tp':>4} {'fp':>4} {'missed':>6} {'precision':>9} {'recall':>6}")
    langs = sorted(set(tp) | set(fp) | set(miss))
    for l in langs + ["TOTAL"]:
        t = sum(tp.values()) if l == "TOTAL" else tp[l]
        f_ = sum(fp.values()) if l == "TOTAL" else fp[l]
        m = sum(miss.values()) if l == "TOTAL" else miss[l]
        p = f"{t / (t + f_):.2f}" if t + f_ else "-"
        r = f"{t / (t + m):.2f}" if t + m else "-"
        print(f"{l:<11} {t:>4} {f_:>4} {m:>6} {p:>9} {r:>6}")
