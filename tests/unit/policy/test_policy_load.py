"""The policy loader: values built from a valid policy, every semantic check, `${VAR}`,
YAML's retyped scalars, and the hard limits."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from retention.errors import Diagnostic, PolicyError
from retention.policy.load import (
    MAX_ALIASES,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    check_policy_text,
    compile_pattern,
    load_policy,
    load_policy_text,
    render_path,
    validate_files,
)
from retention.policy.model import Gc, Keep, MaxDeletions, Schedule, Settings, Tls

ENV = {"REGISTRY_USER": "ci-bot", "REGISTRY_PASSWORD": "s3cret-pw"}

FULL = """\
version: 1
registry:
  url: https://registry.example.com
  auth: {username: "${REGISTRY_USER}", password: "${REGISTRY_PASSWORD}"}
  tls: {verify: false, ca_file: /etc/ssl/internal-ca.pem}
schedule: {cron: "30 3 * * *", timezone: Europe/Berlin}
gc:
  command: [docker-registry, garbage-collect, /etc/docker/registry/config.yml]
  storage_path: /var/lib/docker-registry
settings: {concurrency: 4, max_deletions: 25%, unknown_age: oldest, untag: true}
protect:
  tags: ['latest', 'v?\\d+\\.\\d+\\.\\d+']
rules:
  - name: release-candidates
    match:
      repositories: ['apps/.*']
      exclude_repositories: ['apps/legacy']
      tags: ['.*-rc\\d+']
      exclude_tags: []
    keep:
      last: 5
      newer_than: 30d
  - name: everything-else
    match: {}
    keep: all
"""

MINIMAL = """\
version: 1
registry:
  url: http://127.0.0.1:5000
rules:
  - name: all
    match: {}
    keep: all
