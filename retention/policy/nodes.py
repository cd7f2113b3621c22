"""PURE YAML with marks: policy bytes → UTF-8 text → composed YAML nodes → plain values, each
located by its node (`Document`), within hard limits; every problem goes to the `Report`.

Only YAML's core tags; never constructs Python objects beyond strings, numbers, booleans, dates,
lists and mappings (docs/decisions.md, "YAML").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from retention.policy.report import PathKey, Report, quote, short, yaml_value

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
# The scalar tags YAML 1.1 resolves plain text to, and how a message names each.
SCALARS = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}


@dataclass(frozen=True, slots=True)
class Loc:
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


@dataclass(frozen=True, slots=True)
class Document:
    """A policy read from YAML: its plain values, where each sits, and the paths of values YAML
    could not read (already reported, so the schema does not report them again)."""

    data: Any
    locs: dict[PathKey, Loc]
    bad_paths: frozenset[PathKey]

    def loc(self, path: PathKey) -> Loc | None:
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


def read_document(data: bytes, report: Report) -> Document | None:
    """The document in `data`, or None when it cannot be read (the reason is in `report`)."""
    text = _decode(data, report)
    if text is None:
        return None
    return _parse(text, report)


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

    def __init__(self, report: Report, loader: _Loader) -> None:
        self.report = report
        self.loader = loader
        self.locs: dict[PathKey, Loc] = {}
        self.bad_paths: set[PathKey] = set()
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
        self.locs[path] = Loc(node, key)
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
        self.bad_paths.add(path)
        tag = str(node.tag).replace("tag:yaml.org,2002:", "!!")
        self.report.error(
            path,
            node,
            f"unsupported YAML tag `{short(tag, 40)}`",
            "a policy uses plain strings, numbers, booleans, lists and mappings",
        )

    def scalar(self, node: ScalarNode, path: PathKey) -> Any:
        if node.tag == _STR:
            return node.value
        if node.tag in SCALARS:
            try:
                return self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError):
                what = SCALARS[node.tag]
                self.bad_paths.add(path)
                self.report.error(path, node, f"YAML cannot read `{short(node.value)}` as {what}")
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
                self.report.error(
                    (*path, key),
                    key_node,
                    f"duplicate key `{short(key, 40)}` (first at line {line})",
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
                self.report.error(
                    (*path, "<<"), key_node, "a merge key `<<` needs a mapping or a list of them"
                )
        return out

    def key(self, node: Node, path: PathKey) -> str | None:
        if isinstance(node, ScalarNode) and node.tag == _STR:
            text: str = node.value
            return text
        if isinstance(node, ScalarNode) and node.tag in SCALARS:
            try:
                value = self.loader.construct_object(node)
            except (yaml.YAMLError, ValueError, OverflowError):
                value = node.value
            self.report.error(
                path,
                node,
                f"a key must be a string, but YAML reads `{short(node.value)}` as "
                f"{SCALARS[node.tag]} ({yaml_value(value)})",
                f"quote it: {quote(node.value)}",
            )
            return None
        self.report.error(path, node, "a key must be a string")
        return None


def _decode(data: bytes, report: Report) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = data.rfind(b"\n", 0, start) + 1
        line = data.count(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode("utf-8", "replace")) + 1
        report.error(
            (),
            (line, column),
            f"the file is not valid UTF-8 (byte 0x{data[start]:02x})",
            "save the policy as UTF-8 text",
        )
        return None
    return text.removeprefix("\ufeff")


def _parse(text: str, report: Report) -> Document | None:
    try:
        loader = _Loader(text)
    except ReaderError as exc:
        _reader_error(text, exc, report)
        return None
    try:
        root = loader.get_single_node()
        if root is None or (
            isinstance(root, ScalarNode) and root.tag == _NULL and root.value == ""
        ):
            report.error(
                (),
                (1, 1),
                "the policy is empty",
                "start with `version: 1`, then `registry:` and `rules:`",
            )
            return None
        tree = _Tree(report, loader)
        data = tree.value(root, (), None, 1)
    except ReaderError as exc:
        _reader_error(text, exc, report)
        return None
    except _Limit as exc:
        report.error((), exc.mark, exc.message, exc.hint)
        return None
    except yaml.MarkedYAMLError as exc:
        _yaml_error(exc, report)
        return None
    except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises only the two above
        report.error((), (1, 1), f"invalid YAML: {exc}")
        return None
    finally:
        loader.dispose()
    return Document(data=data, locs=tree.locs, bad_paths=frozenset(tree.bad_paths))


def _reader_error(text: str, exc: ReaderError, report: Report) -> None:
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    report.error(
        (),
        (line, column),
        f"the file contains the control character U+{ord(char):04X}, which YAML does not allow",
        "is this a binary file?",
    )


def _yaml_error(exc: yaml.MarkedYAMLError, report: Report) -> None:
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
        if cm is not None and (mark is None or (cm.line, cm.column) != (mark.line, mark.column)):
            message += f" ({exc.context} at line {cm.line + 1}, column {cm.column + 1})"
        else:
            message += f" ({exc.context})"
    report.error((), mark, message)
