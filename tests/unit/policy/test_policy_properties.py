"""Invariants of the loader, by Hypothesis: any generated valid policy round-trips into exactly
its values; any input at all gives diagnostics or a policy, never another exception."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.errors import PolicyError
from retention.policy.load import check_policy_text, load_policy_text

PATTERNS = ["latest", r"v?\d+\.\d+\.\d+", "main-[0-9a-f]{7,40}", r"pr-\d+-.*", "apps/.*", "a|b"]
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

durations = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(1, 999_999), st.sampled_from(sorted(UNITS))
)
patterns = st.lists(st.sampled_from(PATTERNS), max_size=3)
names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=20
)
keeps = st.one_of(
    st.just("all"),
    st.fixed_dictionaries({"last": st.integers(0, 1000)}, optional={"newer_than": durations}),
    st.fixed_dictionaries({"newer_than": durations}, optional={"last": st.integers(0, 1000)}),
)


@st.composite
def rules(draw: st.DrawFn) -> list[dict[str, Any]]:
    rule_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    out = []
    for name in rule_names:
        match: dict[str, Any] = {"tags": draw(st.lists(st.sampled_from(PATTERNS[2:]), min_size=1))}
        for key in ("repositories", "exclude_repositories", "exclude_tags"):
            if draw(st.booleans()):
                match[key] = draw(patterns)
        out.append({"name": name, "match": match, "keep": draw(keeps)})
    if draw(st.booleans()):
        out.append({"name": "\u2205 catch-all", "match": {}, "keep": "all"})
    return out


policies = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "registry": st.fixed_dictionaries(
            {"url": st.sampled_from(["https://r.example.com", "http://127.0.0.1:5000"])},
            optional={
                "tls": st.fixed_dictionaries(
                    {}, optional={"verify": st.booleans(), "ca_file": st.just("/etc/ca.pem")}
                )
            },
        ),
        "rules": rules(),
    },
    optional={
        "settings": st.fixed_dictionaries(
            {},
            optional={
                "concurrency": st.integers(1, 64),
                "max_deletions": st.one_of(
                    st.integers(0, 10**9), st.integers(0, 100).map(lambda n: f"{n}%")
                ),
                "unknown_age": st.sampled_from(["keep", "oldest"]),
            },
        ),
        "protect": st.fixed_dictionaries({"tags": patterns}),
        "schedule": st.fixed_dictionaries(
            {"cron": st.sampled_from(["30 3 * * *", "@daily", "*/5 * * * 1-5"])},
            optional={"timezone": st.sampled_from(["UTC", "Europe/Berlin", "Asia/Tokyo"])},
        ),
        "gc": st.fixed_dictionaries(
            {"command": st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4)},
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    policies,
    st.sampled_from([yaml.safe_dump, lambda d: yaml.safe_dump(d, default_flow_style=True)]),
)
def test_any_valid_policy_round_trips_into_exactly_its_values(
    doc: dict[str, Any], dump: Any
) -> None:
    text = dump(doc)
    policy, _ = load_policy_text(text, "gen.yaml", env={}, require_env=True)
    assert policy.registry.url == doc["registry"]["url"]
    tls = doc["registry"].get("tls", {})
    assert policy.registry.tls.verify == tls.get("verify", True)
    assert policy.registry.tls.ca_file == tls.get("ca_file")
    settings_doc = doc.get("settings", {})
    assert policy.settings.concurrency == settings_doc.get("concurrency", 8)
    assert str(policy.settings.max_deletions) == str(settings_doc.get("max_deletions", 500))
    assert policy.settings.unknown_age == settings_doc.get("unknown_age", "keep")
    assert [p.source for p in policy.protect_tags] == doc.get("protect", {}).get("tags", [])
    if "schedule" in doc:
        assert policy.schedule is not None
        assert policy.schedule.cron == doc["schedule"]["cron"]
        assert policy.schedule.timezone == doc["schedule"].get("timezone", "UTC")
    else:
        assert policy.schedule is None
    assert (policy.gc.command if policy.gc else None) == (
        tuple(doc["gc"]["command"]) if "gc" in doc else None
    )
    assert [r.name for r in policy.rules] == [r["name"] for r in doc["rules"]]
    for rule, written in zip(policy.rules, doc["rules"], strict=True):
        match = written["match"]
        assert [p.source for p in rule.match.tags] == match.get("tags", [])
        assert [p.source for p in rule.match.repositories] == match.get("repositories", [])
        assert [p.source for p in rule.match.exclude_tags] == match.get("exclude_tags", [])
        keep = written["keep"]
        if keep == "all":
            assert rule.keep.all
            continue
        assert not rule.keep.all
        assert rule.keep.last == keep.get("last")
        text_duration = keep.get("newer_than")
        assert rule.keep.newer_than_text == text_duration
        if text_duration is not None:
            unit = UNITS[text_duration[-1]]
            assert rule.keep.newer_than == timedelta(**{unit: int(text_duration[:-1])})


def _never_crashes(data: bytes | str, require_env: bool) -> None:
    policy, diagnostics = check_policy_text(data, "x.yaml", env={}, require_env=require_env)
    for d in diagnostics:
        assert d.file == "x.yaml"
        assert d.path.startswith("$")
        assert d.message
        assert d.line >= 0 and d.column >= 0
    errors = [d for d in diagnostics if d.severity == "error"]
    assert (policy is None) == bool(errors)
    try:
        load_policy_text(data, "x.yaml", env={}, require_env=require_env)
    except PolicyError as exc:
        assert exc.items == diagnostics


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.booleans())
def test_arbitrary_bytes_give_diagnostics_never_another_exception(
    data: bytes, require_env: bool
) -> None:
    _never_crashes(data, require_env)


TOKENS = [
    *"ab01.:-_ \n\t[]{},&*!|>'\"#?%@`$~<=\u00e9\ufeff",
    *("${X}", "$${", "version: 1\n", "registry:\n", "  url: ", "rules:\n", "- ", "&a ", "*a "),
    *("<<: ", "!!str ", "!!binary ", "1.10", "on", "12:30", "keep: ", "{last: ", "30d"),
]
YAMLISH = st.lists(st.sampled_from(TOKENS), max_size=80).map("".join)


@settings(max_examples=300, deadline=None)
@given(YAMLISH)
def test_arbitrary_yaml_like_text_gives_diagnostics_never_another_exception(text: str) -> None:
    _never_crashes(text, False)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.sampled_from(["all", "30d", "25%", "${X}", "(?=x)", "61 * * * *", "Mars/Base"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "registry",
                    "url",
                    "rules",
                    "name",
                    "match",
                    "keep",
                    "last",
                    "newer_than",
                    "tags",
                    "settings",
                    "max_deletions",
                    "schedule",
                    "cron",
                    "timezone",
                    "gc",
                    "command",
                    "auth",
                    "username",
                    "password",
                    "tls",
                    "verify",
                    "protect",
                    "other",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(json_like, st.booleans())
def test_any_yaml_document_gives_diagnostics_never_another_exception(
    doc: Any, require_env: bool
) -> None:
    _never_crashes(yaml.safe_dump(doc), require_env)


@settings(max_examples=150, deadline=None)
@given(policies, st.data())
def test_a_valid_policy_with_one_value_replaced_never_crashes(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    node: Any = doc
    while isinstance(node, (dict, list)) and node:
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        if not isinstance(node[key], (dict, list)) or data.draw(st.booleans()):
            node[key] = data.draw(json_like)
            break
        node = node[key]
    _never_crashes(yaml.safe_dump(doc), True)
