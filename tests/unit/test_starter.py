"""`retention init`'s pure half: tag families, their counts, and a starter policy that loads."""

from __future__ import annotations

import re

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.errors import RetentionError
from retention.policy.load import load_policy_text
from retention.policy.model import Policy
from retention.starter import (
    CATCH_ALL,
    FAMILIES,
    Family,
    classify,
    render_policy,
    starter_policy,
    survey,
)

SIG = "sha256-" + "ab" * 32

# tag → the family that owns it (None: unrecognised, kept by the catch-all rule)
CLASSIFIED = [
    ("latest", "moving"),
    ("stable", "moving"),
    ("main", "moving"),
    ("nightly", "moving"),
    ("v1.2.3", "releases"),
    ("1.2.3", "releases"),
    ("2026.11.27", "releases"),
    ("3.11", "release-lines"),
    ("v2", "release-lines"),
    ("1.2.3-rc.1", "pre-releases"),
    ("v2.0.0-beta2", "pre-releases"),
    ("1.0.0-SNAPSHOT", "pre-releases"),
    ("1.2.3-alpine", "release-variants"),
    ("3.11-slim", "release-variants"),
    ("1.2.3-abc1234", "release-variants"),
    ("pr-12", "pull-requests"),
    ("pr-123-abc1234", "pull-requests"),
    ("mr-7", "pull-requests"),
    ("pr42", "pull-requests"),
    ("nightly-20261127", "nightlies"),
    ("20261127-nightly", "nightlies"),
    ("20261127", "dated-builds"),
    ("2026-11-27", "dated-builds"),
    ("build-20261127.3", "dated-builds"),
    ("main-20261127", "dated-builds"),
    ("20261127T0315", "dated-builds"),
    ("main-1a2b3c4", "branch-builds"),
    ("feature_x-0123456789abcdef0123456789abcdef01234567", "branch-builds"),
    ("sha-1a2b3c4", "branch-builds"),
    ("1a2b3c4", "commit-builds"),
    ("deadbeefcafe", "commit-builds"),
    (SIG, "signatures"),
    (SIG + ".sig", "signatures"),
    (SIG + ".att", "signatures"),
    (SIG + ".sbom", "signatures"),
    # unrecognised: kept
    ("1234567", None),  # all digits: a build number, not a commit
    ("main-0839794", "branch-builds"),  # a short sha can be all digits
    ("main-1732700000", "branch-builds"),  # a timestamp: a build too
    ("main-123456", None),  # a short all-digit suffix is a build number
    ("build-42", None),
    ("20261399", None),  # not a date, all digits
    ("16", None),  # a bare number may be a major version or a build: keep
    ("weird_tag", None),
    ("latest-alpine", None),
    ("prod-eu", None),
    ("sha256-abc.sig", None),  # not a full digest
]


@pytest.mark.parametrize(("tag", "family"), CLASSIFIED, ids=[t for t, _ in CLASSIFIED])
def test_classify(tag: str, family: str | None) -> None:
    found = classify(tag)
    assert (found.key if found else None) == family


def test_family_keys_are_unique_and_not_the_catch_all() -> None:
    keys = [f.key for f in FAMILIES]
    assert len(keys) == len(set(keys))
    assert CATCH_ALL not in keys


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.key)
def test_every_pattern_means_the_same_in_re2_and_python(family: Family) -> None:
    """`classify` uses Python `re`, policies use RE2: the patterns must agree on every tag."""
    for pattern in filter(None, (family.pattern, family.exclude)):
        compiled = re2.compile(pattern)
        for tag, _ in CLASSIFIED:
            assert (compiled.fullmatch(tag) is None) == (re.fullmatch(pattern, tag) is None), tag


REGISTRY = {
    "apps/web": ["latest", "v1.0.0", "v1.1.0", "pr-1-aaaaaaa", "pr-2-bbbbbbb", "main-ccccccc"],
    "apps/api": ["latest", "v1.0.0", "pr-9-ddddddd", "odd"],
    "base/python": ["3.11", "nightly-20261101", SIG + ".sig"],
}


def test_survey_counts_tags_and_repositories_per_family() -> None:
    found = survey(REGISTRY)
    assert (found.repositories, found.tags) == (3, 13)
    counts = {s.family.key: (s.tags, s.repositories) for s in found.families if s.family}
    assert counts == {
        "signatures": (1, 1),
        "moving": (2, 2),
        "releases": (3, 2),
        "release-lines": (1, 1),
        "pull-requests": (3, 2),
        "nightlies": (1, 1),
        "branch-builds": (1, 1),
    }
    assert (found.other.tags, found.other.repositories) == (1, 1)
    assert found.other.examples == ("apps/api:odd",)


def test_survey_examples_come_from_different_repositories_first() -> None:
    prs = survey(REGISTRY).seen("pull-requests")
    assert prs is not None
    assert prs.examples == (
        "apps/api:pr-9-ddddddd",
        "apps/web:pr-1-aaaaaaa",
        "apps/web:pr-2-bbbbbbb",
    )


def test_survey_counts_a_repeated_tag_once() -> None:
    assert survey({"a": ["v1.0.0", "v1.0.0"]}).tags == 1


def _load(text: str, env: dict[str, str] | None = None) -> Policy:
    policy, diagnostics = load_policy_text(text, "starter.yaml", env=env or {}, require_env=True)
    assert [d.render() for d in diagnostics] == []
    return policy


