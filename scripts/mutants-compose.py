#!/usr/bin/env python3
"""The driver's mutation score for today's code, from earlier full runs and two short ones.

A full cargo-mutants run of the driver takes hours on a 2-core machine, and the code it saw
changes a little at a time. `driver/mutants-runs.json` records each full run: the commit it
ran on, its files, how many mutants it caught and the names of those it missed. Then:

- `plan` writes, under target/mutants-delta/, the diff of each run's files from its commit
  to HEAD (`changes.diff`, for `cargo mutants --in-diff`) and one `--re` per mutant a run
  missed whose lines have not changed since, under its name today (`rerun.args`);
- those two cargo-mutants runs re-test the changed lines and the old survivors;
- `compose` counts: a mutant on unchanged lines keeps its run's verdict (or the re-run's, for
  one that was missed); the in-diff run's mutants stand for the changed lines. A mutant the
  changes dropped whose verdict was not recorded counts as one its run caught, which can
  only lower the score.

Usage:
  mutants-compose.py plan RUNS.json
  mutants-compose.py rerun CARGO-MUTANTS-ARGS...   (cargo mutants with rerun.args added)
  mutants-compose.py compose RUNS.json IN_DIFF RERUN [CONFIRM...]
(IN_DIFF, RERUN, CONFIRM: outcomes.json files; CONFIRM: later runs of some of the same
mutants, on code whose lines did not move, which have the last word on them. Environment:
MUTANTS_NOW, the commit the runs ran on (by default the working tree, as cargo-mutants
copies it); MUTANTS_SURVIVORS=1 lists every
mutant not caught, by its name today.)
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

OUT = "target/mutants-delta"
VERDICT = {"CaughtMutant": "caught", "Timeout": "caught", "MissedMutant": "missed"}


def since(base):
    """`git diff` revisions from `base` to the code the runs see: MUTANTS_NOW if set, else
    the working tree (which cargo-mutants copies)."""
    now = os.environ.get("MUTANTS_NOW")
    return [base, now] if now else [base]


def cargo_args(run):
    args = ["--package", "rdmaft", "--features", "capi"]
    for f in run["files"]:
        args += ["--file", f]
    if run.get("exclude_re"):
        args += ["--exclude-re", run["exclude_re"]]
    return args


def listing(run):
    """Every mutant of the run's files at its commit (cargo mutants --list --json in a
    temporary worktree), cached under target/."""
    key = hashlib.sha1(json.dumps([run["base"], cargo_args(run)]).encode()).hexdigest()[:12]
    path = f"{OUT}/listing-{run['base']}-{key}.json"
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tree = f"{tmp}/tree"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", tree, run["base"]],
                           check=True)
            try:
                out = subprocess.run(["cargo", "mutants", *cargo_args(run), "--list", "--json"],
                                     cwd=tree, capture_output=True, text=True, check=True)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", tree], check=True)
        with open(path, "w") as f:
            f.write(out.stdout)
    return json.load(open(path))


def changes(base, path):
    """Base-side lines removed and insertion points, and the base -> now line map."""
    diff = subprocess.run(["git", "diff", "-U0", *since(base), "--", path],
                          capture_output=True, text=True, check=True).stdout
    removed, inserted, hunks = set(), set(), []
    for m in re.finditer(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", diff, re.M):
        a, b, d = int(m.group(1)), int(m.group(2) or 1), int(m.group(4) or 1)
        if b == 0:
            inserted.add(a)  # after base line a
        removed.update(range(a, a + b))
        hunks.append((a, b, d))

    def now(line):
        return line + sum(d - b for a, b, d in hunks if (a + 1 if b == 0 else a) <= line)

    return removed, inserted, now


def renamed(name, line):
    """The same mutant's name at `line`."""
    return re.sub(r"^([^:]+):\d+:", lambda m: f"{m.group(1)}:{line}:", name, count=1)


def old_mutants(run, in_diff):
    """The run's mutants: (name today or None if the changes took it, verdict)."""
    maps = {f: changes(run["base"], f) for f in run["files"]}
    missed = set(run["missed"])
    for m in listing(run):
        removed, inserted, now = maps[m["file"]]
        s, e = m["span"]["start"]["line"], m["span"]["end"]["line"]
        today = renamed(m["name"], now(s))
        # Lines put in a body just before its first statement move that mutant's start.
        first = s - 1 if e > s else s
        taken = (any(s <= l <= e for l in removed) or any(first <= p < e for p in inserted)
                 or today in in_diff)
        yield (None if taken else today), ("missed" if m["name"] in missed else "unknown")


