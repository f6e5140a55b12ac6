#!/usr/bin/env python3
"""Keeps docs/conformance.md honest against the RFC texts and the tests.

  conformance.py list    print every normative keyword occurrence of RFC 8547
                         and RFC 8548 (id, section, keyword, the sentence)
  conformance.py ids     print the (id, keyword) manifest kept in
                         scripts/conformance-ids.txt
  conformance.py check   (default) fail unless docs/conformance.md has exactly
                         one row per occurrence, in the RFCs' order, and every
                         test it names exists as a `#[test]` function

The RFC texts are read from $TCPCRYPT_SPEC_DIR (default /work/shared/spec);
without them the check uses the manifest. No build is needed: it runs in
well under a second.
"""
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "conformance.md"
RFCS = ("8547", "8548")
# Longest first so "MUST NOT" is not also counted as "MUST".
KEYWORDS = ("MUST NOT", "SHALL NOT", "SHOULD NOT", "NOT RECOMMENDED",
            "MUST", "SHALL", "SHOULD", "REQUIRED", "RECOMMENDED")
KEYWORD_RE = re.compile(r"\b(" + "|".join(k.replace(" ", r"\s+") for k in KEYWORDS) + r")\b")
HEADING_RE = re.compile(r"^(\d+(?:\.\d+)*)\.\s+\S|^Appendix ([A-Z])\.\s+\S")
PAGE_NOISE_RE = re.compile(r"^(Bittau, et al\.|RFC 85\d\d\s{2,})|\f")


MANIFEST = ROOT / "scripts" / "conformance-ids.txt"


def spec_dir():
    env = os.environ.get("TCPCRYPT_SPEC_DIR")
    return Path(env) if env else Path("/work/shared/spec")


def have_spec():
    return all((spec_dir() / f"rfc{r}.txt").is_file() for r in RFCS)


def manifest():
    """(id, keyword) of every occurrence, as last derived from the RFC texts."""
    out = []
    for line in MANIFEST.read_text().splitlines():
        if line and not line.startswith("#"):
            rid, kw = line.split("\t")
            out.append((rid, kw))
    return out


def expected_ids():
    """From the RFC texts when present (and then the manifest must agree),
    else from the manifest the repository keeps."""
    if not have_spec():
        return manifest(), []
    derived = [(i, kw) for rfc in RFCS for i, _, kw, _ in occurrences(rfc)]
    stale = [] if derived == manifest() else [
        "scripts/conformance-ids.txt differs from the RFC texts: run "
        "scripts/conformance.py ids > scripts/conformance-ids.txt"]
    return derived, stale


def occurrences(rfc):
    """(id, section, keyword, sentence) for each keyword, in text order."""
    text = (spec_dir() / f"rfc{rfc}.txt").read_text()
    sections = []  # (section, joined text)
    current, lines = None, []
    for line in text.splitlines():
        if PAGE_NOISE_RE.search(line):
            continue
        m = HEADING_RE.match(line)
        if m:
            if current is not None:
                sections.append((current, " ".join(lines)))
            current, lines = m.group(1) or m.group(2), []
            continue
        if current is not None:
            lines.append(line.strip())
    if current is not None:
        sections.append((current, " ".join(lines)))

    out = []
    for section, body in sections:
        body = re.sub(r"\s+", " ", body)
        # The requirements-language boilerplate quotes every keyword once.
        body = re.sub(r'The key words "MUST".*?as shown here\.', "", body)
        n = 0
        for m in KEYWORD_RE.finditer(body):
            n += 1
            kw = re.sub(r"\s+", " ", m.group(1))
            start = body.rfind(". ", 0, m.start()) + 2 if body.rfind(". ", 0, m.start()) >= 0 else 0
            end = body.find(". ", m.end())
            sentence = body[start:end + 1 if end >= 0 else len(body)]
            out.append((f"{rfc}-{section}-{n}", section, kw, sentence))
    return out