def test_starter_protects_releases_and_latest_and_keeps_recent_builds() -> None:
    policy = _load(starter_policy(REGISTRY, url="http://127.0.0.1:5000"))
    assert policy.registry.url.rstrip("/") == "http://127.0.0.1:5000"
    assert policy.registry.auth is None
    for tag in ("latest", "v1.0.0", "3.11", "v10.20.30"):
        assert policy.is_protected(tag), tag
    rules = {r.name: r for r in policy.rules}
    assert list(rules) == ["pull-requests", "nightlies", "branch-builds", CATCH_ALL]
    assert (rules["pull-requests"].keep.last, rules["pull-requests"].keep.newer_than_text) == (
        5,
        "14d",
    )
    assert rules[CATCH_ALL].keep.all


def test_empty_registry_gives_a_valid_policy_with_only_the_catch_all() -> None:
    text = starter_policy({}, url="https://registry.example.com")
    policy = _load(text)
    assert [r.name for r in policy.rules] == [CATCH_ALL]
    assert policy.is_protected("latest")
    assert "(no tags found)" in text


def test_no_catch_all_rule_when_every_tag_is_recognised() -> None:
    """A rule that owns no tag is a plan warning; unselected tags are kept anyway."""
    text = starter_policy({"a": ["latest", "pr-1", "main-abcdef1"]}, url="https://r")
    assert [r.name for r in _load(text).rules] == ["pull-requests", "branch-builds"]
    assert "# A tag no rule selects is kept" in text


def test_starter_comments_carry_the_counts() -> None:
    text = starter_policy(REGISTRY, url="http://r:5000", written_on="2026-11-27", filename="p.yaml")
    assert "written by `retention init` on 2026-11-27" in text
    assert "It read 3 repositories and 13 tags" in text
    assert "# pull-request builds: 3 tags in 2 repositories, e.g. apps/api:pr-9-ddddddd" in text
    assert "#   retention plan -p p.yaml" in text
    assert "sha256-<digest>.sig/.att/.sbom, 1 tag) need no rule" in text


def test_credentials_are_written_as_an_environment_reference() -> None:
    text = starter_policy(
        REGISTRY, url="https://r.example", username="robot$ci+cleanup", password_env="REG_PW"
    )
    assert "${REG_PW}" in text
    policy = _load(text, env={"REG_PW": "s3cret"})
    assert policy.registry.auth is not None
    assert policy.registry.auth.username == "robot$ci+cleanup"
    assert policy.registry.auth.password == "s3cret"
    assert "s3cret" not in text


def test_a_literal_dollar_brace_in_the_username_is_not_expanded() -> None:
    text = starter_policy({}, url="https://r.example", username="a${B}", password_env="P")
    policy = _load(text, env={"P": "x", "B": "expanded"})
    assert policy.registry.auth is not None
    assert policy.registry.auth.username == "a${B}"


BAD_CREDENTIALS = [
    ("username-alone", "u", None, "--username and --password-env go together"),
    ("password-alone", None, "P", "--username and --password-env go together"),
    ("bad-variable", "u", "not a name", "is not an environment variable name"),
    ("empty-username", " ", "P", "--username must be a non-empty name"),
    ("newline-username", "u\nv", "P", "--username must be a non-empty name"),
]


@pytest.mark.parametrize(
    ("username", "password_env", "message"),
    [c[1:] for c in BAD_CREDENTIALS],
    ids=[c[0] for c in BAD_CREDENTIALS],
)
def test_bad_credential_options_are_refused_with_a_hint(
    username: str | None, password_env: str | None, message: str
) -> None:
    with pytest.raises(RetentionError, match=re.escape(message)) as caught:
        render_policy(survey({}), url="https://r", username=username, password_env=password_env)
    assert caught.value.hint


def test_rendering_is_deterministic_whatever_the_input_order() -> None:
    shuffled = {k: list(reversed(v)) for k, v in reversed(list(REGISTRY.items()))}
    assert starter_policy(REGISTRY, url="https://r") == starter_policy(shuffled, url="https://r")


# --- properties ----------------------------------------------------------------------------------

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
REALISTIC = st.one_of(
    st.sampled_from([t for t, _ in CLASSIFIED]),
    st.integers(0, 9999).map(lambda n: f"pr-{n}"),
    st.from_regex(r"v?[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(-[a-z]{1,6}[0-9]?)?", fullmatch=True),
    st.from_regex(r"[a-z]{1,8}-[0-9a-f]{7,12}", fullmatch=True),
    st.from_regex(r"(nightly-)?20[0-9]{2}-?[01][0-9]-?[0-3][0-9]", fullmatch=True),
    st.from_regex(TAG, fullmatch=True),
)
REPO = st.from_regex(r"[a-z0-9]{1,10}(/[a-z0-9]{1,10}){0,2}", fullmatch=True)


def _owner(policy: Policy, tag: str) -> str:
    """Who owns `tag` under the generated policy, in the terms `classify` uses."""
    signatures = FAMILIES[0]
    if signatures.matches(tag):
        return "signatures"  # attached: the engine gives them to their subject, no rule owns them
    if policy.is_protected(tag):
        return "protect"
    for rule in policy.rules:
        if rule.match.selects_tag(tag):
            return rule.name
    return "unselected"


def _expected(tag: str) -> str:
    family = classify(tag)
    if family is None:
        return CATCH_ALL
    if family.treatment == "protect":
        return "protect"
    return family.key


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(REPO, st.lists(REALISTIC, max_size=12), max_size=4))
def test_any_tag_names_give_a_policy_that_loads_and_owns_what_its_comments_say(
    registry: dict[str, list[str]],
) -> None:
    policy = _load(starter_policy(registry, url="http://127.0.0.1:5000"))
    for tags in registry.values():
        for tag in tags:
            assert _owner(policy, tag) == _expected(tag), tag


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=30), st.lists(st.text(max_size=30), max_size=5), max_size=3)
)
def test_names_that_are_not_tags_still_give_a_policy_that_loads(
    registry: dict[str, list[str]],
) -> None:
    _load(starter_policy(registry, url="https://registry.example.com"))