"""

HEAD = "version: 1\nregistry:\n  url: https://registry.example.com\n"


def _rule(name: str, match: str = "{}", keep: str = "all") -> str:
    return f"  - name: {name}\n    match: {match}\n    keep: {keep}\n"


def _diags(
    text: str, *, env: dict[str, str] | None = None, require_env: bool = True
) -> list[tuple[str, str, str]]:
    _, diagnostics = check_policy_text(
        text, "p.yaml", env=ENV if env is None else env, require_env=require_env
    )
    return [(d.severity, d.path, d.message) for d in diagnostics]


# --- values -------------------------------------------------------------------------------------


def test_a_full_policy_becomes_exactly_these_values() -> None:
    policy, warnings = load_policy_text(FULL, "full.yaml", env=ENV, require_env=True)
    assert warnings == []
    assert policy.version == 1
    assert policy.path == "full.yaml"
    assert policy.sha256 == hashlib.sha256(FULL.encode()).hexdigest()
    assert policy.registry.url == "https://registry.example.com"
    assert policy.registry.auth is not None
    assert (policy.registry.auth.username, policy.registry.auth.password) == ("ci-bot", "s3cret-pw")
    assert policy.registry.tls == Tls(verify=False, ca_file="/etc/ssl/internal-ca.pem")
    assert policy.schedule == Schedule(cron="30 3 * * *", timezone="Europe/Berlin")
    assert policy.gc == Gc(
        command=("docker-registry", "garbage-collect", "/etc/docker/registry/config.yml"),
        storage_path="/var/lib/docker-registry",
    )
    assert policy.settings == Settings(
        concurrency=4, max_deletions=MaxDeletions(percent=25.0), unknown_age="oldest", untag=True
    )
    assert [p.source for p in policy.protect_tags] == ["latest", r"v?\d+\.\d+\.\d+"]
    first, second = policy.rules
    assert first.name == "release-candidates"
    assert first.line == 14
    assert [p.source for p in first.match.repositories] == ["apps/.*"]
    assert [p.source for p in first.match.exclude_repositories] == ["apps/legacy"]
    assert [p.source for p in first.match.tags] == [r".*-rc\d+"]
    assert first.match.exclude_tags == ()
    assert first.keep == Keep(last=5, newer_than=timedelta(days=30), newer_than_text="30d")
    assert second.name == "everything-else"
    assert second.match.selects_everything
    assert second.keep == Keep(all=True)
    assert "s3cret-pw" not in repr(policy)


def test_defaults_fill_what_a_minimal_policy_leaves_out() -> None:
    policy, warnings = load_policy_text(MINIMAL, "min.yaml", env={}, require_env=True)
    assert warnings == []
    assert policy.registry.auth is None
    assert policy.registry.tls == Tls(verify=True, ca_file=None)
    assert policy.settings == Settings()
    assert policy.settings.max_deletions == MaxDeletions(count=500)
    assert policy.settings.untag is False
    assert policy.schedule is None
    assert policy.gc is None
    assert policy.protect_tags == ()


def test_load_policy_reads_the_file_keeps_the_path_as_given_and_hashes_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ("\ufeff" + MINIMAL).encode()  # a BOM is accepted and hashed like every other byte
    (tmp_path / "p.yaml").write_bytes(data)
    monkeypatch.chdir(tmp_path)
    policy, _ = load_policy("./p.yaml", env={}, require_env=True)
    assert policy.path == "./p.yaml"
    assert policy.sha256 == hashlib.sha256(data).hexdigest()


def test_a_policy_error_holds_every_diagnostic_and_warnings_too() -> None:
    text = (
        HEAD
        + "rules:\n"
        + _rule("a", "{tags: [tmp]}", "{last: 0}")
        + _rule("a", "{tags: ['(?=x)']}")
    )
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml", env={}, require_env=True)
    items = caught.value.items
    assert [(d.severity, d.path) for d in items] == [
        ("warning", "$.rules[0].keep.last"),
        ("error", "$.rules[1].name"),
        ("error", "$.rules[1].match.tags[0]"),
    ]
    assert caught.value.message == "2 error(s) in policy"
    assert caught.value.diagnostics().splitlines()[0].startswith("p.yaml:7:18: $.rules[0]")


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("1s", timedelta(seconds=1)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("14d", timedelta(days=14)),
        ("2w", timedelta(weeks=2)),
        ("999999w", timedelta(weeks=999999)),
    ],
    ids=str,
)
def test_durations(text: str, delta: timedelta) -> None:
    policy, _ = load_policy_text(
        HEAD + "rules:\n" + _rule("r", keep=f"{{newer_than: {text}}}"),
        "p.yaml",
        env={},
        require_env=True,
    )
    assert policy.rules[0].keep.newer_than == delta
    assert policy.rules[0].keep.newer_than_text == text


@pytest.mark.parametrize(
    ("written", "expected", "limit_of_1000"),
    [
        ("0", MaxDeletions(count=0), 0),
        ("500", MaxDeletions(count=500), 500),
        ("'25%'", MaxDeletions(percent=25.0), 250),
        ("2.5%", MaxDeletions(percent=2.5), 25),
        ("0%", MaxDeletions(percent=0.0), 0),
        ("100%", MaxDeletions(percent=100.0), 1000),
        ("33.3%", MaxDeletions(percent=33.3), 333),
    ],
    ids=str,
)
def test_max_deletions(written: str, expected: MaxDeletions, limit_of_1000: int) -> None:
    policy, _ = load_policy_text(
        HEAD + f"settings: {{max_deletions: {written}}}\nrules:\n" + _rule("r"),
        "p.yaml",
        env={},
        require_env=True,
    )
    assert policy.settings.max_deletions == expected
    assert policy.settings.max_deletions.limit(1000) == limit_of_1000


def test_patterns_match_the_whole_name() -> None:
    policy, _ = load_policy_text(
        HEAD + "protect: {tags: ['v\\d+', 'latest']}\nrules:\n"
        "  - name: apps\n    match: {repositories: ['apps/.*'], tags: ['pr-\\d+']}\n"
        "    keep: all\n",
        "p.yaml",
        env={},
        require_env=True,
    )
    assert policy.is_protected("v1")
    assert not policy.is_protected("v1-rc1")
    assert not policy.is_protected("xv1")
    assert not policy.is_protected("latest-debug")
    match = policy.rules[0].match
    assert match.selects_repository("apps/web")
    assert not match.selects_repository("team/apps/web")
    assert match.selects_tag("pr-12")
    assert not match.selects_tag("pr-12-abc")


def test_compile_pattern_is_re2() -> None:
    assert compile_pattern(r"a+b").matches("aaab")
    assert not compile_pattern(r"a+b").matches("aaabc")
    # exponential for backtracking engines, linear for RE2
    assert not compile_pattern(r"(a+)+$").matches("a" * 5000 + "!")


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ((), "$"),
        (("rules", 0, "keep"), "$.rules[0].keep"),
        (("settings", "max-deletions"), "$.settings.max-deletions"),
        (("x", "a b"), '$.x["a b"]'),
    ],
    ids=str,
)
def test_render_path(path: tuple[str | int, ...], rendered: str) -> None:
    assert render_path(path) == rendered


# --- semantic checks ----------------------------------------------------------------------------

SEMANTIC = [
    pytest.param(
        HEAD + "rules:\n" + _rule("builds", "{tags: [a]}") + _rule("builds", "{tags: [b]}"),
        [("error", "$.rules[1].name", "duplicate rule name `builds` (first at line 5)")],
        id="rule-names-unique",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("all") + _rule("late", "{tags: [a]}"),
        [
            (
                "error",
                "$.rules[1]",
                "rule `late` can never own a tag: rule `all` (line 5) before it selects everything",
            )
        ],
        id="unreachable-after-empty-match",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("all", "{repositories: ['.*'], tags: []}") + _rule("late"),
        [
            (
                "error",
                "$.rules[1]",
                "rule `late` can never own a tag: rule `all` (line 5) before it selects everything",
            )
        ],
        id="unreachable-after-dot-star-and-empty-list",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("all") + _rule("b", "{tags: [b]}") + _rule("c", "{tags: [c]}"),
        [
            (
                "error",
                "$.rules[1]",
                "rule `b` can never own a tag: rule `all` (line 5) before it selects everything",
            ),
            (
                "error",
                "$.rules[2]",
                "rule `c` can never own a tag: rule `all` (line 5) before it selects everything",
            ),
        ],
        id="every-rule-after-a-catch-all",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("most", "{exclude_tags: ['keep-.*']}") + _rule("b"),
        [],
        id="a-catch-all-with-an-exclude-list-is-not-everything",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("apps", "{repositories: ['apps/.*']}") + _rule("b"),
        [],
        id="a-narrowed-repository-list-is-not-everything",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("b", "{tags: [b]}") + _rule("all"),
        [],
        id="a-catch-all-last-is-fine",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("wipe", "{tags: ['tmp-.*']}", "{last: 0}"),
        [
            (
                "warning",
                "$.rules[0].keep.last",
                "`last: 0` without `newer_than` deletes every image rule `wipe` owns",
            )
        ],
        id="last-0-alone-warns",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("wipe", "{tags: ['tmp-.*']}", "{last: 0, newer_than: 1d}"),
        [],
        id="last-0-with-newer-than-is-quiet",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '@daily'}\nrules:\n" + _rule("a"), [], id="cron-shortcut"
    ),
    pytest.param(
        HEAD
        + "schedule: {cron: '0 */6 * * 1-5', timezone: America/New_York}\nrules:\n"
        + _rule("a"),
        [],
        id="cron-and-zone-valid",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '@reboot'}\nrules:\n" + _rule("a"),
        [("error", "$.schedule.cron", "unknown cron shortcut `@reboot`")],
        id="cron-reboot-is-not-a-schedule",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '* * * * * *'}\nrules:\n" + _rule("a"),
        [("error", "$.schedule.cron", "a cron expression has 5 fields, this one has 6")],
        id="cron-seconds-field",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '0 25 * * *'}\nrules:\n" + _rule("a"),
        [
            (
                "error",
                "$.schedule.cron",
                "invalid cron expression `0 25 * * *`: [0 25 * * *] is not acceptable, "
                "out of range",
            )
        ],
        id="cron-hour-out-of-range",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '0 0 31 4 *'}\nrules:\n" + _rule("a"),
        [("error", "$.schedule.cron", "the cron expression `0 0 31 4 *` never fires")],
        id="cron-april-31st",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '30 3 * * *', timezone: utc}\nrules:\n" + _rule("a"),
        [("error", "$.schedule.timezone", "unknown time zone `utc`")],
        id="timezone-is-case-sensitive",
    ),
    pytest.param(
        HEAD + "schedule: {cron: '30 3 * * *', timezone: ../../etc/passwd}\nrules:\n" + _rule("a"),
        [("error", "$.schedule.timezone", "unknown time zone `../../etc/passwd`")],
        id="timezone-path-traversal",
    ),
    pytest.param(
        HEAD + "protect: {tags: ['(?<=v)1']}\nrules:\n" + _rule("a"),
        [
            (
                "error",
                "$.protect.tags[0]",
                "invalid RE2 pattern `(?<=v)1`: invalid perl operator: (?<=",
            )
        ],
        id="re2-look-behind",
    ),
    pytest.param(
        HEAD + "protect: {tags: ['(?P<v>x)(?P=v)']}\nrules:\n" + _rule("a"),
        [
            (
                "error",
                "$.protect.tags[0]",
                "invalid RE2 pattern `(?P<v>x)(?P=v)`: invalid perl operator: (?P",
            )
        ],
        id="re2-named-back-reference",
    ),
    pytest.param(
        HEAD
        + "protect: {tags: ['(?P<major>\\d+)\\.x', '\\p{Greek}+', '[[:alpha:]]+']}\nrules:\n"
        + _rule("a"),
        [],
        id="re2-named-groups-classes-unicode",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("a", "{exclude_repositories: ['a{2,1}']}"),
        [
            (
                "error",
                "$.rules[0].match.exclude_repositories[0]",
                "invalid RE2 pattern `a{2,1}`: invalid repetition size: {2,1}",
            )
        ],
        id="re2-bad-repetition",
    ),
    pytest.param(
        "version: 1\nregistry: {url: 'https://r.example.com', auth: {username: u, password: "
        "hunter2}}\nrules:\n" + _rule("a"),
        [
            (
                "warning",
                "$.registry.auth.password",
                "the password is written in the policy file",
            )
        ],
        id="literal-password-warns",
    ),
    pytest.param(
        HEAD + "rules:\n" + _rule("${TEAM}-builds", "{tags: ['x']}"),
        [
            (
                "warning",
                "$.rules[0].name",
                "`${...}` is expanded only inside `registry:`; here it is literal text",
            )
        ],
        id="var-outside-registry-is-literal",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SEMANTIC)
def test_semantic_checks(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert _diags(text) == expected


URLS = [
    ("https://registry.example.com", None),
    ("http://127.0.0.1:5000", None),
    ("http://[::1]:5000", None),
    ("https://registry.example.com/", None),
    ("https://registry.example.com/prefix", None),
    ("HTTPS://Registry.Example.com", None),  # schemes and hosts are case-insensitive
    ("registry.example.com", "the registry URL must start with https:// or http://"),
    ("ftp://registry.example.com", "the registry URL must use http or https, not `ftp`"),
    ("https://", "the registry URL has no host"),
    ("https://:5000", "the registry URL has no host"),
    ("https://registry.example.com:99999", "the registry URL is malformed"),
    ("https://registry.example.com?x=1", "the registry URL must not have a query or fragment"),
    ("https://registry.example.com#frag", "the registry URL must not have a query or fragment"),
]


@pytest.mark.parametrize(("url", "error"), URLS, ids=[u for u, _ in URLS])
def test_registry_url(url: str, error: str | None) -> None:
    found = _diags(f"version: 1\nregistry:\n  url: '{url}'\nrules:\n" + _rule("a"))
    if error is None:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0][:2] == ("error", "$.registry.url")
        assert found[0][2].startswith(error)


def test_credentials_in_the_url_are_refused_and_never_echoed() -> None:
    text = "version: 1\nregistry:\n  url: https://bot:hunter2@r.example.com\nrules:\n" + _rule("a")
    _, diagnostics = check_policy_text(text, "p.yaml", env={}, require_env=True)
    assert [d.message for d in diagnostics] == [
        "the registry URL must not contain credentials (they would be written to plans and logs)"
    ]
    assert "hunter2" not in "".join(d.render() for d in diagnostics)


# --- ${VAR} -------------------------------------------------------------------------------------


def _registry(url: str = "https://registry.example.com", user: str = "u", pw: str = "") -> str:
    return (
        f"version: 1\nregistry:\n  url: '{url}'\n  auth:\n    username: '{user}'\n"
        f"    password: '{pw}'\nrules:\n" + _rule("a")
    )


ENV_CASES = [
    # (id, text, env, require_env, expected url, username, password, diagnostics)
    (
        "set",
        _registry("https://${HOST}:5000", "${USER}", "${PW}"),
        {"HOST": "reg.example.com", "USER": "bot", "PW": "pw"},
        True,
        ("https://reg.example.com:5000", "bot", "pw"),
        [],
    ),
    (
        "several-in-one-string",
        _registry("https://${HOST}.${DOMAIN}", pw="${A}${B}"),
        {"HOST": "reg", "DOMAIN": "example.com", "A": "x", "B": "y"},
        True,
        ("https://reg.example.com", "u", "xy"),
        [],
    ),
    (
        "unset-in-validate-is-a-warning",
        _registry(pw="${REGISTRY_PASSWORD}"),
        {},
        False,
        ("https://registry.example.com", "u", "${REGISTRY_PASSWORD}"),
        [
            (
                "warning",
                "$.registry.auth.password",
                "environment variable `REGISTRY_PASSWORD` is not set",
            )
        ],
    ),
    (
        "unset-url-in-validate-skips-the-url-check",
        _registry("${REGISTRY_URL}", pw="${P}"),
        {"P": "x"},
        False,
        ("${REGISTRY_URL}", "u", "x"),
        [("warning", "$.registry.url", "environment variable `REGISTRY_URL` is not set")],
    ),
    (
        "escaped",
        _registry(pw="$${NOT_A_VAR}"),
        {},
        True,
        ("https://registry.example.com", "u", "${NOT_A_VAR}"),
        [],
    ),
    (
        "lone-dollars-are-literal",
        _registry(pw="pa$$w$rd$"),
        {},
        True,
        ("https://registry.example.com", "u", "pa$$w$rd$"),
        [("warning", "$.registry.auth.password", "the password is written in the policy file")],
    ),
    (
        "no-braces-is-literal",
        _registry(pw="$PASSWORD"),
        {"PASSWORD": "x"},
        True,
        ("https://registry.example.com", "u", "$PASSWORD"),
        [("warning", "$.registry.auth.password", "the password is written in the policy file")],
    ),
    (
        "values-are-not-expanded-again",
        _registry(pw="${A}"),
        {"A": "${B}", "B": "no"},
        True,
        ("https://registry.example.com", "u", "${B}"),
        [],
    ),
    (
        "empty-value-counts-as-set",
        _registry(user="${U}", pw="${P}"),
        {"U": "bot", "P": ""},
        True,
        ("https://registry.example.com", "bot", ""),
        [],
    ),
]


@pytest.mark.parametrize(
    ("text", "env", "require_env", "values", "expected"),
    [c[1:] for c in ENV_CASES],
    ids=[c[0] for c in ENV_CASES],
)
def test_env_expansion(
    text: str,
    env: dict[str, str],
    require_env: bool,
    values: tuple[str, str, str],
    expected: list[tuple[str, str, str]],
) -> None:
    policy, diagnostics = load_policy_text(text, "p.yaml", env=env, require_env=require_env)
    auth = policy.registry.auth
    assert auth is not None
    assert (policy.registry.url, auth.username, auth.password) == values
    assert [(d.severity, d.path, d.message) for d in diagnostics] == expected


def test_unset_variable_in_plan_mode_is_an_error_naming_it() -> None:
    text = _registry(user="${REGISTRY_USER}", pw="${REGISTRY_TOKEN}")
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text, "p.yaml", env={"REGISTRY_USER": "bot"}, require_env=True)
    assert caught.value.diagnostics() == (
        "p.yaml:6:15: $.registry.auth.password: environment variable `REGISTRY_TOKEN` is not set "
        "(hint: set it before running plan, apply or schedule)"
    )


def test_the_same_unset_variable_twice_in_one_value_is_reported_once() -> None:
    found = _diags(_registry(pw="${X}:${X}"), env={}, require_env=True)
    assert found == [("error", "$.registry.auth.password", "environment variable `X` is not set")]


@pytest.mark.parametrize(
    ("written", "message", "hint_fragment"),
    [
        ("${", "malformed ${VAR}: `${` has no closing }", "$${ for a literal"),
        ("${}", "malformed ${VAR}: `${}` is not a variable reference", "letters, digits and _"),
        ("${1ABC}", "malformed ${VAR}: `${1ABC}` is not a variable reference", "letters"),
        ("${A B}", "malformed ${VAR}: `${A B}` is not a variable reference", "letters"),
        ("${A:-x}", "malformed ${VAR}: `${A:-x}` is not a variable reference", "defaults such"),
        ("https://${HOST", "malformed ${VAR}: `${HOST` has no closing }", "$${"),
    ],
    ids=str,
)
def test_malformed_variable_references_are_errors_in_every_mode(
    written: str, message: str, hint_fragment: str
) -> None:
    for require_env in (False, True):
        _, diagnostics = check_policy_text(
            _registry(user=written), "p.yaml", env={"A": "1"}, require_env=require_env
        )
        assert [(d.severity, d.path, d.message) for d in diagnostics] == [
            ("error", "$.registry.auth.username", message)
        ]
        assert hint_fragment in (diagnostics[0].hint or "")


def test_a_malformed_password_is_not_echoed() -> None:
    _, diagnostics = check_policy_text(
        _registry(pw="hunter2${"), "p.yaml", env={}, require_env=True
    )
    assert [d.message for d in diagnostics] == ["malformed ${VAR}: the value has no closing }"]


def test_expanded_secrets_never_appear_in_diagnostics() -> None:
    text = (
        "version: 1\nregistry:\n  url: https://r.example.com\n  auth: {username: '${U}', "
        "password: '${P}'}\n  tls: {verify: maybe}\nrules: []\n"
    )
    _, diagnostics = check_policy_text(
        text, "p.yaml", env={"U": "the-user", "P": "TOPSECRET"}, require_env=True
    )
    assert len(diagnostics) == 2
    assert "TOPSECRET" not in "\n".join(d.render() for d in diagnostics)


def test_a_non_string_password_is_not_echoed() -> None:
    _, diagnostics = check_policy_text(
        _registry().replace("password: ''", "password: 8675309"),
        "p.yaml",
        env={},
        require_env=True,
    )
    assert [(d.message, d.hint) for d in diagnostics] == [
        ("expected a string, but YAML reads the value as the integer", "quote it")
    ]


# --- YAML retyping ------------------------------------------------------------------------------

RETYPED = [
    ("1.10", "expected a string, but YAML reads `1.10` as the number 1.1", "quote it: '1.10'"),
    ("on", "expected a string, but YAML reads `on` as the boolean true", "quote it: 'on'"),
    ("off", "expected a string, but YAML reads `off` as the boolean false", "quote it: 'off'"),
    ("yes", "expected a string, but YAML reads `yes` as the boolean true", "quote it: 'yes'"),
    ("012", "expected a string, but YAML reads `012` as the integer 10", "quote it: '012'"),
    ("0x1F", "expected a string, but YAML reads `0x1F` as the integer 31", "quote it: '0x1F'"),
    ("12:30", "expected a string, but YAML reads `12:30` as the integer 750", "quote it: '12:30'"),
    ("1_000", "expected a string, but YAML reads `1_000` as the integer 1000", "quote it: '1_000'"),
    (".inf", "expected a string, but YAML reads `.inf` as the number inf", "quote it: '.inf'"),
    (
        "2024-01-31",
        "expected a string, but YAML reads `2024-01-31` as the date 2024-01-31",
        "quote it: '2024-01-31'",
    ),
    ("null", "expected a string, but YAML reads `null` as null", "quote it: 'null'"),
    ("~", "expected a string, but YAML reads `~` as null", "quote it: '~'"),
]


@pytest.mark.parametrize(("scalar", "message", "hint"), RETYPED, ids=[r[0] for r in RETYPED])
def test_tags_and_patterns_that_yaml_retyped_are_errors_with_a_quote_hint(
    scalar: str, message: str, hint: str
) -> None:
    for where, path in (
        ("protect: {tags: [%s]}\nrules:\n" + _rule("a"), "$.protect.tags[0]"),
        ("rules:\n" + _rule("a", "{tags: [%s]}"), "$.rules[0].match.tags[0]"),
        ("rules:\n" + _rule("a", "{repositories: [%s]}"), "$.rules[0].match.repositories[0]"),
        ("rules:\n" + _rule("%s"), "$.rules[0].name"),
    ):
        _, diagnostics = check_policy_text(
            HEAD + where % scalar, "p.yaml", env={}, require_env=True
        )
        assert [(d.path, d.message, d.hint) for d in diagnostics] == [(path, message, hint)]


@pytest.mark.parametrize("scalar", [r[0] for r in RETYPED], ids=str)
def test_the_same_text_quoted_is_accepted(scalar: str) -> None:
    policy, _ = load_policy_text(
        HEAD + f"protect: {{tags: ['{scalar}']}}\nrules:\n" + _rule("a"),
        "p.yaml",
        env={},
        require_env=True,
    )
    assert [p.source for p in policy.protect_tags] == [scalar]


def test_an_empty_list_item_is_nothing_not_null_text() -> None:
    found = _diags(HEAD + "protect:\n  tags:\n    -\nrules:\n" + _rule("a"))
    assert found == [("error", "$.protect.tags[0]", "expected a string, got nothing")]


def test_integers_are_not_floats_or_booleans() -> None:
    for value in ("3.0", "true"):
        found = _diags(HEAD + "rules:\n" + _rule("a", keep=f"{{last: {value}}}"))
        assert [(p, m.split(",")[0]) for _, p, m in found] == [
            ("$.rules[0].keep.last", "expected an integer")
        ]


def test_duplicate_keys_are_errors_at_the_second_key() -> None:
    found = _diags(HEAD + "settings:\n  concurrency: 2\n  concurrency: 4\nrules:\n" + _rule("a"))
    assert found == [
        ("error", "$.settings.concurrency", "duplicate key `concurrency` (first at line 5)")
    ]


def test_merge_keys_and_aliases_are_plain_yaml_and_work() -> None:
    text = (
        HEAD + "protect: {tags: &releases ['v\\d+']}\nrules:\n"
        "  - &base\n    name: a\n    match: {tags: *releases}\n    keep: {last: 3}\n"
        "  - <<: *base\n    name: b\n    match: {tags: ['b']}\n"
    )
    policy, _ = load_policy_text(text, "p.yaml", env={}, require_env=True)
    assert [(r.name, r.keep.last, [p.source for p in r.match.tags]) for r in policy.rules] == [
        ("a", 3, [r"v\d+"]),
        ("b", 3, ["b"]),
    ]


# --- limits and hostile input -------------------------------------------------------------------


def _padded(size: int) -> bytes:
    body = MINIMAL.encode()
    return body + b"#" * (size - len(body) - 1) + b"\n"


def test_a_file_at_the_size_limit_is_read_and_one_byte_more_is_refused(tmp_path: Path) -> None:
    at_limit = tmp_path / "at.yaml"
    at_limit.write_bytes(_padded(MAX_BYTES))
    over = tmp_path / "over.yaml"
    over.write_bytes(_padded(MAX_BYTES + 1))
    load_policy(str(at_limit), env={}, require_env=True)
    results = validate_files([str(over)], env={})
    assert results == {
        str(over): [
            Diagnostic(
                str(over),
                0,
                0,
                "$",
                "the file is 1048577 bytes, more than the 1048576 bytes (1 MiB) a policy may be",
                hint="a policy is a few KiB; is this the right file?",
            )
        ]
    }


def test_a_10_mb_file_is_refused_by_size_from_disk(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        for _ in range(10):
            fh.write(b"x: " + b"a" * (1024 * 1024) + b"\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(str(big), env={}, require_env=False)
    assert [d.message for d in caught.value.items] == [
        f"the file is {big.stat().st_size} bytes, more than the 1048576 bytes (1 MiB) a policy "
        "may be"
    ]


def _nested(depth: int) -> str:
    # the root mapping is level 1, `x:`'s value level 2...
    return "version: 1\nx: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"


def test_nesting_up_to_the_limit_is_parsed_and_deeper_is_refused() -> None:
    at_limit = _diags(_nested(MAX_DEPTH))
    assert ("error", "$.x", "unknown key `x`") in at_limit
    assert _diags(_nested(MAX_DEPTH + 1)) == [("error", "$", "nesting deeper than 64 levels")]


def test_aliases_up_to_the_limit_are_read_and_more_are_refused() -> None:
    def text(n: int) -> str:
        return HEAD + "protect: {tags: &t ['a']}\nx: [" + ", ".join(["*t"] * n) + "]\n"

    assert ("error", "$.x", "unknown key `x`") in _diags(text(MAX_ALIASES))
    assert _diags(text(MAX_ALIASES + 1)) == [
        ("error", "$", "more than 256 aliases (*name) in one policy")
    ]


def test_alias_expansion_is_bounded() -> None:
    lines = ["version: 1", "a0: &a0 [" + ", ".join(["x"] * 10) + "]"]
    # 10**6 values once expanded, from a few hundred bytes
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 7)]
    found = _diags("\n".join(lines) + "\n")
    assert found == [("error", "$", f"the document expands to more than {MAX_VALUES} values")]


def test_a_recursive_alias_is_refused() -> None:
    assert _diags("version: 1\nx: &x {y: *x}\n") == [
        ("error", "$", "an alias refers to a value that contains it")
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the policy is empty"),
        (b"\n# only a comment\n", "the policy is empty"),
        (b"---\n...\n", "the policy is empty"),
        (
            b"\x00\x01\x02",
            "the file contains the control character U+0000, which YAML does not allow",
        ),
        (b"version: 1\n\xc3\x28\n", "the file is not valid UTF-8 (byte 0xc3)"),
        (b"\xff\xfeh\x00i\x00", "the file is not valid UTF-8 (byte 0xff)"),
        (b"version: 1\nversion: [\n", "invalid YAML: expected the node content, but found '<"),
        (b"a: *nothing\n", "invalid YAML: found undefined alias 'nothing'"),
        (b"a: &x 1\nb: &x 2\n", "invalid YAML: found duplicate anchor 'x' (first at line 1, "),
        (b"!!python/object:os.system {}\n", "unsupported YAML tag `!!python/object:os.system`"),
    ],
    ids=str,
)
def test_hostile_or_broken_input_is_one_located_error(data: bytes, message: str) -> None:
    _, diagnostics = check_policy_text(data, "p.yaml", env={}, require_env=False)
    assert diagnostics
    assert diagnostics[0].severity == "error"
    assert diagnostics[0].message.startswith(message)
    assert diagnostics[0].line >= 1


def test_a_str_with_lone_surrogates_is_an_error_not_a_crash() -> None:
    _, diagnostics = check_policy_text("version: 1\n\udcff\n", "p.yaml", env={}, require_env=False)
    assert [d.message for d in diagnostics] == ["the file is not valid UTF-8 (byte 0xed)"]


def test_an_unreadable_path_is_a_diagnostic(tmp_path: Path) -> None:
    results = validate_files([str(tmp_path / "missing.yaml"), str(tmp_path)], env={})
    assert [[d.message for d in ds] for ds in results.values()] == [
        ["cannot read the file: No such file or directory"],
        ["cannot read the file: Is a directory"],
    ]


def test_control_characters_in_echoed_text_are_escaped() -> None:
    text = HEAD + 'rules:\n  - {name: "a\\e[31m", match: {}, keep: all}\n"\\e[2J": 1\n'
    _, diagnostics = check_policy_text(text, "p.yaml", env={}, require_env=True)
    rendered = "\n".join(d.render() for d in diagnostics)
    assert "\x1b" not in rendered
    assert "unknown key `\\x1b[2J`" in rendered