ROW_RE = re.compile(r"^\|\s*(85\d\d-[0-9A-Z.]+-\d+)\s*\|")
TEST_REF_RE = re.compile(r"`(crates/[A-Za-z0-9_./-]+\.rs)::([A-Za-z0-9_]+)`")


def test_exists(path, name):
    file = ROOT / path
    if not file.is_file():
        return f"{path} does not exist"
    src = file.read_text()
    m = re.search(r"\bfn\s+" + re.escape(name) + r"\s*[(<]", src)
    if not m:
        return f"{path} has no fn {name}"
    # The attribute block right above the fn must hold #[test] and no #[ignore].
    before = src[:m.start()].rstrip().splitlines()
    attrs = []
    for line in reversed(before):
        s = line.strip()
        if s.startswith("#[") or s.startswith("///") or s.startswith("//") or s == "":
            attrs.append(s)
            continue
        break
    if not any(a.startswith("#[test]") or a.startswith("#[tokio::test") for a in attrs):
        return f"{path}: fn {name} is not a #[test]"
    if any(a.startswith("#[ignore") for a in attrs):
        return f"{path}: fn {name} is #[ignore]d"
    return None


def check():
    expected, problems = expected_ids()
    rows = []
    for lineno, line in enumerate(TABLE.read_text().splitlines(), 1):
        m = ROW_RE.match(line)
        if not m:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6:
            problems.append(f"conformance.md:{lineno}: expected 6 columns, found {len(cells)}")
            continue
        rid, _section, kw, _req, _code, evidence = cells
        rows.append((rid, kw))
        refs = TEST_REF_RE.findall(evidence)
        low = evidence.lower()
        if not refs and not (low.startswith("not applicable:") or low.startswith("deviation:")):
            problems.append(f"conformance.md:{lineno}: {rid} names no test and is neither "
                            "'not applicable:' nor 'deviation:'")
        for path, name in refs:
            err = test_exists(path, name)
            if err:
                problems.append(f"conformance.md:{lineno}: {rid}: {err}")
    for lineno, line in enumerate(TABLE.read_text().splitlines(), 1):
        if ROW_RE.match(line):
            continue
        for path, name in TEST_REF_RE.findall(line):
            err = test_exists(path, name)
            if err:
                problems.append(f"conformance.md:{lineno}: {err}")
    exp_ids = [i for i, _ in expected]
    row_ids = [i for i, _ in rows]
    for i in sorted(set(exp_ids) - set(row_ids), key=exp_ids.index):
        problems.append(f"no row for {i}")
    for i in sorted(set(row_ids) - set(exp_ids)):
        problems.append(f"row {i} matches no keyword occurrence in the RFC texts")
    dups = {i for i in row_ids if row_ids.count(i) > 1}
    for i in sorted(dups):
        problems.append(f"row {i} appears more than once")
    exp_kw = dict(expected)
    for i, kw in rows:
        if i in exp_kw and exp_kw[i] != kw:
            problems.append(f"row {i}: keyword is {exp_kw[i]}, table says {kw}")
    common = [i for i in row_ids if i in exp_kw]
    if not problems and common != [i for i in exp_ids if i in set(common)]:
        problems.append("rows are not in the RFCs' order")
    if problems:
        print("conformance: docs/conformance.md is out of date:", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    print(f"conformance: {len(rows)} rows cover every keyword occurrence; "
          "every named test exists")
    return 0


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else "check"
    if cmd == "list":
        for rfc in RFCS:
            for i, section, kw, sentence in occurrences(rfc):
                print(f"{i}\t{kw}\t{sentence}")
        return 0
    if cmd == "ids":
        print("# Normative keyword occurrences of RFC 8547 and RFC 8548 (id, keyword),")
        print("# derived by `scripts/conformance.py ids` from the RFC texts; the check")
        print("# uses this list where the texts are not at hand.")
        for rfc in RFCS:
            for i, _, kw, _ in occurrences(rfc):
                print(f"{i}\t{kw}")
        return 0
    if cmd == "check":
        return check()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
