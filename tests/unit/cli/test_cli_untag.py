"""`settings.untag` through the command line, from a saved inventory (no registry): `plan` shows
and writes the untags and exits 2 with `--detailed-exitcode` when it only untags, `show` renders
the saved plan the same way, and `explain` says "untagged" (docs/workflow.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retention import cli
from retention.cli.render import explanation_text, inventory_text
from retention.evaluate import explain
from tests.unit.evalkit import NOW, D, ago, image, inventory, policy, repo, rule

# `build-1` shares image A with the protected `latest`; `ghost` is listed, its manifest gone
INVENTORY = inventory(
    repo(
        "apps/web",
        {"latest": "A", "build-1": "A", "build-2": "B"},
        [image("A", ago(9)), image("B", ago(1))],
        dangling=["ghost"],
    )
)
POLICY = """\
version: 1
registry:
  url: https://registry.example.test
settings: {untag: %s}
protect:
  tags: [latest]
rules:
  - name: ci
    match: {}
    keep: {last: 1}
"""


def _files(tmp_path: Path, untag: bool) -> tuple[str, str]:
    (tmp_path / "inv.json").write_text(json.dumps(INVENTORY.to_json()))
    (tmp_path / "p.yaml").write_text(POLICY % ("true" if untag else "false"))
    return str(tmp_path / "p.yaml"), str(tmp_path / "inv.json")


def test_plan_and_show_list_the_untags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy_path, inv = _files(tmp_path, untag=True)
    out = tmp_path / "plan.json"
    argv = ["plan", "-p", policy_path, "--from-inventory", inv, "--as-of", "2024-06-01"]
    code = cli.main([*argv, "-o", str(out), "--detailed-exitcode"])
    assert code == 2  # nothing is deleted, but two tags are untagged: a change
    doc = json.loads(out.read_text())
    assert [(u["tag"], u["digest"], u["rule"]) for u in doc["untags"]] == [
        ("build-1", D("A"), "ci"),
        ("ghost", None, "ci"),
    ]
    assert doc["summary"]["tags_untagged"] == 2 and doc["deletions"] == []
    capsys.readouterr()

    assert cli.main(["show", str(out)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert "apps/web: 0 images (0 tags) to delete, 2 tags to untag" in text
    assert f"  ~ build-1  {D('A')}" in text
    assert "      untag: its image is kept by `latest` (protected); rule `ci`: rank 2 > 1" in text
    assert "  ~ ghost  (dangling: no image)" in text
    assert (
        text[-1] == "Plan: 2 tags to untag in 1 repository, their images kept; nothing to delete."
    )

    assert cli.main(["show", str(out), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("### retention plan: 2 tags to untag\n")
    assert "#### Untags" in markdown


def test_plan_without_untag_changes_nothing_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_path, inv = _files(tmp_path, untag=False)
    argv = ["plan", "-p", policy_path, "--from-inventory", inv, "--detailed-exitcode"]
    assert cli.main([*argv, "--as-of", "2024-06-01", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "untags" not in doc
    assert doc["warnings"] == [
        "1 dangling tag (listed, its manifest gone) left alone: `settings.untag: true` would "
        "remove it"
    ]


def test_explain_text_of_untagged_and_dangling_tags() -> None:
    p = policy(rule("ci", last=1), protect=["latest"], untag=True)
    text = explanation_text(explain(p, INVENTORY, NOW, "apps/web")).splitlines()
    at = text.index(f"apps/web:build-1  {D('A')[:19]}  9 days  (rule ci, rank 2)")
    assert text[at + 1] == (
        "    untagged (its image is kept by `latest` (protected); rule `ci`: rank 2 > 1)"
    )
    at = text.index("apps/web:ghost  (dangling: no manifest)  age unknown  (rule ci)")
    assert text[at + 1] == (
        "    untagged (a dangling tag (listed, its manifest gone); rule `ci` selects it)"
    )


def test_inventory_text_lists_dangling_tags() -> None:
    lines = inventory_text(INVENTORY).splitlines()
    assert "  ghost    (dangling: listed, its manifest gone)" in lines
