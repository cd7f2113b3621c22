"""Every human output escapes registry strings at the edge (docs/decisions.md, "Escaping registry
strings"): the text plan, plan.json, explain, inventory text and CSV, and stderr log lines."""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.cli.console import TextFormatter
from retention.cli.render import explanation_text, inventory_csv, inventory_text
from retention.evaluate import TagVerdict
from retention.model import Inventory, Repository, Tag
from retention.plan import Entry, Plan, Summary, from_json, render_text, to_json
from tests.unit.evalkit import NOW, REGISTRY, D, image

RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "\x1b[2J\r  - latest  sha256:forged\u009b\u202e"
FORGED = re.compile(r"^\s*- latest\b", re.MULTILINE)


def _plan(text: str) -> Plan:
    entry = Entry(
        repository="apps/web",
        digest=D("A"),
        media_type="application/vnd.oci.image.manifest.v1+json",
        tags=("v1",),
        parent=None,
        created=NOW - timedelta(days=9),
        size=10,
        rule="all",
        reason=f"age unknown (created {text})",
    )
    return Plan(
        generated_at=NOW,
        registry=REGISTRY,
        policy_path="p.yaml",
        policy_sha256="0" * 64,
        max_deletions="500",
        summary=Summary(1, 1, 1, 1, 1, 10),
        deletions=(entry,),
        kept=(replace(entry, digest=D("B"), tags=("latest",), reason=f"platform {text}"),),
        warnings=(f"tags/list lists tag {text}",),
    )


@pytest.mark.parametrize("show_kept", [False, True], ids=["plan", "show-kept"])
def test_the_text_plan_holds_no_raw_control_and_no_forged_line(show_kept: bool) -> None:
    text = render_text(_plan(HOSTILE), show_kept=show_kept, now=NOW)
    assert RAW.search(text) is None
    assert FORGED.search(text) is None
    assert "\\x1b[2J\\x0d  - latest  sha256:forged\\x9b\\u202e" in text


def test_plan_json_escapes_c1_and_bidi_and_loads_back_raw() -> None:
    plan = _plan(HOSTILE)
    text = to_json(plan)
    assert RAW.search(text) is None
    assert "\\u009b" in text and "\\u202e" in text and "\\u001b" in text
    assert from_json(text, "plan.json").warnings == plan.warnings


def test_ordinary_plans_are_unchanged_by_escaping() -> None:
    plan = _plan("2024-01-01")
    assert (
        to_json(plan)
        == json.dumps(json.loads(to_json(plan)), sort_keys=True, indent=2, ensure_ascii=False)
        + "\n"
    )
    assert "age unknown (created 2024-01-01)" in render_text(plan, show_kept=True, now=NOW)


def test_a_policy_pattern_in_a_reason_keeps_its_backslashes() -> None:
    plan = _plan("x")
    kept = replace(plan.kept[0], reason=r"protected by pattern `v\d+`")
    text = render_text(replace(plan, kept=(kept,)), show_kept=True, now=NOW)
    assert r"protected by pattern `v\d+`" in text


def test_explain_escapes_names_and_reasons_and_never_says_zero_seconds() -> None:
    verdict = TagVerdict(
        repository="apps/web",
        tag="v1",
        digest=D("A"),
        rule="all",
        rank=None,
        age=None,
        created=None,
        created_raw=HOSTILE,
        decision="kept",
        reason=f"age unknown (created {HOSTILE})",
    )
    skewed = replace(verdict, tag="v2", age=-timedelta(hours=3), reason="younger than 1d")
    text = explanation_text([verdict, skewed])
    assert RAW.search(text) is None and FORGED.search(text) is None
    assert "age unknown" in text
    assert "created 3 hours in the future" in text
    assert "0 seconds" not in text


def test_inventory_text_and_csv_escape_what_the_registry_sent() -> None:
    img = image("A", NOW, media_type=f"application/x{HOSTILE}")
    inventory = Inventory(
        registry=REGISTRY,
        taken_at=NOW,
        repositories=(Repository("apps/web", (Tag("v1", img.digest),), (img,)),),
        warnings=(f"something {HOSTILE}",),
    )
    for text in (inventory_text(inventory), inventory_csv(inventory)):
        assert RAW.search(text) is None and FORGED.search(text) is None
    assert "application/x\\x1b[2J" in inventory_csv(inventory)


def test_stderr_log_lines_are_escaped_line_by_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("retention.test-escaping")
    logger.addHandler(handler)
    try:
        logger.warning("first %s\nsecond line", HOSTILE)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines[1] == "second line"  # our own line break stays
    assert RAW.search(stream.getvalue()) is None
    assert FORGED.search(stream.getvalue()) is None


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_no_registry_string_adds_a_line_to_the_text_plan(text: str) -> None:
    """Invariant: whatever the registry sends, the text plan has the same lines as for a plain
    string, none holds a raw control, C1 or bidi character, and none looks like a deletion of
    `latest`."""
    plain = render_text(_plan("x"), show_kept=True, now=NOW).splitlines()
    shown = render_text(_plan(text), show_kept=True, now=NOW)
    assert len(shown.splitlines()) == len(plain)
    assert RAW.search(shown) is None
    assert FORGED.search(shown) is None