def verdicts(path):
    """name -> (verdict, file) of an outcomes.json."""
    out = {}
    for o in json.load(open(path))["outcomes"]:
        m = o["scenario"].get("Mutant") if isinstance(o["scenario"], dict) else None
        if m is not None:
            out[m["name"]] = (VERDICT.get(o["summary"], "unviable"), m["file"])
    return out


def plan(runs_path):
    runs = json.load(open(runs_path))
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/changes.diff", "w") as f:
        for run in runs:
            f.write(subprocess.run(["git", "diff", *since(run["base"]), "--", *run["files"]],
                                   capture_output=True, text=True, check=True).stdout)
    files = [a for run in runs for f in run["files"] for a in ("--file", f)]
    listed = subprocess.run(
        ["cargo", "mutants", "--package", "rdmaft", "--features", "capi", *files,
         "--exclude-re", "loom_tests", "--list", "--in-diff", f"{OUT}/changes.diff"],
        capture_output=True, text=True)
    if listed.returncode != 0:
        sys.exit(f"cargo mutants --list --in-diff failed:\n{listed.stderr}")
    in_diff = set(listed.stdout.split("\n"))
    names = [today for run in runs for today, v in old_mutants(run, in_diff)
             if today and v == "missed"]
    with open(f"{OUT}/rerun.args", "w") as f:
        for n in names:
            f.write(f"--re=^{re.escape(n)}$\n")
    print(f"{OUT}/changes.diff: {len(in_diff) - 1} mutants on changed lines; "
          f"{OUT}/rerun.args: {len(names)} old survivors")


def rerun(*extra):
    """cargo mutants over the old survivors `plan` listed, with `extra` arguments."""
    res = open(f"{OUT}/rerun.args").read().split("\n")
    os.execvp("cargo", ["cargo", "mutants", *filter(None, res), *extra])


def compose(runs_path, in_diff_path, rerun_path, *confirm_paths):
    in_diff, rerun = verdicts(in_diff_path), verdicts(rerun_path)
    for p in confirm_paths:
        for name, v in verdicts(p).items():
            (in_diff if name in in_diff else rerun)[name] = v
    total_v = total_c = 0
    for run in json.load(open(runs_path)):
        kept = dropped = rescued = 0
        survivors, unmatched = [], []
        kept_missed = 0
        for today, v in old_mutants(run, in_diff):
            if today is None:
                dropped += v == "unknown"
                continue
            if v == "unknown":
                kept += 1
                continue
            verdict = (rerun.get(today) or in_diff.get(today) or (None,))[0]
            if verdict is None:
                unmatched.append(today)
                verdict = "missed"
            kept_missed += verdict != "unviable"
            rescued += verdict == "caught"
            if verdict == "missed":
                survivors.append(today)
        # Of the unknown verdicts, the run caught run["caught"]; those the changes took are
        # counted among them.
        caught = run["caught"] - dropped + rescued
        viable = run["caught"] - dropped + kept_missed
        new = [(n, v) for n, (v, f) in in_diff.items() if f in run["files"]]
        new_v = sum(v != "unviable" for _, v in new)
        new_c = sum(v == "caught" for _, v in new)
        survivors += [n for n, v in new if v == "missed"]
        print(f"{run['name']}: {caught + new_c} of {viable + new_v} viable caught "
              f"(unchanged lines {caught} of {viable}, {rescued} of them missed before; "
              f"changed lines {new_c} of {new_v})")
        for n in unmatched:
            print(f"  not re-run: {n}")
        if os.environ.get("MUTANTS_SURVIVORS"):
            for n in sorted(survivors, key=lambda n: (n.split(":")[0], int(n.split(":")[1]))):
                print(f"  survives: {n}")
        total_v += viable + new_v
        total_c += caught + new_c
    print(f"driver: {total_c} of {total_v} viable caught ({100 * total_c / total_v:.1f}%)")


if __name__ == "__main__":
    {"plan": plan, "rerun": rerun, "compose": compose}[sys.argv[1]](*sys.argv[2:])
