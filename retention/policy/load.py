"""Policy loader: bytes → YAML nodes with marks → `${VAR}` from an `env` argument → JSON Schema →
semantic checks → a frozen `Policy`, collecting every problem as a located `Diagnostic`.

Never reads `os.environ` (the caller passes `env`), never contacts a registry, never prints.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import re2
import yaml
from croniter import CroniterError, croniter
from jsonschema.exceptions import ValidationError, best_match
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from retention.errors import Diagnostic, PolicyError
from retention.policy.model import (
    Auth,
    Gc,
    Keep,
    Match,
    MaxDeletions,
    Pattern,
    Policy,
    RegistryConfig,
    Rule,
    Schedule,
    Settings,
    Timeouts,
    Tls,
)

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

# Hard limits: a policy is a few KiB; anything beyond these is a mistake or an attack, and must
# fail fast instead of exhausting memory or time (a scheduled run must never hang on its input).
MAX_BYTES = 1024 * 1024  # file size
MAX_DEPTH = 64  # nesting of mappings and lists (a policy needs 5)
MAX_ALIASES = 256  # `*alias` references in the document
MAX_VALUES = 100_000  # values after alias expansion ("billion laughs" stops here)

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_NULL = "tag:yaml.org,2002:null"
_SCALARS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}

_PATTERN_LISTS = ("repositories", "exclude_repositories", "tags", "exclude_tags")
# Keys whose value is a duration (`newer_than`, `settings.timeouts.*`): one wording for them all.
_DURATION_KEYS = frozenset({"newer_than", "connect", "read", "request", "run"})
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Patterns whose whole-name match selects every tag or repository name (names are never empty
# and never contain a newline), used to find rules that select everything.
_MATCH_ALL = frozenset({".*", ".+", "(.*)", "(.+)", "^.*$", "^.+$"})
_SECRET_PATHS = frozenset({("registry", "auth", "password")})
_QUOTE_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~"})

PathKey = tuple[str | int, ...]


# --------------------------------------------------------------------------------------------
# Public API


def policy_schema() -> dict[str, Any]:
    """The policy JSON Schema (2020-12), read from the package data shipped in the wheel."""
    return json.loads(_schema_text())  # type: ignore[no-any-return]


@cache
def _schema_text() -> str:
    return (resources.files("retention") / "schemas" / "policy.schema.json").read_text("utf-8")


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
    check = _Check(name, env=env, require_env=require_env)
    policy = check.run(data)
    return policy, check.sorted_diagnostics()


def compile_pattern(source: str) -> Pattern:
    """Compile an RE2 pattern for whole-name matching; raises `re2.error` with RE2's reason.

    RE2 logs compile errors from C++ straight to fd 2 unless `log_errors` is off, so it is off.
    """
    options = re2.Options()
    options.log_errors = False
    return Pattern(source=source, compiled=re2.compile(source, options))


# --------------------------------------------------------------------------------------------
# Helpers


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


def render_path(path: Sequence[str | int]) -> str:
    """`("rules", 0, "keep")` → `$.rules[0].keep`."""
    out = "$"
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}"
        else:
            out += "[" + json.dumps(part, ensure_ascii=False) + "]"
    return out


def _quote(text: str) -> str:
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False)


def _short(text: str, limit: int = 60) -> str:
    """`text` for a message: control characters escaped (no terminal escapes), long text cut."""
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _yaml_value(value: object) -> str:
    """A value as YAML would write it, for 'YAML reads `on` as the boolean true'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date):
        return value.isoformat()
    return repr(value) if isinstance(value, float) else str(value)


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def parse_duration(text: str) -> timedelta:
    """`30d` → 30 days (units s m h d w); the schema has already checked the shape."""
    number, unit = int(text[:-1]), text[-1]
    return timedelta(**{_DURATION_UNITS[unit]: number})


def _timeouts(data: Mapping[str, Any]) -> Timeouts:
    """`settings.timeouts` (already checked by the schema) as values, defaults filled in."""
    default = Timeouts()
    run = data.get("run")
    return Timeouts(
        connect=parse_duration(data["connect"]) if "connect" in data else default.connect,
        read=parse_duration(data["read"]) if "read" in data else default.read,
        request=parse_duration(data["request"]) if "request" in data else default.request,
        run=parse_duration(run) if run is not None else None,
    )


@dataclass(frozen=True, slots=True)
class _Loc:
    """Where a value sits: its node, and the key node when it is a mapping member."""

    node: Node
    key: Node | None

    @property
    def value_pos(self) -> tuple[int, int]:
        return self.node.start_mark.line + 1, self.node.start_mark.column + 1

    @property
    def key_pos(self) -> tuple[int, int]:
        target = self.key if self.key is not None else self.node
        return target.start_mark.line + 1, target.start_mark.column + 1


