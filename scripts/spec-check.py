#!/usr/bin/env python3
"""Traces protocol/PROTOCOL.md's requirements to the code and tests that cite them.

A requirement is a list item of PROTOCOL.md that starts with its identifier in bold
brackets, `- **[hs.magic]** A receiver MUST ...`. Code that enforces it carries the comment
`// spec: [hs.magic]`; a test that fails without that code, `// spec-test: [hs.magic]`
(several identifiers may share one comment). This fails (exit 1) when:

- a requirement has no RFC 2119 key word, or its identifier is used twice;
- a requirement has no code citation, or no test citation;
- a citation names an identifier the page does not have;
- the section holding a requirement changed since its citations were last reviewed:
  protocol/spec.lock keeps a hash of each requirement's section, and `--accept` rewrites it
  after printing, for each changed requirement, the citations to look at again.

It prints `spec_rules=N traced=N` (traced: cited by code and by a test). `--self-test`
runs the checker on small made-up trees and checks that each kind of failure is caught.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile

RULE = re.compile(r"^- \*\*\[([a-z0-9][a-z0-9.-]*)\]\*\*\s*(.*)$")
CITE = re.compile(r"//\s*spec(-test)?:\s*((?:\[[^\]\s]+\]\s*)+)")
CITE_ID = re.compile(r"\[([^\]\s]+)\]")
KEYWORD = re.compile(r"\b(MUST|MUST NOT|SHOULD|SHOULD NOT|MAY|REQUIRED)\b")
SOURCE_SUFFIXES = (".rs", ".c", ".h")


def parse_spec(text):
    """Returns (rules, errors): rules maps id -> {text, section, hash, line}."""
    lines = text.split("\n")
    # Sections: each heading up to the next heading of any level.
    starts = [i for i, line in enumerate(lines) if line.startswith("#")]
    bounds = list(zip(starts, starts[1:] + [len(lines)]))
    rules, errors = {}, []
    for start, end in bounds:
        heading = lines[start].lstrip("#").strip()
        digest = hashlib.sha256("\n".join(lines[start:end]).encode()).hexdigest()[:16]
        i = start
        while i < end:
            m = RULE.match(lines[i])
            if not m:
                i += 1
                continue
            rid, body, line_no = m.group(1), [m.group(2)], i + 1
            i += 1
            while i < end and lines[i].startswith("  ") and lines[i].strip():
                body.append(lines[i].strip())
                i += 1
            rule_text = " ".join(body)
            if rid in rules:
                errors.append(f"PROTOCOL.md:{line_no}: [{rid}] is defined twice")
                continue
            if not KEYWORD.search(rule_text):
                errors.append(
                    f"PROTOCOL.md:{line_no}: [{rid}] has no RFC 2119 key word (MUST, SHOULD, MAY)"
                )
            rules[rid] = {"text": rule_text, "section": heading, "hash": digest, "line": line_no}
    return rules, errors


def source_files(root):
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=root, check=True, capture_output=True, text=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        out = []
        for d, _, files in os.walk(root):
            if "/target" in d or "/.git" in d:
                continue
            out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return sorted(p for p in out if p.endswith(SOURCE_SUFFIXES) and os.path.isfile(os.path.join(root, p)))


def find_citations(root):
    """Returns a list of (kind, id, 'path:line'); kind is 'code' or 'test'."""
    found = []
    for path in source_files(root):
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                for m in CITE.finditer(line):
                    kind = "test" if m.group(1) else "code"
                    for rid in CITE_ID.findall(m.group(2)):
                        found.append((kind, rid, f"{path}:{n}"))
    return found


def read_lock(path):
    lock = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    rid, digest = line.split()[:2]
                    lock[rid] = digest
    return lock


def write_lock(path, rules):
    with open(path, "w", encoding="utf-8") as f:
        f.write("# Hash of the section of PROTOCOL.md holding each requirement, as of the last\n")
        f.write("# review of its citations. Written by scripts/spec-check.py --accept.\n")
        for rid in sorted(rules):
            f.write(f"{rid} {rules[rid]['hash']}\n")


def check(root, spec, lock_path, accept=False, out=sys.stdout):
    """Returns the list of errors (empty when all is well)."""
    with open(spec, encoding="utf-8") as f:
        rules, errors = parse_spec(f.read())
    cites = find_citations(root)
    by_rule = {rid: {"code": [], "test": []} for rid in rules}
    for kind, rid, where in cites:
        if rid not in rules:
            errors.append(f"{where}: cites unknown requirement [{rid}]")
        else:
            by_rule[rid][kind].append(where)
    for rid, rule in rules.items():
        for kind in ("code", "test"):
            if not by_rule[rid][kind]:
                errors.append(f"PROTOCOL.md:{rule['line']}: [{rid}] has no {kind} citing it "
                              f"(`// spec{'-test' if kind == 'test' else ''}: [{rid}]`)")
    lock = read_lock(lock_path)
    changed = [rid for rid in rules if lock.get(rid) != rules[rid]["hash"]]
    stale = sorted(set(lock) - set(rules))
    if accept:
        for rid in changed:
            print(f"review [{rid}] ({rules[rid]['section']}): {rules[rid]['text']}", file=out)
            for where in by_rule[rid]["code"] + by_rule[rid]["test"]:
                print(f"    {where}", file=out)
        write_lock(lock_path, rules)
    else:
        for rid in changed:
            what = "is new" if rid not in lock else "changed"
            sites = ", ".join(by_rule[rid]["code"] + by_rule[rid]["test"]) or "none"
            errors.append(f"PROTOCOL.md:{rules[rid]['line']}: the section of [{rid}] ({rules[rid]['section']}) "
                          f"{what} since its citations were reviewed; look at {sites}, "
                          f"then run scripts/spec-check.py --accept")
        for rid in stale:
            errors.append(f"{lock_path}: [{rid}] is locked but no longer in PROTOCOL.md "
                          f"(run scripts/spec-check.py --accept)")
    traced = sum(1 for rid in rules if by_rule[rid]["code"] and by_rule[rid]["test"])
    print(f"spec_rules={len(rules)} traced={traced}", file=out)
    return errors


def self_test():
    """Each failure the checker promises, on a made-up tree, must be reported."""
    spec = ("# T\n\n## 1. A\n\nText.\n\n- **[a.one]** A side MUST do one.\n"
            "- **[a.two]** A side SHOULD do two,\n  over two lines.\n")
    code = "// spec: [a.one] [a.two]\nfn f() {}\n"
    test = "// spec-test: [a.one]\n// spec-test: [a.two]\nfn t() {}\n"
    cases = {
        "clean": (spec, code, test, None),
        "no test": (spec, code, "// spec-test: [a.one]\n", "no test citing it"),
        "no code": (spec, "// spec: [a.one]\n", test, "no code citing it"),
        "unknown id": (spec, code + "// spec: [a.three]\n", test, "unknown requirement [a.three]"),
        "no key word": (spec.replace("MUST do", "does"), code, test, "no RFC 2119 key word"),
        "twice": (spec + "- **[a.one]** MUST again.\n", code, test, "defined twice"),
        "section changed": (spec, code, test, "changed since its citations were reviewed"),
        "new rule": (spec + "- **[a.new]** MUST be new.\n", code + "// spec: [a.new]\n",
                     test + "// spec-test: [a.new]\n", "is new since"),
    }
    failures = 0
    for name, (spec_text, code_text, test_text, expect) in cases.items():
        with tempfile.TemporaryDirectory() as d:
            for rel, body in (("PROTOCOL.md", spec), ("src/a.rs", code), ("tests/a.rs", test)):
                os.makedirs(os.path.dirname(os.path.join(d, rel)) or d, exist_ok=True)
                with open(os.path.join(d, rel), "w") as f:
                    f.write(body)
            lock = os.path.join(d, "spec.lock")
            sink = open(os.devnull, "w")
            # Lock the clean tree first, as a reviewed state; then apply the case.
            base = check(d, os.path.join(d, "PROTOCOL.md"), lock, accept=True, out=sink)
            assert not base, f"self-test: the clean tree fails: {base}"
            if name == "section changed":
                spec_text = spec_text.replace("Text.", "Other text.")
            for rel, body in (("PROTOCOL.md", spec_text), ("src/a.rs", code_text), ("tests/a.rs", test_text)):
                with open(os.path.join(d, rel), "w") as f:
                    f.write(body)
            errors = check(d, os.path.join(d, "PROTOCOL.md"), lock, out=sink)
            ok = (not errors) if expect is None else any(expect in e for e in errors)
            if not ok:
                failures += 1
                print(f"self-test {name}: expected {expect!r}, got {errors}", file=sys.stderr)
    print(f"spec-check self-test: {len(cases) - failures} of {len(cases)} cases behave")
    return failures == 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accept", action="store_true",
                    help="record the current sections as reviewed (rewrites protocol/spec.lock)")
    ap.add_argument("--self-test", action="store_true", help="check the checker")
    ap.add_argument("--list", action="store_true", help="print each requirement and its citations")
    args = ap.parse_args()
    if args.self_test:
        return 0 if self_test() else 1
    spec = os.path.join(root, "protocol", "PROTOCOL.md")
    lock = os.path.join(root, "protocol", "spec.lock")
    if args.list:
        with open(spec, encoding="utf-8") as f:
            rules, _ = parse_spec(f.read())
        cites = find_citations(root)
        for rid in rules:
            print(f"[{rid}] {rules[rid]['text']}")
            for kind, cid, where in cites:
                if cid == rid:
                    print(f"    {kind}: {where}")
        return 0
    errors = check(root, spec, lock, accept=args.accept)
    for e in errors:
        print(f"spec: error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
