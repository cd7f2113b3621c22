"""PURE JSON Schema check of a policy document, and its wording: one located message per value,
saying what was expected and what YAML read (docs/decisions.md, "Diagnostics and `validate`").

The schema is schemas/policy.schema.json, shipped in the wheel as package data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match
from yaml.nodes import ScalarNode

from retention.policy.nodes import SCALARS, Document
from retention.policy.report import (
    SECRET_PATHS,
    PathKey,
    Report,
    did_you_mean,
    quote,
    short,
    yaml_value,
)

# Keys whose value is a duration (`newer_than`, `settings.timeouts.*`): one wording for them all.
_DURATION_KEYS = frozenset({"newer_than", "connect", "read", "request", "run"})
# Strings that would be a boolean or null if unquoted: quoting them is the likely mistake.
_QUOTE_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~"})
_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_MISSING_HINTS = {
    "version": "add `version: 1` as the first line",
    "match": "`match: {}` selects every tag of every repository",
    "keep": "`keep: all`, or `keep: {last: 5, newer_than: 30d}`",
    "url": "e.g. `url: https://registry.example.com`",
    "rules": "a policy needs at least one rule",
    "command": "e.g. `command: [docker-registry, garbage-collect, CONFIG.yml]`",
}
_KEEP_SHAPE = "`keep` must be `all` or a mapping with `last` and/or `newer_than`, got "
_MAX_DELETIONS_SHAPE = 'expected a non-negative integer or a percentage such as "25%", got '


def policy_schema() -> dict[str, Any]:
    """The policy JSON Schema (2020-12), read from the package data shipped in the wheel."""
    return json.loads(_schema_text())  # type: ignore[no-any-return]


def check_schema(document: Document, report: Report) -> None:
    """Report every way `document` breaks the schema, one message per value."""
    errors = list(_validator().iter_errors(document.data))
    # A value of the wrong type fails its other keywords too (`const`, `enum`...): report the
    # type only. A value YAML could not read has been reported already.
    typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    wording = _Wording(document, report)
    for error in errors:
        path = tuple(error.absolute_path)
        if any(path[:n] in document.bad_paths for n in range(len(path) + 1)):
            continue
        if path in typed and error.validator != "type":
            continue
        wording.schema_error(error)


@cache
def _schema_text() -> str:
    return (resources.files("retention") / "schemas" / "policy.schema.json").read_text("utf-8")


def _is_integer(_checker: object, instance: object) -> bool:
    # JSON Schema counts 3.0 as an integer and Python counts True; a policy counts neither.
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
    cls = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, type_checker=checker
    )
    return cls(policy_schema())  # type: ignore[no-any-return]


def _schema_of(error: ValidationError) -> Mapping[str, Any]:
    return error.schema if isinstance(error.schema, Mapping) else {}


def _limit_of(error: ValidationError) -> Any:
    """The failing keyword's value in the schema (`minimum`'s number, `required`'s list...)."""
    value: Any = error.validator_value
    return value


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [str(x) for x in t]
    return []


