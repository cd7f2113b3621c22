"""Every policies/*.yaml is a test: it loads with no error and no warning once the variables
it names are set, as `plan` would load it. example.yaml is also the README's demo policy."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from retention.policy.load import load_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
FILES = sorted(POLICIES.glob("*.yaml"))


def test_there_are_enough_examples() -> None:
    assert len(FILES) >= 6
    assert POLICIES / "example.yaml" in FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_example_policy_is_valid_and_quiet(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))
    policy, warnings = load_policy(str(path), env=dict.fromkeys(names, "x"), require_env=True)
    assert warnings == []
    assert policy.rules
    assert text.lstrip().startswith("#"), "each example opens with a comment for its reader"


def test_the_demo_policy_says_what_the_readme_says() -> None:
    policy, _ = load_policy(str(POLICIES / "example.yaml"), env={}, require_env=True)
    assert policy.registry.url == "http://127.0.0.1:5000"
    assert policy.registry.auth is None
    for tag in ("latest", "1.4.2", "v2.0.0"):
        assert policy.is_protected(tag)
    for tag in ("1.4.2-rc1", "latest-debug", "main-0a1b2c3"):
        assert not policy.is_protected(tag)
    main, prs, rest = policy.rules
    assert main.match.selects_tag("main-0a1b2c3d") and not main.match.selects_tag("pr-1-abc")
    assert (main.keep.last, main.keep.newer_than) == (5, timedelta(days=14))
    assert prs.match.selects_tag("pr-42-0a1b2c3") and not prs.match.selects_tag("pr-x")
    assert (prs.keep.last, prs.keep.newer_than) == (3, timedelta(days=7))
    assert rest.match.selects_everything and rest.keep.all
