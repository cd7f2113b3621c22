"""`retention validate` through `main(argv)`, and once as a real subprocess."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from retention.cli import main
from retention.policy.load import validate_files

ROOT = Path(__file__).resolve().parents[2]

VALID = """\
version: 1
registry:
  url: https://registry.example.com
rules:
  - name: all
    match: {}
    keep: all
"""

# valid, with one warning (an unset variable)
WARNS = VALID.replace(
    "  url: https://registry.example.com\n",
    "  url: https://registry.example.com\n  auth: {username: ci, password: '${RT_TEST_PW}'}\n",
)

BAD_A = """\
version: 1
registry:
  url: registry.example.com
rules:
  - name: a
    match: {tags: ['(?=x)']}
    kep: all
"""

BAD_B = """\
version: 2
registry: {url: 'https://r.example.com'}
settings: {max_deletions: lots}
rules:
  - name: a
    match: {}
    keep: {last: -1}
"""


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("RT_TEST_PW", raising=False)
    out = {}
    for name, text in {"valid": VALID, "warns": WARNS, "bad_a": BAD_A, "bad_b": BAD_B}.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        out[name] = str(path)
    return out


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """validate never contacts a registry: any socket is a failure (DESIGN §6.6)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("validate opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_valid_policy_exits_0(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", files["valid"]]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("", "1 file(s) valid\n")


def test_warnings_do_not_fail_unless_strict(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    warning = (
        f"{files['warns']}:4:34: $.registry.auth.password: warning: environment variable "
        "`RT_TEST_PW` is not set (hint: validate only warns; plan, apply and schedule fail until "
        "it is set)\n"
    )
    assert main(["validate", files["valid"], files["warns"]]) == 0
    assert capsys.readouterr().err == warning + "2 file(s) valid, 1 warning(s)\n"
    assert main(["validate", "--strict", files["valid"], files["warns"]]) == 1
    assert capsys.readouterr().err == (
        warning + "1 of 2 file(s) invalid: 0 error(s), 1 warning(s) (--strict: warnings count)\n"
    )


def test_every_error_of_every_file_in_one_run(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [files["bad_a"], files["valid"], files["bad_b"]]
    assert main(["validate", *argv]) == 1
    err = capsys.readouterr().err
    a, b = files["bad_a"], files["bad_b"]
    assert err == (
        f"{a}:3:8: $.registry.url: the registry URL must start with https:// or http:// "
        "(hint: e.g. https://registry.example.com or http://127.0.0.1:5000)\n"
        f"{a}:5:5: $.rules[0]: missing required key `keep` "
        "(hint: `keep: all`, or `keep: {last: 5, newer_than: 30d}`)\n"
        f"{a}:6:20: $.rules[0].match.tags[0]: invalid RE2 pattern `(?=x)`: invalid perl "
        "operator: (?= (hint: RE2 has no look-ahead (it guarantees linear time); use "
        "exclude_tags)\n"
        f"{a}:7:5: $.rules[0].kep: unknown key `kep` (hint: did you mean `keep`?)\n"
        f"{b}:1:10: $.version: unsupported policy version `2` "
        "(hint: this version of retention reads `version: 1`)\n"
        f"{b}:3:27: $.settings.max_deletions: expected a non-negative integer or a percentage "
        'such as "25%", got the string `lots`\n'
        f"{b}:7:18: $.rules[0].keep.last: must be at least 0, got -1\n"
        "2 of 3 file(s) invalid: 7 error(s), 0 warning(s)\n"
    )


def test_json_format_puts_the_problems_on_stdout(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--format", "json", files["warns"], files["bad_b"]]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [(d["file"], d["line"], d["column"], d["path"], d["severity"]) for d in doc] == [
        (files["warns"], 4, 34, "$.registry.auth.password", "warning"),
        (files["bad_b"], 1, 10, "$.version", "error"),
        (files["bad_b"], 3, 27, "$.settings.max_deletions", "error"),
        (files["bad_b"], 7, 18, "$.rules[0].keep.last", "error"),
    ]
    assert set(doc[0]) == {"file", "line", "column", "path", "severity", "message", "hint"}
    assert doc[3]["message"] == "must be at least 0, got -1"
    assert doc[3]["hint"] is None
    assert err == "1 of 2 file(s) invalid: 3 error(s), 1 warning(s)\n"


def test_json_format_of_valid_files_is_an_empty_list(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--format", "json", files["valid"]]) == 0
    assert capsys.readouterr() == ("[]\n", "1 file(s) valid\n")


def test_the_output_matches_the_library(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    paths = list(files.values())
    main(["validate", *paths])
    err = capsys.readouterr().err
    expected = [d.render() for ds in validate_files(paths, env={}).values() for d in ds]
    assert err.splitlines()[:-1] == expected


def test_quiet_shows_only_what_fails(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-q", files["valid"], files["warns"]]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["validate", files["warns"], "--quiet", "--strict"]) == 1
    assert "RT_TEST_PW" in capsys.readouterr().err


def test_a_missing_file_is_reported_and_the_others_still_checked(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert main(["validate", missing, files["valid"]]) == 1
    assert capsys.readouterr().err == (
        f"{missing}: $: cannot read the file: No such file or directory\n"
        "1 of 2 file(s) invalid: 1 error(s), 0 warning(s)\n"
    )


def test_the_example_policies_validate() -> None:
    policies = sorted(str(p) for p in (ROOT / "policies").glob("*.yaml"))
    assert main(["validate", *policies]) == 0


def test_validate_needs_at_least_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 1  # a usage error, like every other error
    assert "POLICY" in capsys.readouterr().err


@pytest.mark.usefixtures("files")
def test_a_real_process_prints_only_our_diagnostics(tmp_path: Path) -> None:
    """RE2 logs compile errors from C++ straight to fd 2 unless told not to: nothing of it leaks."""
    bad = tmp_path / "regex.yaml"
    bad.write_text(
        "version: 1\nregistry: {url: 'http://127.0.0.1:5000'}\nrules:\n"
        "  - name: a\n    match: {tags: ['(?=x)', '(a)\\1', '[z-a]', 'a**']}\n    keep: all\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "retention", "validate", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 5, done.stderr
    assert all(line.startswith(f"{bad}:5:") for line in lines[:4]), done.stderr
    assert lines[4] == "1 of 1 file(s) invalid: 4 error(s), 0 warning(s)"


def test_compiling_bad_patterns_writes_nothing_to_fd_2() -> None:
    code = (
        "from retention.policy.load import compile_pattern\n"
        "import re2\n"
        "for p in ['(?=x)', '(?<!y)', '(a)\\\\1', '[', 'a{2,1}']:\n"
        "    try:\n"
        "        compile_pattern(p)\n"
        "    except re2.error:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('compiled ' + p)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
