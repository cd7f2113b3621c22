"""benchmarks/bench_storage.py end to end on a tiny scenario: every figure is printed as a JSON
line as soon as it exists, the storage plan equals the API plan but for `inventory_source`, the
report is written, and the work folder is gone afterwards. No timing here, and no page-cache
drop (the machine is shared): the cold run is benchmark-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_storage


def test_the_storage_benchmark_reports_each_figure_and_leaves_nothing(
    registry_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    report_path = tmp_path / "report.json"
    argv = ["--repositories", "2", "--big", "3", "--no-drop-caches", "--no-loop"]
    assert bench_storage.main([*argv, "--work-dir", str(work), "--json", str(report_path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0] == "start"
    for expected in ["100 tags: minimal", "100 tags: api_plan", "100 tags: storage_warm"]:
        assert expected in events
    assert "150 tags: storage_warm" in events
    assert all(len(line["load"]) == 3 for line in lines)
    report = json.loads(report_path.read_text())
    small, big = report["small"], report["big"]
    assert small["storage_plan_equals_api_plan_but_inventory_source"] is True
    assert small["scenario"]["tags"] == 100 and big["scenario"]["tags"] == 150
    # the storage plan makes only the same-registry check: one tags/list per repository
    assert small["runs"]["storage_warm"]["requests"] == 2
    assert big["runs"]["storage_warm"]["requests"] == 3
    assert small["runs"]["minimal"]["requests"] > small["runs"]["storage_warm"]["requests"]
    assert "cold" in small and "storage_cold" not in small["runs"]
    assert list(work.iterdir()) == []