def _join_or(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _kind(value: Any) -> str:
    """What a scalar the tree holds is called in a message."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, date):
        return "date"
    if isinstance(value, str):
        return "string"
    return type(value).__name__  # pragma: no cover - the tree holds only the types above


class _Wording:
    """Turns jsonschema's errors into located messages; the nodes tell what YAML read."""

    def __init__(self, document: Document, report: Report) -> None:
        self.document = document
        self.report = report

    def schema_error(self, error: ValidationError) -> None:
        path: PathKey = tuple(error.absolute_path)
        kind = error.validator
        if kind in ("oneOf", "anyOf") and error.context:
            self.alternatives(error, path)
        elif kind == "additionalProperties":
            self.unknown_keys(error, path)
        elif kind == "required":
            self.missing_key(error, path)
        elif kind == "type":
            self.type_error(path, error.instance, _types(_schema_of(error)))
        else:
            message, hint = self.describe(error, path)
            self.report.error(path, None, message, hint)

    def alternatives(self, error: ValidationError, path: PathKey) -> None:
        """`oneOf`/`anyOf`: report the best error of the branches whose type fits the value;
        when no branch's type fits, say which types would."""
        branches: list[Mapping[str, Any]] = list(_limit_of(error))
        validator = _validator()
        fitting = {
            i
            for i, branch in enumerate(branches)
            if any(validator.is_type(error.instance, t) for t in _types(branch))
        }
        candidates = [e for e in error.context or () if e.relative_schema_path[0] in fitting]
        best = best_match(candidates) if candidates else None
        if best is not None:
            self.schema_error(best)
            return
        expected = [t for branch in branches for t in _types(branch)]
        self.type_error(path, error.instance, expected)

    def what(self, path: PathKey, value: Any) -> str:
        """'the integer `5`', 'a list', ... — never the text of a secret."""
        if isinstance(value, dict):
            return "a mapping"
        if isinstance(value, list):
            return "a list"
        node = self.document.node(path)
        text = node.value if isinstance(node, ScalarNode) else yaml_value(value)
        secret = path in SECRET_PATHS
        if value is None:
            return "nothing" if text == "" else ("null" if secret else f"null (`{text}`)")
        kind = _kind(value)
        if secret:
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        return f"the {kind} `{short(str(text))}`"

    def type_error(self, path: PathKey, value: Any, expected: Sequence[str]) -> None:
        name = path[-1] if path else None
        if name == "keep":
            self.report.error(path, None, _KEEP_SHAPE + self.what(path, value))
        elif name in _DURATION_KEYS:
            suffix, sample = ("d", "30d") if name == "newer_than" else ("s", "120s")
            number = isinstance(value, int) and not isinstance(value, bool)
            unit = f"{value}{suffix}" if number else sample
            self.report.error(
                path,
                None,
                f"expected a duration such as {sample}, got {self.what(path, value)}",
                f"write a whole number and a unit: {unit} (s m h d w)",
            )
        elif name == "max_deletions":
            self.report.error(path, None, _MAX_DELETIONS_SHAPE + self.what(path, value))
        elif not path and not isinstance(value, dict):
            self.report.error(
                path,
                None,
                f"a policy must be a mapping with `version`, `registry` and `rules`, got "
                f"{self.what(path, value)}",
            )
        elif not self.retyped(path, value, expected):
            self.wrong_type(path, value, expected)

    def retyped(self, path: PathKey, value: Any, expected: Sequence[str]) -> bool:
        """Report a string that YAML 1.1 turned into something else (1.10 → 1.1, on → true,
        012 → 10, 12:30 → 750); False when that is not what happened."""
        node = self.document.node(path)
        if not (
            "string" in expected
            and isinstance(node, ScalarNode)
            and node.tag in SCALARS
            and node.value != ""
            and not isinstance(value, str)
        ):
            return False
        secret = path in SECRET_PATHS
        shown = "the value" if secret else f"`{short(node.value)}`"
        reading = "" if secret else f" {yaml_value(value)}"
        kind = SCALARS[node.tag].split(" ")[-1]
        as_what = "null" if kind == "null" else f"the {kind}{reading}"
        self.report.error(
            path,
            None,
            f"expected a string, but YAML reads {shown} as {as_what}",
            "quote it" if secret else f"quote it: {quote(node.value)}",
        )
        return True

    def wrong_type(self, path: PathKey, value: Any, expected: Sequence[str]) -> None:
        node = self.document.node(path)
        wants = _join_or(list(dict.fromkeys(_TYPE_NAMES.get(t, t) for t in expected)))
        hint = None
        quoted = isinstance(node, ScalarNode) and node.style in ("'", '"')
        if (
            quoted
            and isinstance(value, str)
            and (
                ("integer" in expected and re.fullmatch(r"-?[0-9]+", value))
                or ("boolean" in expected and value.lower() in _QUOTE_WORDS)
            )
        ):
            hint = "remove the quotes"
        self.report.error(path, None, f"expected {wants}, got {self.what(path, value)}", hint)

    def unknown_keys(self, error: ValidationError, path: PathKey) -> None:
        known = list(_schema_of(error).get("properties", {}))
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in instance:
            if key in known:
                continue
            hint = did_you_mean(key, known) or (
                "expected one of: " + ", ".join(f"`{k}`" for k in known)
            )
            key_path = (*path, key)
            where = self.document.locs.get(key_path)
            self.report.error(
                key_path,
                where.key_pos if where else None,
                f"unknown key `{short(key, 40)}`",
                hint,
            )

    def missing_key(self, error: ValidationError, path: PathKey) -> None:
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in _limit_of(error):
            if key in instance:
                continue
            if not path:
                where: tuple[int, int] | None = (1, 1)
            else:
                where = self.document.position(path, key=True)
            self.report.error(path, where, f"missing required key `{key}`", _MISSING_HINTS.get(key))

    def describe(self, error: ValidationError, path: PathKey) -> tuple[str, str | None]:
        """The message and hint of a keyword other than a type, a choice or a key."""
        kind = error.validator
        value = error.instance
        limit = _limit_of(error)
        name = path[-1] if path else "$"
        shown = self.what(path, value)
        if kind == "const":
            return _const(name, value, limit, shown)
        if kind == "enum":
            choices = ", ".join(f"`{c}`" for c in limit)
            return f"expected one of {choices}, got {shown}", did_you_mean(
                str(value), [str(c) for c in limit]
            )
        if kind == "minimum":
            return f"must be at least {limit}, got {value}", None
        if kind == "maximum":
            return f"must be at most {limit}, got {value}", None
        if kind == "minItems":
            hint = {
                "rules": "a policy needs at least one rule",
                "command": "the program to run and its arguments",
            }.get(str(name))
            return "must not be an empty list", hint
        if kind == "minLength":
            return "must not be empty", None
        if kind == "maxLength":
            return f"is longer than {limit} characters", None
        if kind == "minProperties" and name == "keep":
            return (
                "`keep` needs `last`, `newer_than`, or both",
                "or write `keep: all`",
            )
        if kind == "pattern":
            return _pattern(name, value, limit, shown)
        return error.message, None  # pragma: no cover - every keyword the schema uses is above


def _const(name: str | int, value: Any, limit: Any, shown: str) -> tuple[str, str | None]:
    if name == "version":
        return (
            f"unsupported policy version `{value}`",
            "this version of retention reads `version: 1`",
        )
    if name == "keep":
        return _KEEP_SHAPE + shown, did_you_mean(str(value), ["all"])
    return f"expected {json.dumps(limit)}, got {shown}", None


def _pattern(name: str | int, value: Any, limit: Any, shown: str) -> tuple[str, str | None]:
    if name in _DURATION_KEYS:
        return f"{shown} is not a duration", (
            "a whole number above 0 and a unit, e.g. 30d (s m h d w)"
        )
    if name == "max_deletions":
        text = str(value)
        if text.endswith("%"):
            return f"{shown} is not a percentage from 0% to 100%", None
        hint = None
        if text.strip().isdigit():
            hint = "remove the quotes for a number of images, or add % for a percentage"
        return _MAX_DELETIONS_SHAPE + shown, hint
    if name == "name":
        return "a rule name must not contain control characters or line breaks", None
    return f"{shown} does not match the pattern `{limit}`", None
