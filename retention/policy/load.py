"""Policy loader: bytes → YAML nodes with marks → `${VAR}` from an `env` argument → JSON Schema →
semantic checks → a frozen `Policy`, collecting every problem as a located `Diagnostic`.

The pipeline and its public entry points; each step is a module of its own (docs/architecture.md).
Never reads `os.environ` (the caller passes `env`), never contacts a registry, never prints.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace

from retention.errors import Diagnostic, PolicyError
from retention.policy.build import build_policy
from retention.policy.checks import check_semantics
from retention.policy.env import expand_env
from retention.policy.model import Policy
from retention.policy.nodes import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_VALUES, read_document
from retention.policy.patterns import compile_pattern
from retention.policy.report import Report, render_path
from retention.policy.schema import check_schema, policy_schema

log = logging.getLogger(__name__)

__all__ = [
    "MAX_ALIASES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_VALUES",
    "check_policy_file",
    "check_policy_text",
    "compile_pattern",
    "load_policy",
    "load_policy_text",
    "policy_schema",
    "render_path",
    "validate_files",
]


def load_policy(
    path: str, *, env: Mapping[str, str], require_env: bool
) -> tuple[Policy, list[Diagnostic]]:
    """Load and check the policy file at `path`.

    `env` supplies `${VAR}` values for the `registry:` section; with `require_env` an unset
    variable is an error (plan, apply, schedule), without it a warning (validate).
    Returns the policy and its warnings; raises `PolicyError` holding every diagnostic when
    there is at least one error.
    """
    policy, diagnostics = check_policy_file(path, env=env, require_env=require_env)
    if policy is None:
        raise PolicyError(diagnostics)
    return policy, diagnostics


def load_policy_text(
    text: bytes | str, name: str, *, env: Mapping[str, str], require_env: bool
) -> tuple[Policy, list[Diagnostic]]:
    """Like `load_policy`, for text already in memory; `name` is used in messages and as
    `Policy.path`."""
    policy, diagnostics = check_policy_text(text, name, env=env, require_env=require_env)
    if policy is None:
        raise PolicyError(diagnostics)
    return policy, diagnostics


def validate_files(
    paths: Iterable[str], *, env: Mapping[str, str], require_env: bool = False
) -> dict[str, list[Diagnostic]]:
    """Check every file; map each path (as given) to its diagnostics, errors and warnings,
    sorted by position. A path with no error-severity diagnostic is valid."""
    return {path: check_policy_file(path, env=env, require_env=require_env)[1] for path in paths}


def check_policy_file(
    path: str, *, env: Mapping[str, str], require_env: bool
) -> tuple[Policy | None, list[Diagnostic]]:
    """Never raises for bad input: the policy (None when invalid) and every diagnostic."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
            size = _file_size(fh.fileno(), len(data))
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return None, [Diagnostic(path, 0, 0, "$", f"cannot read the file: {reason}")]
    if size > MAX_BYTES:
        return None, [_too_large(path, size)]
    return check_policy_text(data, path, env=env, require_env=require_env)


def check_policy_text(
    text: bytes | str, name: str, *, env: Mapping[str, str], require_env: bool
) -> tuple[Policy | None, list[Diagnostic]]:
    """Never raises for bad input: the policy (None when invalid) and every diagnostic."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > MAX_BYTES:
        return None, [_too_large(name, len(data))]
    report = Report(name)
    policy = _run(data, name, env=env, require_env=require_env, report=report)
    return policy, report.sorted()


def _run(
    data: bytes, name: str, *, env: Mapping[str, str], require_env: bool, report: Report
) -> Policy | None:
    """The steps, in order; each adds what it finds to `report`."""
    document = read_document(data, report)
    if document is None:
        return None
    report.locator = document
    values, unresolved = expand_env(document.data, env=env, require_env=require_env, report=report)
    document = replace(document, data=values)
    check_schema(document, report)
    patterns = check_semantics(document, unresolved, report)
    if report.has_errors:
        return None
    policy = build_policy(document, patterns, name=name, sha256=hashlib.sha256(data).hexdigest())
    log.debug("policy %s: %d rule(s), sha256 %s", name, len(policy.rules), policy.sha256)
    return policy


def _file_size(fd: int, read: int) -> int:
    try:
        st = os.fstat(fd)
    except OSError:
        return read
    return max(st.st_size, read)


def _too_large(name: str, size: int) -> Diagnostic:
    return Diagnostic(
        name,
        0,
        0,
        "$",
        f"the file is {size} bytes, more than the {MAX_BYTES} bytes (1 MiB) a policy may be",
        hint="a policy is a few KiB; is this the right file?",
    )
