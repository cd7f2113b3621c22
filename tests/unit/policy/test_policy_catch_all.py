"""One definition of a catch-all rule (issue 18): `Match.selects_everything` on the built policy
and the loader's check for rules no tag can reach agree, `.*` and an absent pattern alike."""

from __future__ import annotations

import pytest

from retention.policy.load import check_policy_text, load_policy_text

HEAD = "version: 1\nregistry:\n  url: https://registry.example.com\nrules:\n"
UNREACHABLE = "can never own"

MATCHES = [
    pytest.param("{}", True, id="empty"),
    pytest.param("{tags: ['.*']}", True, id="tags-dot-star"),
    pytest.param("{repositories: ['.+'], tags: ['^.*$']}", True, id="both-match-all"),
    pytest.param("{repositories: ['apps/.*', '(.*)']}", True, id="one-match-all-in-the-list"),
    pytest.param("{tags: []}", True, id="an-empty-list"),
    pytest.param("{tags: ['v.*']}", False, id="a-narrowing-pattern"),
    pytest.param("{tags: ['[^/]*']}", False, id="not-analysed-further"),
    pytest.param("{exclude_tags: ['x']}", False, id="an-exclude-list"),
    pytest.param("{tags: ['.*'], exclude_repositories: ['x']}", False, id="match-all-but-excludes"),
    pytest.param("{untagged: true, repositories: ['.*']}", True, id="untagged-match-all"),
    pytest.param("{untagged: true, repositories: ['apps/.*']}", False, id="untagged-narrowed"),
]


def _rule(name: str, match: str) -> str:
    return f"  - name: {name}\n    match: {match}\n    keep: all\n"


@pytest.mark.parametrize(("match", "everything"), MATCHES)
def test_the_built_match_and_the_check_agree(match: str, everything: bool) -> None:
    last = HEAD + _rule("only", match)
    policy, _ = load_policy_text(last, "p.yaml", env={}, require_env=True)
    assert policy.rules[0].match.selects_everything is everything
    untagged = "untagged: true" in match
    later = _rule("later", "{untagged: true}" if untagged else "{tags: [x]}")
    _, diagnostics = check_policy_text(
        HEAD + _rule("first", match) + later, "p.yaml", env={}, require_env=True
    )
    shadowed = [d for d in diagnostics if d.severity == "error" and UNREACHABLE in d.message]
    assert bool(shadowed) is everything