class _Limit(Exception):
    """A hard limit was hit while reading YAML; reported as one diagnostic at `mark`."""

    def __init__(self, mark: yaml.Mark | None, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message
        self.hint = hint


class _Loader(Reader, Scanner, Parser, Composer, SafeConstructor, Resolver):
    """PyYAML's pure-Python safe loader, composing nodes only, with depth and alias limits.

    Pure Python on purpose: libyaml's composer recurses in C, and the limits must apply first.
    """

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.depth = 0
        self.aliases = 0

    def next_mark(self) -> yaml.Mark:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        mark: yaml.Mark = event.start_mark
        return mark

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Limit(
                    self.next_mark(),
                    f"more than {MAX_ALIASES} aliases (*name) in one policy",
                    "a policy needs few; repeat the values instead",
                )
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Limit(self.next_mark(), _too_deep())
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _too_deep() -> str:
    return f"nesting deeper than {MAX_DEPTH} levels"


class _Tree:
    """Turns composed nodes into plain values (expanding aliases, within limits), records where
    every value sits, and reports duplicate keys, non-string keys and unsupported tags."""

    def __init__(self, check: _Check, loader: _Loader) -> None:
        self.check = check
        self.loader = loader
        self.locs: dict[PathKey, _Loc] = {}
        self.count = 0
        self.active: set[int] = set()

    def value(self, node: Node, path: PathKey, key: Node | None, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise _Limit(
                node.start_mark,
                f"the document expands to more than {MAX_VALUES} values",
                "aliases that expand exponentially (a 'billion laughs' document) are refused",
            )
        if depth > MAX_DEPTH:
            raise _Limit(node.start_mark, _too_deep())
        self.locs[path] = _Loc(node, key)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            raise _Limit(node.start_mark, "an alias refers to a value that contains it")
        self.active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                if node.tag != _MAP:
                    self.unsupported_tag(node, path)
                return self.mapping(node, path, depth)
            if node.tag != _SEQ:
                self.unsupported_tag(node, path)
            return [
                self.value(item, (*path, i), None, depth + 1) for i, item in enumerate(node.value)
            ]
        finally:
            self.active.discard(id(node))

    def unsupported_tag(self, node: Node, path: PathKey) -> None:
        self.check.bad_paths.add(path)
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        self.check.error(
            path,
            node,
            f"unsupported YAML tag `{_short(tag, 40)}`",
            "a policy uses plain strings, numbers, booleans, lists and mappings",
        )

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        if node.tag == _STR:
            return node.value
        if node.tag in _SCALARS:
            try:
                return self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError):
                what = _SCALARS[node.tag]
                self.check.bad_paths.add(path)
                self.check.error(path, node, f"YAML cannot read `{_short(node.value)}` as {what}")
                return node.value
        self.unsupported_tag(node, path)
        return node.value

    def mapping(self, node: MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        merges: list[tuple[Node, Node]] = []
        explicit: list[tuple[str, Node, Node]] = []
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.append((key_node, value_node))
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            if key in first:
                line = first[key].start_mark.line + 1
                self.check.error(
                    (*path, key),
                    key_node,
                    f"duplicate key `{_short(key, 40)}` (first at line {line})",
                    "YAML keeps only one of them; remove or rename the other",
                )
                continue
            first[key] = key_node
            explicit.append((key, key_node, value_node))
        result: dict[str, Any] = {}
        # `<<: *base` merge keys: explicit keys win, then earlier merged mappings over later ones.
        for merged in reversed(self.merge_sources(merges, path)):
            for key_node, value_node in merged.value:
                key = self.key(key_node, path)
                if key is not None and key_node.tag != _MERGE:
                    result[key] = self.value(value_node, (*path, key), key_node, depth + 1)
        for key, key_node, value_node in explicit:
            result[key] = self.value(value_node, (*path, key), key_node, depth + 1)
        return result

    def merge_sources(self, merges: list[tuple[Node, Node]], path: PathKey) -> list[MappingNode]:
        out: list[MappingNode] = []
        for key_node, node in merges:
            items = node.value if isinstance(node, SequenceNode) else [node]
            mappings = [item for item in items if isinstance(item, MappingNode)]
            if len(mappings) == len(items):
                out.extend(mappings)
            else:
                self.check.error(
                    (*path, "<<"), key_node, "a merge key `<<` needs a mapping or a list of them"
                )
        return out

    def key(self, node: Node, path: PathKey) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            text: str = node.value
            return text
        if isinstance(node, ScalarNode) and node.tag in _SCALARS:
            try:
                value = self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError):
                value = node.value
            self.check.error(
                path,
                node,
                f"a key must be a string, but YAML reads `{_short(node.value)}` as "
                f"{_SCALARS[node.tag]} ({_yaml_value(value)})",
                f"quote it: {_quote(node.value)}",
            )
            return None
        self.check.error(path, node, "a key must be a string")
        return None


# --------------------------------------------------------------------------------------------
# Schema validation


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


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


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


# --------------------------------------------------------------------------------------------
# The check of one file


class _Check:
    def __init__(self, name: str, *, env: Mapping[str, str], require_env: bool) -> None:
        self.name = name
        self.env = env
        self.require_env = require_env
        self.diagnostics: list[Diagnostic] = []
        self.locs: dict[PathKey, _Loc] = {}
        self.unresolved: set[PathKey] = set()  # registry strings with unset ${VAR}, validate mode
        self.patterns: dict[PathKey, Pattern] = {}
        self.bad_paths: set[PathKey] = set()  # values YAML could not read; already reported
        self.data: Any = None

    # -- reporting ---------------------------------------------------------------------------

    def sorted_diagnostics(self) -> list[Diagnostic]:
        unique = list(dict.fromkeys(self.diagnostics))
        return sorted(unique, key=lambda d: (d.line, d.column))

    def _add(
        self,
        severity: str,
        path: PathKey,
        where: Node | yaml.Mark | tuple[int, int] | None,
        message: str,
        hint: str | None,
    ) -> None:
        if isinstance(where, Node):
            line, column = where.start_mark.line + 1, where.start_mark.column + 1
        elif isinstance(where, yaml.Mark):
            line, column = where.line + 1, where.column + 1
        elif isinstance(where, tuple):
            line, column = where
        else:
            line, column = self.position(path)
        self.diagnostics.append(
            Diagnostic(
                file=self.name,
                line=line,
                column=column,
                path=render_path(path),
                message=message,
                hint=hint,
                severity="warning" if severity == "warning" else "error",
            )
        )

    def error(
        self,
        path: PathKey,
        where: Node | yaml.Mark | tuple[int, int] | None,
        message: str,
        hint: str | None = None,
    ) -> None:
        self._add("error", path, where, message, hint)

    def warning(
        self,
        path: PathKey,
        where: Node | yaml.Mark | tuple[int, int] | None,
        message: str,
        hint: str | None = None,
    ) -> None:
        self._add("warning", path, where, message, hint)

    def loc(self, path: PathKey) -> _Loc | None:
        """The location of `path`, or of its nearest located ancestor."""
        while True:
            if path in self.locs:
                return self.locs[path]
            if not path:
                return None
            path = path[:-1]

    def position(self, path: PathKey, *, key: bool = False) -> tuple[int, int]:
        loc = self.loc(path)
        if loc is None:
            return (1, 1)
        if key and path in self.locs:
            return loc.key_pos
        return loc.value_pos

    def node(self, path: PathKey) -> Node | None:
        loc = self.locs.get(path)
        return loc.node if loc else None

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)

    # -- pipeline ----------------------------------------------------------------------------

    def run(self, data: bytes) -> Policy | None:
        text = self.decode(data)
        if text is None:
            return None
        if not self.parse(text):
            return None
        self.expand_registry()
        self.validate_schema()
        self.semantic_checks()
        if self.has_errors:
            return None
        policy = self.build(hashlib.sha256(data).hexdigest())
        log.debug("policy %s: %d rule(s), sha256 %s", self.name, len(policy.rules), policy.sha256)
        return policy

    def decode(self, data: bytes) -> str | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            start = exc.start
            line_start = data.rfind(b"\n", 0, start) + 1
            line = data.count(b"\n", 0, start) + 1
            column = len(data[line_start:start].decode("utf-8", "replace")) + 1
            self.error(
                (),
                (line, column),
                f"the file is not valid UTF-8 (byte 0x{data[start]:02x})",
                "save the policy as UTF-8 text",
            )
            return None
        return text.removeprefix("\ufeff")

    def parse(self, text: str) -> bool:
        try:
            loader = _Loader(text)
        except ReaderError as exc:
            self.reader_error(text, exc)
            return False
        try:
            root = loader.get_single_node()
            if root is None or (
                isinstance(root, ScalarNode) and root.tag == _NULL and root.value == ""
            ):
                self.error(
                    (),
                    (1, 1),
                    "the policy is empty",
                    "start with `version: 1`, then `registry:` and `rules:`",
                )
                return False
            tree = _Tree(self, loader)
            self.locs = tree.locs
            self.data = tree.value(root, (), None, 1)
        except ReaderError as exc:
            self.reader_error(text, exc)
            return False
        except _Limit as exc:
            self.error((), exc.mark, exc.message, exc.hint)
            return False
        except yaml.MarkedYAMLError as exc:
            self.yaml_error(exc)
            return False
        except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises only the two above
            self.error((), (1, 1), f"invalid YAML: {exc}")
            return False
        finally:
            loader.dispose()
        return True

    def reader_error(self, text: str, exc: ReaderError) -> None:
        position = max(0, min(exc.position, len(text)))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        self.error(
            (),
            (line, column),
            f"the file contains the control character U+{ord(char):04X}, which YAML does not allow",
            "is this a binary file?",
        )

    def yaml_error(self, exc: yaml.MarkedYAMLError) -> None:
        mark = exc.problem_mark or exc.context_mark
        message = f"invalid YAML: {exc.problem or exc.context or 'cannot parse'}"
        if exc.problem == "second occurrence" and exc.context and exc.context_mark:
            # PyYAML words a duplicate anchor as context "found duplicate anchor 'x'; first
            # occurrence", problem "second occurrence"
            first = exc.context_mark
            what = exc.context.split(";")[0]
            message = f"invalid YAML: {what} (first at line {first.line + 1}, column "
            message += f"{first.column + 1})"
        elif exc.context and exc.problem and exc.problem.startswith("but "):
            message = f"invalid YAML: {exc.context}, {exc.problem}"
        elif exc.context and exc.problem:
            cm = exc.context_mark
            if cm is not None and (
                mark is None or (cm.line, cm.column) != (mark.line, mark.column)
            ):
                message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
            else:
                message += f" ({exc.context})"
        self.error((), mark, message)

    # -- ${VAR} ------------------------------------------------------------------------------

    def expand_registry(self) -> None:
        """Expand `${VAR}` in every string under `registry:`; report `${` elsewhere."""
        if not isinstance(self.data, dict):
            return
        for key, value in self.data.items():
            if key == "registry":
                self.data[key] = self.expand_tree(value, ("registry",))
            else:
                self.literal_vars(value, (key,))

    def expand_tree(self, value: Any, path: PathKey) -> Any:
        if isinstance(value, dict):
            return {k: self.expand_tree(v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand_tree(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self.expand(value, path)
        return value

    def expand(self, text: str, path: PathKey) -> str:
        out: list[str] = []
        i = 0
        unset: list[str] = []
        while i < len(text):
            if text.startswith("$${", i):  # escape: `$${` is a literal `${`
                out.append("${")
                i += 3
            elif text.startswith("${", i):
                end = text.find("}", i + 2)
                name = text[i + 2 : end] if end >= 0 else ""
                if end < 0 or not _VAR_NAME.fullmatch(name):
                    self.malformed_var(text, i, path)
                    return text
                if name in self.env:
                    out.append(self.env[name])
                else:
                    unset.append(name)
                    out.append(text[i : end + 1])
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        for name in dict.fromkeys(unset):
            self.unset_var(name, path)
        if unset:
            self.unresolved.add(path)
        return "".join(out)

    def malformed_var(self, text: str, at: int, path: PathKey) -> None:
        end = text.find("}", at + 2)
        shown = (
            "the value"
            if path in _SECRET_PATHS
            else f"`{_short(text[at : end + 1 if end >= 0 else None], 40)}`"
        )
        inner = text[at + 2 : end] if end >= 0 else ""
        hint = "write ${NAME} (letters, digits and _), or $${ for a literal ${"
        if ":-" in inner or ":?" in inner or "-" in inner:
            hint = "defaults such as ${VAR:-x} are not supported; " + hint
        reason = "has no closing }" if end < 0 else "is not a variable reference"
        self.error(path, None, f"malformed ${{VAR}}: {shown} {reason}", hint)

    def unset_var(self, name: str, path: PathKey) -> None:
        message = f"environment variable `{name}` is not set"
        if self.require_env:
            self.error(path, None, message, "set it before running plan, apply or schedule")
        else:
            self.warning(
                path,
                None,
                message,
                "validate only warns; plan, apply and schedule fail until it is set",
            )

    def literal_vars(self, value: Any, path: PathKey) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self.literal_vars(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self.literal_vars(v, (*path, i))
        elif isinstance(value, str) and "${" in value:
            self.warning(
                path,
                None,
                "`${...}` is expanded only inside `registry:`; here it is literal text",
            )

    # -- schema ------------------------------------------------------------------------------

    def validate_schema(self) -> None:
        errors = list(_validator().iter_errors(self.data))
        # A value of the wrong type fails its other keywords too (`const`, `enum`...): report the
        # type only. A value YAML could not read has been reported already.
        typed = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
        for error in errors:
            path = tuple(error.absolute_path)
            if any(path[:n] in self.bad_paths for n in range(len(path) + 1)):
                continue
            if path in typed and error.validator != "type":
                continue
            self.schema_error(error)

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
            self.error(path, None, message, hint)

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
        node = self.node(path)
        text = node.value if isinstance(node, ScalarNode) else _yaml_value(value)
        secret = path in _SECRET_PATHS
        if value is None:
            return "nothing" if text == "" else ("null" if secret else f"null (`{text}`)")
        if isinstance(value, bool):
            kind = "boolean"
        elif isinstance(value, int):
            kind = "integer"
        elif isinstance(value, float):
            kind = "number"
        elif isinstance(value, date):
            kind = "date"
        elif isinstance(value, str):
            kind = "string"
        else:  # pragma: no cover - the tree holds only the types above
            kind = type(value).__name__
        if secret:
            return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        return f"the {kind} `{_short(str(text))}`"

    def type_error(self, path: PathKey, value: Any, expected: Sequence[str]) -> None:
        node = self.node(path)
        name = path[-1] if path else None
        secret = path in _SECRET_PATHS
        wants = _join_or(list(dict.fromkeys(_TYPE_NAMES.get(t, t) for t in expected)))
        if name == "keep":
            message = "`keep` must be `all` or a mapping with `last` and/or `newer_than`, got "
            self.error(path, None, message + self.what(path, value))
            return
        if name in _DURATION_KEYS:
            suffix, sample = ("d", "30d") if name == "newer_than" else ("s", "120s")
            number = isinstance(value, int) and not isinstance(value, bool)
            unit = f"{value}{suffix}" if number else sample
            self.error(
                path,
                None,
                f"expected a duration such as {sample}, got {self.what(path, value)}",
                f"write a whole number and a unit: {unit} (s m h d w)",
            )
            return
        if name == "max_deletions":
            self.error(
                path,
                None,
                'expected a non-negative integer or a percentage such as "25%", got '
                + self.what(path, value),
            )
            return
        if not path and not isinstance(value, dict):
            self.error(
                path,
                None,
                f"a policy must be a mapping with `version`, `registry` and `rules`, got "
                f"{self.what(path, value)}",
            )
            return
        if (
            "string" in expected
            and isinstance(node, ScalarNode)
            and node.tag in _SCALARS
            and node.value != ""
            and not isinstance(value, str)
        ):
            # YAML 1.1 turned text into something else: 1.10 → 1.1, on → true, 012 → 10, 12:30 → 750
            shown = "the value" if secret else f"`{_short(node.value)}`"
            reading = "" if secret else f" {_yaml_value(value)}"
            kind = _SCALARS[node.tag].split(" ")[-1]
            as_what = "null" if kind == "null" else f"the {kind}{reading}"
            self.error(
                path,
                None,
                f"expected a string, but YAML reads {shown} as {as_what}",
                "quote it" if secret else f"quote it: {_quote(node.value)}",
            )
            return
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
        self.error(path, None, f"expected {wants}, got {self.what(path, value)}", hint)

    def unknown_keys(self, error: ValidationError, path: PathKey) -> None:
        known = list(_schema_of(error).get("properties", {}))
        instance = error.instance if isinstance(error.instance, dict) else {}
        for key in instance:
            if key in known:
                continue
            hint = _did_you_mean(key, known) or (
                "expected one of: " + ", ".join(f"`{k}`" for k in known)
            )
            key_path = (*path, key)
            where = self.locs.get(key_path)
            self.error(
                key_path,
                where.key_pos if where else None,
                f"unknown key `{_short(key, 40)}`",
                hint,
            )

    def missing_key(self, error: ValidationError, path: PathKey) -> None:
        instance = error.instance if isinstance(error.instance, dict) else {}
        hints = {
            "version": "add `version: 1` as the first line",
            "match": "`match: {}` selects every tag of every repository",
            "keep": "`keep: all`, or `keep: {last: 5, newer_than: 30d}`",
            "url": "e.g. `url: https://registry.example.com`",
            "rules": "a policy needs at least one rule",
            "command": "e.g. `command: [docker-registry, garbage-collect, CONFIG.yml]`",
        }
        for key in _limit_of(error):
            if key in instance:
                continue
            if not path:
                where: tuple[int, int] | None = (1, 1)
            else:
                where = self.position(path, key=True)
            self.error(path, where, f"missing required key `{key}`", hints.get(key))

    def describe(self, error: ValidationError, path: PathKey) -> tuple[str, str | None]:
        kind = error.validator
        value = error.instance
        limit = _limit_of(error)
        name = path[-1] if path else "$"
        shown = self.what(path, value)
        if kind == "const":
            if name == "version":
                return (
                    f"unsupported policy version `{value}`",
                    "this version of retention reads `version: 1`",
                )
            if name == "keep":
                return (
                    "`keep` must be `all` or a mapping with `last` and/or `newer_than`, "
                    f"got {shown}",
                    _did_you_mean(str(value), ["all"]),
                )
            return f"expected {json.dumps(limit)}, got {shown}", None
        if kind == "enum":
            choices = ", ".join(f"`{c}`" for c in limit)
            return f"expected one of {choices}, got {shown}", _did_you_mean(
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
                return (
                    f'expected a non-negative integer or a percentage such as "25%", got {shown}',
                    hint,
                )
            if name == "name":
                return "a rule name must not contain control characters or line breaks", None
            return f"{shown} does not match the pattern `{limit}`", None
        return error.message, None  # pragma: no cover - every keyword the schema uses is above

    # -- semantic checks ---------------------------------------------------------------------

    def semantic_checks(self) -> None:
        data = self.data if isinstance(self.data, dict) else {}
        self.check_patterns(data)
        self.check_registry(data.get("registry"))
        self.check_schedule(data.get("schedule"))
        self.check_rules(data.get("rules"))

    def check_patterns(self, data: Mapping[str, Any]) -> None:
        protect = data.get("protect")
        if isinstance(protect, dict):
            self.compile_list(protect.get("tags"), ("protect", "tags"))
        rules = data.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            match = rule.get("match") if isinstance(rule, dict) else None
            if isinstance(match, dict):
                for key in _PATTERN_LISTS:
                    self.compile_list(match.get(key), ("rules", i, "match", key))

    def compile_list(self, items: Any, path: PathKey) -> None:
        for i, source in enumerate(items if isinstance(items, list) else []):
            if isinstance(source, str) and source:
                self.compile((*path, i), source)

    def compile(self, path: PathKey, source: str) -> None:
        try:
            self.patterns[path] = compile_pattern(source)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid pattern"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            hint = None
            if "(?=" in reason or "(?!" in reason:
                hint = "RE2 has no look-ahead (it guarantees linear time); use exclude_tags"
            elif "(?<=" in reason or "(?<!" in reason:
                hint = "RE2 has no look-behind (it guarantees linear time); use exclude_tags"
            elif re.search(r"invalid escape sequence: \\[1-9]", reason) or "(?P=" in source:
                hint = "RE2 has no back-references (it guarantees linear time)"
            self.error(path, None, f"invalid RE2 pattern `{_short(source)}`: {reason}", hint)

    def check_registry(self, registry: Any) -> None:
        if not isinstance(registry, dict):
            return
        url = registry.get("url")
        if isinstance(url, str) and url and ("registry", "url") not in self.unresolved:
            self.check_url(url)
        auth = registry.get("auth")
        if isinstance(auth, dict) and isinstance(auth.get("password"), str):
            node = self.node(("registry", "auth", "password"))
            written = node.value if isinstance(node, ScalarNode) else ""
            if written and "${" not in written:
                self.warning(
                    ("registry", "auth", "password"),
                    None,
                    "the password is written in the policy file",
                    "write `${REGISTRY_PASSWORD}` and set it in the environment",
                )

    def check_url(self, url: str) -> None:
        path: PathKey = ("registry", "url")
        example = "e.g. https://registry.example.com or http://127.0.0.1:5000"
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
        except ValueError:
            self.error(path, None, "the registry URL is malformed (bad port or brackets)", example)
            return
        if parts.scheme not in ("http", "https"):
            if "://" in url:
                message = (
                    f"the registry URL must use http or https, not `{_short(parts.scheme, 20)}`"
                )
            else:
                message = "the registry URL must start with https:// or http://"
            self.error(path, None, message, example)
            return
        if parts.username is not None or parts.password is not None:
            self.error(
                path,
                None,
                "the registry URL must not contain credentials (they would be written to plans "
                "and logs)",
                "move them to registry.auth as ${VAR} references",
            )
            return
        if not parts.hostname:
            self.error(path, None, "the registry URL has no host", example)
            return
        if parts.query or parts.fragment or url.endswith(("?", "#")):
            self.error(path, None, "the registry URL must not have a query or fragment", example)

    def check_schedule(self, schedule: Any) -> None:
        if not isinstance(schedule, dict):
            return
        cron = schedule.get("cron")
        if isinstance(cron, str) and cron.strip():
            self.check_cron(cron)
        tz = schedule.get("timezone")
        if isinstance(tz, str) and tz:
            self.check_timezone(tz)

    def check_cron(self, cron: str) -> None:
        path: PathKey = ("schedule", "cron")
        expr = cron.strip()
        hint = 'five fields: minute hour day-of-month month day-of-week, e.g. "30 3 * * *"'
        if expr.startswith("@"):
            if expr not in _CRON_ALIASES:
                self.error(
                    path,
                    None,
                    f"unknown cron shortcut `{_short(expr, 20)}`",
                    _did_you_mean(expr, _CRON_ALIASES) or "one of " + ", ".join(_CRON_ALIASES),
                )
            return
        fields = expr.split()
        if len(fields) != 5:
            self.error(
                path, None, f"a cron expression has 5 fields, this one has {len(fields)}", hint
            )
            return
        try:
            itr = croniter(expr, datetime(2000, 1, 1, tzinfo=UTC))
            itr.get_next(datetime)
        except CroniterError as exc:
            if type(exc).__name__ == "CroniterBadDateError":
                self.error(path, None, f"the cron expression `{_short(expr)}` never fires", hint)
            else:
                self.error(path, None, f"invalid cron expression `{_short(expr)}`: {exc}", hint)
        except (ValueError, KeyError, IndexError, OverflowError) as exc:
            self.error(path, None, f"invalid cron expression `{_short(expr)}`: {exc}", hint)

    def check_timezone(self, tz: str) -> None:
        if tz == "UTC":
            return
        try:
            zoneinfo.ZoneInfo(tz)
            return
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
        zones = _time_zones()
        by_lower = {z.lower(): z for z in zones}
        hint = None
        if tz.lower() in by_lower:
            hint = f"did you mean `{by_lower[tz.lower()]}`?"
        else:
            close = difflib.get_close_matches(tz.lower(), list(by_lower), n=1, cutoff=0.75)
            hint = (
                f"did you mean `{by_lower[close[0]]}`?"
                if close
                else ("an IANA time zone name such as UTC or Europe/Berlin")
            )
        self.error(("schedule", "timezone"), None, f"unknown time zone `{_short(tz, 40)}`", hint)

    def check_rules(self, rules: Any) -> None:
        if not isinstance(rules, list):
            return
        names: dict[str, int] = {}
        # tag rules and untagged rules select disjoint things: each kind has its own catch-all
        catch_alls: dict[bool, tuple[int, str]] = {}
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict):
                continue
            name = rule.get("name")
            label = f"`{_short(name, 40)}`" if isinstance(name, str) else f"#{i + 1}"
            match = rule.get("match")
            untagged = isinstance(match, dict) and match.get("untagged") is True
            if untagged and isinstance(match, dict):
                self.check_untagged_rule(i, label, match)
            if isinstance(name, str):
                if name in names:
                    first = names[name]
                    line = self.position(("rules", first))[0]
                    self.error(
                        ("rules", i, "name"),
                        None,
                        f"duplicate rule name `{_short(name, 40)}` (first at line {line})",
                        "rule names must be unique; plans and explain name the rule",
                    )
                else:
                    names[name] = i
            catch_all = catch_alls.get(untagged)
            if catch_all is not None:
                other_index, other_label = catch_all
                line = self.position(("rules", other_index))[0]
                what = "an untagged manifest" if untagged else "a tag"
                every = "every untagged manifest" if untagged else "everything"
                self.error(
                    ("rules", i),
                    None,
                    f"rule {label} can never own {what}: rule {other_label} (line {line}) "
                    f"before it selects {every}",
                    f"move it above rule {other_label}, or narrow the match of rule {other_label}",
                )
            elif _selects_everything(match):
                catch_alls[untagged] = (i, label)
            keep = rule.get("keep")
            if (
                isinstance(keep, dict)
                and keep.get("last") == 0
                and not isinstance(keep.get("last"), bool)
                and "newer_than" not in keep
            ):
                self.warning(
                    ("rules", i, "keep", "last"),
                    None,
                    f"`last: 0` without `newer_than` deletes every image rule {label} owns",
                    "that is allowed; add `newer_than` to keep recent images",
                )

    def check_untagged_rule(self, i: int, label: str, match: Mapping[str, Any]) -> None:
        for key in ("tags", "exclude_tags"):
            if key in match:
                self.error(
                    ("rules", i, "match", key),
                    None,
                    f"rule {label} selects untagged manifests (`untagged: true`): `{key}` "
                    "cannot narrow it, untagged manifests have no tag",
                    f"remove `{key}`, or write a separate rule for tags",
                )
        registry = self.data.get("registry") if isinstance(self.data, dict) else None
        if isinstance(registry, dict) and "storage" not in registry:
            self.warning(
                ("rules", i, "match", "untagged"),
                None,
                f"rule {label} selects nothing unless `registry.storage` is set: the registry "
                "API lists tags only, and untagged manifests are seen in the storage",
                "set `registry.storage.filesystem` to the registry's storage root "
                "(see docs/policy.md)",
            )

    # -- building ----------------------------------------------------------------------------

    def build(self, sha256: str) -> Policy:
        data: dict[str, Any] = self.data
        registry = data["registry"]
        auth = registry.get("auth")
        tls = registry.get("tls", {})
        settings = data.get("settings", {})
        schedule = data.get("schedule")
        gc = data.get("gc")
        max_del = settings.get("max_deletions", 500)
        return Policy(
            registry=RegistryConfig(
                url=registry["url"],
                auth=Auth(auth["username"], auth["password"]) if auth else None,
                tls=Tls(verify=tls.get("verify", True), ca_file=tls.get("ca_file")),
                storage_path=registry.get("storage", {}).get("filesystem"),
            ),
            rules=tuple(self.build_rule(i, rule) for i, rule in enumerate(data["rules"])),
            protect_tags=self.pattern_tuple(("protect", "tags")),
            protect_digests=frozenset(data.get("protect", {}).get("digests", ())),
            settings=Settings(
                concurrency=settings.get("concurrency", 8),
                max_deletions=(
                    MaxDeletions(percent=float(max_del[:-1]))
                    if isinstance(max_del, str)
                    else MaxDeletions(count=max_del)
                ),
                unknown_age=settings.get("unknown_age", "keep"),
                timeouts=_timeouts(settings.get("timeouts", {})),
            ),
            schedule=(
                Schedule(cron=schedule["cron"].strip(), timezone=schedule.get("timezone", "UTC"))
                if schedule is not None
                else None
            ),
            gc=(
                Gc(command=tuple(gc["command"]), storage_path=gc.get("storage_path"))
                if gc is not None
                else None
            ),
            path=self.name,
            sha256=sha256,
            version=data["version"],
        )

    def pattern_tuple(self, path: PathKey) -> tuple[Pattern, ...]:
        out = []
        i = 0
        while (*path, i) in self.patterns:
            out.append(self.patterns[(*path, i)])
            i += 1
        return tuple(out)

    def build_rule(self, index: int, rule: Mapping[str, Any]) -> Rule:
        base: PathKey = ("rules", index, "match")
        keep_raw = rule["keep"]
        if keep_raw == "all":
            keep = Keep(all=True)
        else:
            text = keep_raw.get("newer_than")
            keep = Keep(
                last=keep_raw.get("last"),
                newer_than=parse_duration(text) if text is not None else None,
                newer_than_text=text,
            )
        match = Match(
            repositories=self.pattern_tuple((*base, "repositories")),
            exclude_repositories=self.pattern_tuple((*base, "exclude_repositories")),
            tags=self.pattern_tuple((*base, "tags")),
            exclude_tags=self.pattern_tuple((*base, "exclude_tags")),
            untagged=rule["match"].get("untagged", False) is True,
        )
        return Rule(
            name=rule["name"],
            match=match,
            keep=keep,
            line=self.position(("rules", index))[0],
        )


def _selects_everything(match: Any) -> bool:
    """A match selects everything when it has no exclude list and each include list is absent,
    empty, or holds a pattern that matches any name (`.*`, `.+`)."""
    if not isinstance(match, dict):
        return False
    if match.get("untagged") is True:  # tags/exclude_tags are an error there: repositories only
        match = {k: v for k, v in match.items() if k not in ("tags", "exclude_tags")}
    if match.get("exclude_repositories") or match.get("exclude_tags"):
        return False
    for key in ("repositories", "tags"):
        items = match.get(key)
        if items and not (
            isinstance(items, list)
            and _MATCH_ALL.intersection(x for x in items if isinstance(x, str))
        ):
            return False
    return True


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
