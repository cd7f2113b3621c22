"""Policy checks and values for untagged rules (`match.untagged`) and `protect.digests`."""

from __future__ import annotations

import pytest

from retention.policy.load import check_policy_text, load_policy_text
from tests.unit.policy.test_policy_load import ENV, HEAD, _rule

# With `registry.storage` absent, every untagged rule also gets the "selects nothing" warning.
NO_STORAGE = (
    "warning",
    "$.rules[{i}].match.untagged",
    "rule `{name}` selects nothing unless `registry.storage` is set: the registry API lists "
    "tags only, and untagged manifests are seen in the storage",
)


def _blind(i: int, name: str) -> tuple[str, str, str]:
    severity, path, message = NO_STORAGE
    return (severity, path.format(i=i), message.format(name=name))


def _diags(text: str) -> list[tuple[str, str, str]]:
    _, diagnostics = check_policy_text(text, "p.yaml", env=ENV, require_env=True)
    return [(d.severity, d.path, d.message) for d in diagnostics]


UNTAGGED = "{untagged: true}"

CASES = [
    pytest.param(
        HEAD + "rules:\n" + _rule("u", UNTAGGED, "{last: 3}"),
        [_blind(0, "u")],
        id="untagged-rule-alone-warns-without-storage",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("u", "{untagged: true, tags: [latest]}", "{last: 3}"),
        [
            _blind(0, "u"),
            (
                "error",
                "$.rules[0].match.tags",
                "rule `u` selects untagged manifests (`untagged: true`): `tags` cannot narrow "
                "it, untagged manifests have no tag",
            ),
        ],
        id="tags-beside-untagged-is-an-error",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("u", "{untagged: true, exclude_tags: [x]}", "{last: 3}"),
        [
            _blind(0, "u"),
            (
                "error",
                "$.rules[0].match.exclude_tags",
                "rule `u` selects untagged manifests (`untagged: true`): `exclude_tags` cannot "
                "narrow it, untagged manifests have no tag",
            ),
        ],
        id="exclude-tags-beside-untagged-is-an-error",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("all") + _rule("u", UNTAGGED, "{last: 3}"),
        [_blind(1, "u")],
        id="tag-catch-all-does-not-shadow-an-untagged-rule",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("u", UNTAGGED, "{last: 3}") + _rule("all"),
        [_blind(0, "u")],
        id="untagged-catch-all-does-not-shadow-a-tag-rule",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("u", UNTAGGED, "{last: 3}") + _rule("v", UNTAGGED),
        [
            _blind(0, "u"),
            (
                "error",
                "$.rules[1]",
                "rule `v` can never own an untagged manifest: rule `u` (line 5) before it "
                "selects every untagged manifest",
            ),
            _blind(1, "v"),
        ],
        id="untagged-catch-all-shadows-a-later-untagged-rule",
    ),
    pytest.param(
        HEAD
        + "rules:\n"
        + _rule("u", "{untagged: true, repositories: ['apps/.*']}", "{last: 3}")
        + _rule("v", UNTAGGED),
        [_blind(0, "u"), _blind(1, "v")],
        id="narrowed-untagged-rule-does-not-shadow",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("u", "{untagged: false}", "{last: 3}") + _rule("v"),
        [
            (
                "error",
                "$.rules[1]",
                "rule `v` can never own a tag: rule `u` (line 5) before it selects everything",
            )
        ],
        id="untagged-false-is-a-tag-rule",
    ),
    pytest.param(
        HEAD + "protect:\n  digests: ['sha256:abc']\nrules:\n" + _rule("all"),
        [("error", "$.protect.digests[0]", None)],
        id="protect-digest-malformed",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_untagged_checks(text: str, expected: list[tuple[str, str, str | None]]) -> None:
    got = _diags(text)
    if any(message is None for _, _, message in expected):  # schema errors: path only
        assert [(s, p) for s, p, _ in got] == [(s, p) for s, p, _ in expected]
    else:
        assert got == expected


def test_values_built() -> None:
    digest = "sha256:" + "ab" * 32
    policy, _ = load_policy_text(
        HEAD
        + f"protect:\n  digests: ['{digest}']\nrules:\n"
        + _rule("u", "{untagged: true, repositories: ['apps/.*']}", "{last: 3, newer_than: 7d}")
        + _rule("all"),
        "p.yaml",
        env=ENV,
        require_env=True,
    )
    untagged, tags = policy.rules
    assert untagged.match.untagged and not tags.match.untagged
    assert policy.protect_digests == frozenset({digest})
    assert policy.has_untagged_rule
    assert untagged.match.selects_repository("apps/web")
    assert not untagged.match.selects_repository("lib")
    assert not untagged.match.selects_tag("latest")  # an untagged rule selects no tag
    assert untagged.keep.last == 3
