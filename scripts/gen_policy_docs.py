"""Generate docs/policy.md, the policy file reference, from schemas/policy.schema.json.

Every field's text is the `description` in the schema; edit the schema, then run
`python scripts/gen_policy_docs.py` (or `--check` to fail when the committed file is stale;
tests/unit/policy/test_policy_docs.py does that in CI).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python scripts/gen_policy_docs.py` from a checkout
    sys.path.insert(0, str(ROOT))

from retention.policy.load import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, MAX_VALUES  # noqa: E402

SCHEMA = ROOT / "schemas" / "policy.schema.json"
EXAMPLE = ROOT / "policies" / "example.yaml"
OUTPUT = ROOT / "docs" / "policy.md"

# What `retention validate` checks beyond the schema (policy/checks.py), listed for readers.
CHECKS = (
    "Every pattern compiles under RE2 and is matched against the whole name; look-around and "
    "back-references are rejected (RE2 runs in linear time, so a policy can never hang a run).",
    "Tags, patterns and every other string field must be YAML strings: `1.10`, `on`, `012` or "
    "`12:30` unquoted are a number, a boolean or an integer to YAML, and are errors (quote them).",
    "Duplicate keys in a mapping are errors (plain YAML keeps the last one silently).",
    "Rule names are unique.",
    "A rule after a rule whose match selects everything (no exclude list, and each include list "
    "absent, empty, or holding `.*` or `.+`) can never own a tag, and is an error. Rules with "
    "`match.untagged: true` are checked among themselves: a tag catch-all does not shadow an "
    "untagged rule, nor an untagged catch-all a tag rule.",
    "`match.untagged: true` beside `match.tags` or `match.exclude_tags` is an error (untagged "
    "manifests have no tag). Without `registry.storage` it is a warning: the registry API lists "
    "tags only, so the rule selects nothing.",
    "`keep: {last: 0}` without `newer_than` is allowed, with a warning: it deletes every image "
    "the rule owns.",
    "`schedule.cron` is a valid five-field expression (or an `@` shortcut) that fires; "
    "`schedule.timezone` is a known IANA zone.",
    "`registry.url` is `http://` or `https://` with a host, and no credentials, query or fragment.",
    "`${VAR}` (in `registry:` only): malformed references are errors; an unset variable is a "
    "warning in `validate` and an error naming it in `plan`, `apply` and `schedule`. A "
    "password written literally is a warning. `${...}` outside `registry:` is literal text, "
    "with a warning.",
    f"Limits: a file of at most {MAX_BYTES} bytes (1 MiB), nesting at most {MAX_DEPTH} levels "
    f"deep, at most {MAX_ALIASES} aliases, and at most {MAX_VALUES} values once aliases are "
    "expanded; beyond them the file is refused with one clear error.",
)


# How rules treat untagged manifests (retention/evaluate.py), for readers.
UNTAGGED = (
    "A re-pushed `latest` or `main` leaves its earlier manifest behind, untagged; so does a push "
    "by digest. An *untagged manifest* is a manifest of a repository that no tag points at, that "
    "no other manifest of the repository lists (an index's platform manifests belong to the "
    "index), and whose `subject`, if any, is not in the repository (a referrer follows its "
    "subject). The platform manifests and referrers of an untagged manifest follow it. The "
    "registry API lists tags only: untagged manifests are seen only by the storage inventory "
    "(`registry.storage.filesystem`).",
    "",
    "- Only a rule with `match.untagged: true` selects them, and it selects nothing else. "
    "`repositories` and `exclude_repositories` narrow it; the first untagged rule selecting a "
    "repository owns its untagged manifests.",
    "- `keep.last: N` keeps the N most recent untagged manifests the rule owns per repository, "
    "by `created` (newest first, ties by digest); `newer_than` keeps the younger ones; one of "
    "unknown age is kept and takes no place in `last` (unless `settings.unknown_age: oldest`).",
    "- One pushed less than an hour before the inventory was taken (the wall clock of the run, "
    "not `--as-of`), or whose push time is unknown, is always kept and takes no place in `last`: "
    "a multi-platform push uploads its platform manifests before the index.",
    "- `protect.digests` keeps a manifest, tagged or not, with its platform manifests and "
    "referrers, whatever any rule says.",
    "- Plan entries of untagged manifests have `tags: []`; the reason names the rule and, where "
    'the tag history says so, the tag it used to carry: "untagged (was `latest` until '
    '2026-11-30), rule `untagged`: rank 4 > 3 and 12 days old >= 7d".',
    "- Without an untagged rule they are all kept, and a storage plan says how many there are "
    'and what deleting them would free: "N untagged manifests (X GiB) kept: no rule selects '
    'untagged manifests".',
    "- `retention explain -p POLICY REPO@sha256:...` explains one; `retention inventory` lists "
    "them, marked untagged, with their push time.",
    "",
    "```yaml",
    "rules:",
    "  - name: untagged",
    "    match: {untagged: true}",
    "    keep: {last: 3, newer_than: 7d}",
    "```",
)


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """`node` with a local `$ref` merged in (the node's own keywords win)."""
    out: dict[str, Any] = {}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out.update(_resolve(schema, schema["$defs"][ref.removeprefix("#/$defs/")]))
    out.update({k: v for k, v in node.items() if k != "$ref"})
    return out


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def _type(schema: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    node = _resolve(schema, node)
    if "oneOf" in node:
        return ", or ".join(_type(schema, branch) for branch in node["oneOf"])
    if "const" in node:
        return _code(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    names = {"object": "mapping", "array": "list", "boolean": "boolean", "null": "`null`"}
    parts = []
    for t in types:
        if t == "array":
            parts.append("list of " + _type(schema, node.get("items", {})) + "s")
        else:
            parts.append(names.get(t, t))
    text = " or ".join(parts) or "any"
    if "minimum" in node and "maximum" in node:
        text += f" from {node['minimum']} to {node['maximum']}"
    elif "minimum" in node:
        text += f" ≥ {node['minimum']}"
    if "pattern" in node and "string" in types:
        text += f" matching {_code(node['pattern'])}"
    return text


def _fields(
    schema: Mapping[str, Any], node: Mapping[str, Any], prefix: str
) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(dotted name, resolved schema, required) for every property, depth first."""
    node = _resolve(schema, node)
    branches = node.get("oneOf", [node])
    for branch in branches:
        branch = _resolve(schema, branch)
        required = set(branch.get("required", []))
        for name, sub in branch.get("properties", {}).items():
            full = f"{prefix}{name}"
            resolved = _resolve(schema, sub)
            yield full, resolved, name in required
            if "properties" in resolved or any(
                "properties" in _resolve(schema, b) for b in resolved.get("oneOf", [])
            ):
                yield from _fields(schema, resolved, full + ".")
            items = resolved.get("items")
            if isinstance(items, Mapping) and "properties" in _resolve(schema, items):
                yield from _fields(schema, items, full + "[].")


def render(schema: Mapping[str, Any], example: str) -> str:
    lines = [
        "# Policy file reference (format version 1)",
        "",
        "<!-- Generated by scripts/gen_policy_docs.py from schemas/policy.schema.json."
        " Do not edit by hand: edit the schema's descriptions and run the script. -->",
        "",
        schema["description"],
        "",
        "Check a policy with `retention validate POLICY...`: it reports every problem of every "
        "file as `FILE:LINE:COL: $.path: message`, and never contacts a registry.",
        "",
        "## Example",
        "",
        "This is `policies/example.yaml`; the `policies/` folder has more, each one a test.",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
        "",
        "## Fields",
        "",
    ]
    for name, node, required in _fields(schema, schema, ""):
        lines.append(f"### `{name}`")
        lines.append("")
        facts = [f"**Type:** {_type(schema, node)}"]
        facts.append("**Required**" if required else "optional")
        if "default" in node:
            facts.append(f"**Default:** {_code(node['default'])}")
        lines.append(" · ".join(facts))
        lines.append("")
        if "description" in node:
            lines.append(node["description"])
            lines.append("")
        examples = node.get("examples")
        if examples:
            lines.append("Examples: " + ", ".join(_code(e) for e in examples))
            lines.append("")
    lines += ["## Definitions", ""]
    for name, node in schema["$defs"].items():
        if "description" in node and name != "rule":
            lines.append(f"- **{name}** ({_type(schema, node)}): {node['description']}")
    lines += ["", "## Checks beyond the schema", ""]
    lines += [f"- {check}" for check in CHECKS]
    lines += ["", "## Untagged manifests", "", *UNTAGGED]
    return "\n".join(lines) + "\n"


def generate() -> str:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return render(schema, EXAMPLE.read_text(encoding="utf-8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/policy.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python scripts/gen_policy_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
