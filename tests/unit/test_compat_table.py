"""scripts/compat_table.py: a junit report and the probes of a run become the measured table of
docs/registries.md; tests are counted under the registry their id names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.compat_table import END, START, main, tally

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.integration.test_apply" name="test_a[distribution-2.8]" time="2.5"/>
<testcase classname="tests.integration.test_apply" name="test_a[distribution-3]"/>
<testcase classname="tests.integration.test_apply" name="test_b[layer-distribution-3]">
  <failure message="boom"/></testcase>
<testcase classname="tests.e2e.test_cli" name="test_c[distribution-3-json]"/>
<testcase classname="tests.unit.test_x" name="test_d[case-1]"/>
<testcase classname="tests.unit.test_x" name="test_e"><skipped message="no"/></testcase>
</testsuite></testsuites>
"""

CAPS = {
    "tag_delete": True,
    "referrers_api": False,
    "catalog_paging": True,
    "tags_paging": True,
    "narrow_accept_index": 200,
    "schema1_without_accept": False,
    "blob_as_manifest": {"HEAD": 404, "GET": 404, "DELETE": 404},
}


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path, Path]:
    report = tmp_path / "report.xml"
    report.write_text(REPORT)
    compat = tmp_path / "compat"
    compat.mkdir()
    for kind in ("distribution-2.8", "distribution-3"):
        (compat / f"{kind}.json").write_text(json.dumps(CAPS))
        (compat / f"{kind}.version").write_text("v3.1.2\n")
    doc = tmp_path / "registries.md"
    doc.write_text(f"# Registries\n\nbefore\n\n{START}\nold table\n{END}\n\nafter\n")
    return report, compat, doc


def test_tests_are_counted_under_the_registry_their_id_names(
    run: tuple[Path, Path, Path],
) -> None:
    report, _, _ = run
    counts = tally(report, ["distribution-2.8", "distribution-3"])
    assert +counts["distribution-2.8"]["integration"] == {"passed": 1, "ms": 2500}
    assert +counts["distribution-3"]["integration"] == {"passed": 1, "failed": 1}
    assert +counts["distribution-3"]["e2e"] == {"passed": 1}
    assert +counts["none"]["unit"] == {"passed": 1, "skipped": 1}


def test_the_table_replaces_only_the_marked_part_and_check_sees_a_stale_one(
    run: tuple[Path, Path, Path],
) -> None:
    report, compat, doc = run
    args = ["--report", str(report), "--compat", str(compat), "--doc", str(doc)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Registries\n\nbefore\n")
    assert text.endswith(f"{END}\n\nafter\n")
    assert "| distribution-3 | v3.1.2 | yes | no | yes | yes | 404 / 404 / 404 | 200 | no |" in text
    assert "| distribution-3 | integration | 1 | 1 | 0 | 0 |" in text
    assert "| distribution-2.8 | integration | 1 | 0 | 0 | 2 |" in text
    assert "| (no registry) | unit | 1 | 0 | 1 | 0 |" in text
    assert "Not tested: zot" in text
    assert main([*args, "--check"]) == 0
