"""Write the measured compatibility table of docs/registries.md from a test run.

Reads the junit report of `make test` (build/test-report.xml) and the capability probes the run
wrote (build/compat/<registry id>.json and .version, see tests/conftest.py), and replaces the
text between the `compat-table` markers of docs/registries.md:

    .venv/bin/python scripts/compat_table.py [--report build/test-report.xml] [--check]

A test belongs to a registry when its id names the registry (`test_x[distribution-3]`, the
matrix parameter of tests/conftest.py); the others need no registry and are counted apart.
`--check` exits 1 when the committed table differs from the one the report gives.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- compat-table:start (scripts/compat_table.py writes this part) -->"
END = "<!-- compat-table:end -->"
NOT_TESTED = (
    "zot (its Go module is not served to this build environment), Harbor, GitLab, Nexus, "
    "Artifactory, Quay, Docker Hub, GitHub Container Registry, ECR, Artifact Registry, ACR"
)


def _outcome(case: ET.Element) -> str:
    for child in case:
        if child.tag in ("failure", "error"):
            return "failed"
        if child.tag == "skipped":
            return "skipped"
    return "passed"


def _suite(classname: str) -> str:
    parts = classname.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"


def tally(report: Path, kinds: list[str]) -> dict[str, dict[str, Counter[str]]]:
    """{registry id or "none": {suite: Counter(passed=, failed=, skipped=, ms=)}}: `ms` is the
    time the report gives the suite's tests (setup, call and teardown), in milliseconds."""
    found: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    patterns = {k: re.compile(rf"\[(.*-)?{re.escape(k)}(-.*)?\]$") for k in kinds}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("name", "")
        owner = next((k for k, p in patterns.items() if p.search(name)), "none")
        counter = found[owner][_suite(case.get("classname", ""))]
        counter[_outcome(case)] += 1
        counter["ms"] += round(float(case.get("time") or 0) * 1000)
    return found


def _mark(value: object) -> str:
    return "yes" if value is True else "no" if value is False else str(value)


def render(report: Path, compat: Path) -> str:
    kinds = sorted(p.stem for p in compat.glob("*.json"))
    counts = tally(report, kinds)
    lines = [
        START,
        "",
        "| registry | version | tag delete | referrers API | catalog paging | tags paging "
        "| `/manifests/<layer digest>` HEAD / GET / DELETE | OCI index, narrow Accept "
        "| schema 1 conversion |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        caps = json.loads((compat / f"{kind}.json").read_text())
        version_file = compat / f"{kind}.version"
        version = version_file.read_text().strip() if version_file.exists() else "?"
        blob = caps["blob_as_manifest"]
        lines.append(
            f"| {kind} | {version} | {_mark(caps['tag_delete'])} | "
            f"{_mark(caps['referrers_api'])} | {_mark(caps['catalog_paging'])} | "
            f"{_mark(caps['tags_paging'])} | {blob['HEAD']} / {blob['GET']} / {blob['DELETE']} | "
            f"{caps['narrow_accept_index']} | {_mark(caps['schema1_without_accept'])} |"
        )
    lines += [
        "",
        "| registry | suite | passed | failed | skipped | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for owner in [*kinds, "none"]:
        for suite, c in sorted(counts.get(owner, {}).items()):
            label = owner if owner != "none" else "(no registry)"
            lines.append(
                f"| {label} | {suite} | {c['passed']} | {c['failed']} | {c['skipped']} "
                f"| {c['ms'] / 1000:.0f} |"
            )
    lines += ["", f"Not tested: {NOT_TESTED}.", "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "build" / "test-report.xml")
    parser.add_argument("--compat", type=Path, default=ROOT / "build" / "compat")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "registries.md")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    if not args.report.exists() or not any(args.compat.glob("*.json")):
        print(
            f"compat_table: no {args.report} or {args.compat}/*.json: run make test",
            file=sys.stderr,
        )
        return 1
    table = render(args.report, args.compat)
    text = args.doc.read_text()
    if START not in text or END not in text:
        print(f"compat_table: {args.doc} has no compat-table markers", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + table + tail
    if args.check:
        return 0 if new == text else 1
    args.doc.write_text(new)
    print(f"compat_table: wrote the table of {args.report} into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
