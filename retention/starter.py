"""PURE starter policies for `retention init`: tag names per repository → recognised tag families
(with counts and examples) → the text of a commented policy that protects releases and `latest`
and keeps recent builds.

No I/O, no registry, no clock: the caller lists the tags and passes the date to print, if any.
Every pattern here is valid in both RE2 (what policies use) and Python `re` (what `survey` uses),
and families are tried in the order the generated policy applies them, so the counts written in
the policy's comments are exactly what its protect list and rules will own.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from retention.errors import RetentionError
from retention.text import DURATION_UNITS, plural

Treatment = Literal["attached", "protect", "rule"]


@dataclass(frozen=True, slots=True)
class Family:
    """A common kind of tag, and what the starter policy does with it."""

    key: str  # rule name in the policy, e.g. "pull-requests"
    title: str  # for people, e.g. "pull-request builds"
    pattern: str  # RE2 and Python `re`, matched against the whole tag name
    treatment: Treatment
    exclude: str | None = None  # whole-name pattern the family leaves out (the rule's exclude_tags)
    keep_last: int | None = None
    keep_newer_than: str | None = None
    always: bool = False  # protect it even when no tag of the family exists yet

    def matches(self, tag: str) -> bool:
        if re.fullmatch(self.pattern, tag) is None:
            return False
        return self.exclude is None or re.fullmatch(self.exclude, tag) is None

    @property
    def keep_text(self) -> str:
        if self.treatment == "protect":
            return "protected"
        if self.treatment == "attached":
            return "follow their image"
        if self.keep_last is None and self.keep_newer_than is None:
            return "kept"
        return f"last {self.keep_last}, newer than {self.keep_newer_than}"


_VERSION3 = r"v?[0-9]+\.[0-9]+\.[0-9]+"
_MOVING_NAMES = (
    "latest",
    "stable",
    "edge",
    "main",
    "master",
    "develop",
    "dev",
    "nightly",
    "canary",
    "production",
    "prod",
    "staging",
)
_WORD = r"[0-9A-Za-z._-]"

# Tried in this order; the first family whose pattern matches (and exclude does not) owns a tag.
# The order is the policy's: attached artifacts are owned by no rule, protect wins over every
# rule, then the rules in the order they are written. Keep this table and the rendering in step.
FAMILIES: tuple[Family, ...] = (
    Family(
        key="signatures",
        title="signatures and attestations",
        pattern=r"sha256-[0-9a-f]{64}(\.(sig|att|sbom))?",
        treatment="attached",
    ),
    Family(
        key="moving",
        title="moving tags",
        pattern="|".join(_MOVING_NAMES),
        treatment="protect",
    ),
    Family(key="releases", title="releases", pattern=_VERSION3, treatment="protect", always=True),
    Family(
        key="release-lines",
        title="release lines",
        pattern=r"(v?[0-9]+\.[0-9]+|v[0-9]+)",
        treatment="protect",
    ),
    Family(
        key="pre-releases",
        title="pre-releases",
        pattern=_VERSION3 + r"-(rc|RC|alpha|beta|pre|dev|snapshot|SNAPSHOT|canary)" + _WORD + "*",
        treatment="rule",
        keep_last=10,
        keep_newer_than="90d",
    ),
    Family(
        key="release-variants",
        title="release variants",
        pattern=r"v?[0-9]+\.[0-9]+(\.[0-9]+)?[-_.]" + _WORD + "+",
        treatment="rule",
    ),
    Family(
        key="pull-requests",
        title="pull-request builds",
        pattern=r"(pr|mr)-?[0-9]+([-_.]" + _WORD + "*)?",
        treatment="rule",
        keep_last=5,
        keep_newer_than="14d",
    ),
    Family(
        key="nightlies",
        title="nightly builds",
        pattern=r"(" + _WORD + r"*[-_.])?nightly([-_.]" + _WORD + "*)?",
        treatment="rule",
        keep_last=7,
        keep_newer_than="14d",
    ),
    Family(
        key="dated-builds",
        title="dated builds",
        pattern=r"("
        + _WORD
        + r"*[-_.])?(19|20)[0-9]{2}-?(0[1-9]|1[0-2])-?(0[1-9]|[12][0-9]|3[01])"
        + r"(T?[0-9]{4,6})?([-_.]"
        + _WORD
        + "*)?",
        treatment="rule",
        keep_last=10,
        keep_newer_than="30d",
    ),
    Family(
        key="branch-builds",
        title="branch builds (<branch>-<git sha>)",
        pattern=_WORD + r"+-[0-9a-f]{7,40}",
        # a short all-digit suffix is a build number; 7+ digits is a sha that happens to be
        # all digits (1 in 27 short shas) or a timestamp, both builds
        exclude=r".*-[0-9]{1,6}",
        treatment="rule",
        keep_last=10,
        keep_newer_than="30d",
    ),
    Family(
        key="commit-builds",
        title="commit builds (bare git sha)",
        pattern=r"[0-9a-f]{7,40}",
        exclude=r"[0-9]+",
        treatment="rule",
        keep_last=10,
        keep_newer_than="30d",
    ),
)
FAMILY_BY_KEY: Mapping[str, Family] = {f.key: f for f in FAMILIES}

CATCH_ALL = "everything-else"


def classify(tag: str) -> Family | None:
    """The family that owns `tag`, or None when the tag is of no family we recognise."""
    for family in FAMILIES:
        if family.matches(tag):
            return family
    return None


@dataclass(frozen=True, slots=True)
class Seen:
    """How many tags of one family (None: unrecognised) were found, where, and three examples."""

    family: Family | None
    tags: int
    repositories: int
    examples: tuple[str, ...]  # "repo:tag"
    names: tuple[tuple[str, int], ...]  # distinct tag names, sorted, with their repository count


@dataclass(frozen=True, slots=True)
class Survey:
    """The tag families of a registry, in `FAMILIES` order; `other` holds the unrecognised."""

    repositories: int
    tags: int
    families: tuple[Seen, ...]
    other: Seen

    def seen(self, key: str) -> Seen | None:
        for s in self.families:
            if s.family is not None and s.family.key == key:
                return s
        return None


@dataclass(frozen=True, slots=True)
class UntaggedSeen:
    """What `init --storage` found: the storage root and its untagged manifests (the caller
    counts them from a storage inventory, with `evaluate.untagged_digests`)."""

    storage: str
    manifests: int = 0
    repositories: int = 0
    size: int = 0  # their manifests, configs and layers, shared layers included


UNTAGGED_RULE = "untagged"
UNTAGGED_KEEP_LAST = 3
UNTAGGED_KEEP_NEWER_THAN = "7d"


def _examples(pairs: list[tuple[str, str]], limit: int = 3) -> tuple[str, ...]:
    """Up to `limit` examples, from different repositories first."""
    picked: list[tuple[str, str]] = []
    repos: set[str] = set()
    for repo, tag in pairs:
        if repo not in repos:
            picked.append((repo, tag))
            repos.add(repo)
        if len(picked) == limit:
            break
    for pair in pairs:
        if len(picked) == limit:
            break
        if pair not in picked:
            picked.append(pair)
    return tuple(f"{repo}:{tag}" for repo, tag in sorted(picked))


def _seen(family: Family | None, pairs: list[tuple[str, str]]) -> Seen:
    pairs = sorted(pairs)
    return Seen(
        family=family,
        tags=len(pairs),
        repositories=len({repo for repo, _ in pairs}),
        examples=_examples(pairs),
        names=tuple(sorted(Counter(tag for _, tag in pairs).items())),
    )


def survey(tags_by_repository: Mapping[str, Sequence[str]]) -> Survey:
    """Recognise the tag families of a registry from its tag names, per repository."""
    found: dict[str, list[tuple[str, str]]] = {f.key: [] for f in FAMILIES}
    other: list[tuple[str, str]] = []
    total = 0
    for repo, tags in tags_by_repository.items():
        for tag in set(tags):
            total += 1
            family = classify(tag)
            (found[family.key] if family else other).append((repo, tag))
    families = tuple(_seen(f, found[f.key]) for f in FAMILIES if found[f.key])
    return Survey(
        repositories=len(tags_by_repository),
        tags=total,
        families=families,
        other=_seen(None, other),
    )


# --- rendering ---------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE = re.compile(r"[^0-9A-Za-z._/:@+-]")


def _safe(text: str, limit: int = 60) -> str:
    """A name made safe for a YAML comment: one line, printable ASCII, not too long."""
    text = _UNSAFE.sub("?", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML), with `${` kept literal."""
    return json.dumps(text.replace("${", "$${"))


def _yaml_pattern(pattern: str) -> str:
    """A pattern as a single-quoted YAML scalar: backslashes stay literal."""
    return "'" + pattern.replace("'", "''") + "'"


def _where(seen: Seen) -> str:
    repositories = plural(seen.repositories, "repository", "repositories")
    text = f"{plural(seen.tags, 'tag')} in {repositories}"
    if seen.examples:
        text += ", e.g. " + _safe(seen.examples[0])
    return text


def _keep_words(family: Family) -> str:
    age = family.keep_newer_than or ""
    age = f"{age[:-1]} {DURATION_UNITS[age[-1]]}" if age else "no age"
    return f"keeps, per repository, the {family.keep_last} newest images and any younger than {age}"


def _table(survey_: Survey) -> list[str]:
    rows = [(s.family.title, s.family.keep_text, s) for s in survey_.families if s.family]
    if survey_.other.tags:
        rows.append(("unrecognised", f"kept ({CATCH_ALL})", survey_.other))
    if not rows:
        return ["#   (no tags found)"]
    width = max(len(title) for title, _, _ in rows)
    keep_width = max(len(keep) for _, keep, _ in rows)
    head = f"#   {'family':<{width}}  {'tags':>5}  {'repos':>5}  {'policy':<{keep_width}}  example"
    lines = [head]
    for title, keep, s in rows:
        example = _safe(s.examples[0], 40) if s.examples else ""
        line = f"#   {title:<{width}}  {s.tags:>5}  {s.repositories:>5}  {keep:<{keep_width}}"
        lines.append(f"{line}  {example}".rstrip())
    return lines


def check_credentials(username: str | None, password_env: str | None) -> None:
    """Refuse `--username`/`--password-env` combinations the starter cannot write."""
    if (username is None) != (password_env is None):
        raise RetentionError(
            "--username and --password-env go together",
            hint="pass both (the password is read from that environment variable), or neither "
            "to use your docker login",
        )
    if password_env is not None and not _ENV_NAME.fullmatch(password_env):
        raise RetentionError(
            f"--password-env {password_env!r} is not an environment variable name",
            hint="name the variable that holds the password, e.g. --password-env REGISTRY_PASSWORD",
        )
    if username is not None and (not username.strip() or any(c < " " for c in username)):
        raise RetentionError(
            "--username must be a non-empty name on one line", hint="e.g. --username ci-cleanup"
        )


def render_policy(
    survey_: Survey,
    *,
    url: str,
    username: str | None = None,
    password_env: str | None = None,
    written_on: str | None = None,
    filename: str | None = None,
    untagged: UntaggedSeen | None = None,
) -> str:
    """The starter policy for `survey_`, as commented YAML that `retention validate` accepts.

    `written_on` (a date) and `filename` (where it will be saved) only appear in comments.
    With `untagged` (init --storage) the policy reads that storage and has an untagged rule.
    """
    check_credentials(username, password_env)
    out = [
        *_header_lines(survey_, url, written_on=written_on, filename=filename),
        "version: 1",
        *_registry_lines(url, username, password_env, untagged),
        '# schedule: {cron: "30 3 * * *", timezone: UTC}   # for `retention schedule`',
        "settings:",
        "  concurrency: 8",
        "  max_deletions: 500          # apply refuses a plan that deletes more images than this",
        "  unknown_age: keep           # images without a usable created date are kept, reported",
        "protect:                      # never deleted, whatever the rules say",
        "  tags:",
        *_protect_lines(survey_),
        "rules:                        # the first rule whose match selects a tag owns it",
        *_rules(survey_, untagged),
    ]
    signatures = survey_.seen("signatures")
    if signatures is not None:
        out += [
            "# Signatures and attestations (sha256-<digest>.sig/.att/.sbom, "
            f"{plural(signatures.tags, 'tag')}) need no rule:",
            "# they are kept and deleted together with the image they belong to.",
        ]
    return "\n".join(out) + "\n"


def _header_lines(
    survey_: Survey, url: str, *, written_on: str | None, filename: str | None
) -> list[str]:
    """The opening comment: what was read, the families found, what to run next."""
    when = f" on {written_on}" if written_on else ""
    file = _safe(filename, 80) if filename else "POLICY.yaml"
    return [
        f"# Starter retention policy for {_safe(url, 200)}, written by `retention init`{when}.",
        f"# It read {plural(survey_.repositories, 'repository', 'repositories')} and "
        f"{plural(survey_.tags, 'tag')}, and recognised these tag families:",
        "#",
        *_table(survey_),
        "#",
        "# Review it, then see what it would delete (these commands delete nothing):",
        f"#   retention validate {file}",
        f"#   retention plan -p {file}",
        f"#   retention explain -p {file} REPOSITORY:TAG    # why a tag is kept or deleted",
        "# Patterns are RE2 regular expressions matched against the whole tag name.",
    ]


def _registry_lines(
    url: str, username: str | None, password_env: str | None, untagged: UntaggedSeen | None
) -> list[str]:
    """`registry:` with its auth (or a commented example) and, with `untagged`, its storage."""
    out = ["registry:", f"  url: {_quoted(url)}"]
    if username is not None and password_env is not None:
        out += [
            "  auth:                        # the password is read from the environment",
            f"    username: {_quoted(username)}",
            f'    password: "${{{password_env}}}"',
        ]
    else:
        out += [
            "  # auth:                      # default: your docker login, else anonymous",
            '  #   username: "${REGISTRY_USER}"',
            '  #   password: "${REGISTRY_PASSWORD}"',
        ]
    if untagged is not None:
        out += [
            "  storage:                     # read the registry's storage: untagged manifests too",
            f"    filesystem: {_quoted(untagged.storage)}",
        ]
    return out


def _rules(survey_: Survey, untagged: UntaggedSeen | None) -> list[str]:
    """The rules: untagged manifests first, one per family seen, then the catch-all if needed."""
    out = _untagged_lines(untagged) if untagged is not None else []
    rules = 0
    for family in FAMILIES:
        seen = survey_.seen(family.key)
        if family.treatment == "rule" and seen is not None:
            out += _rule_lines(family, seen)
            rules += 1
    # A catch-all only when it owns something (a rule that owns nothing is a plan warning), or
    # when it is the only rule (a policy needs one).
    if survey_.other.tags or not rules:
        other = f": {_where(survey_.other)}" if survey_.other.tags else ""
        out += [
            f"  # Everything else is kept{other}.",
            "  # Narrow this rule, or add rules above it, once you know what else lives here.",
            f"  - name: {CATCH_ALL}",
            "    match: {}",
            "    keep: all",
        ]
    else:
        out += [
            "  # A tag no rule selects is kept: new kinds of tags stay until a rule selects them.",
        ]
    return out


def _protect_lines(survey_: Survey) -> list[str]:
    moving = survey_.seen("moving")
    repos = dict(moving.names) if moving else {}
    lines: list[str] = []
    for name in sorted(repos.keys() | {"latest"}, key=lambda n: (n != "latest", n)):
        note = "moving tag (none yet)"
        if name in repos:
            note = f"moving tag, in {plural(repos[name], 'repository', 'repositories')}"
        lines.append(f"    - {_yaml_pattern(name):<28}  # {note}")
    for family in FAMILIES:
        if family.treatment != "protect" or family.key == "moving":
            continue
        seen = survey_.seen(family.key)
        if seen is None and not family.always:
            continue
        lines += [
            f"    # {family.title}: {_where(seen)}" if seen else f"    # {family.title} (none yet)",
            f"    - {_yaml_pattern(family.pattern)}",
        ]
    return lines


def _untagged_lines(seen: UntaggedSeen) -> list[str]:
    found = (
        f"{plural(seen.manifests, 'untagged manifest')} in "
        f"{plural(seen.repositories, 'repository', 'repositories')}, "
        f"{_size(seen.size)} with shared layers"
        if seen.manifests
        else "none yet"
    )
    return [
        f"  # untagged manifests (earlier pushes of re-pushed tags, pushes by digest): {found}",
        f"  # keeps the last {UNTAGGED_KEEP_LAST} per repository and those newer than "
        f"{UNTAGGED_KEEP_NEWER_THAN}; one pushed within the hour is always kept",
        f"  - name: {UNTAGGED_RULE}",
        "    match: {untagged: true}",
        f"    keep: {{last: {UNTAGGED_KEEP_LAST}, newer_than: {UNTAGGED_KEEP_NEWER_THAN}}}",
    ]


def _size(n: int) -> str:
    """`512 B`, `1.5 GiB` (as plan.human_bytes, which this pure module does not import)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _rule_lines(family: Family, seen: Seen) -> list[str]:
    match = f"tags: [{_yaml_pattern(family.pattern)}]"
    if family.exclude:
        match += f", exclude_tags: [{_yaml_pattern(family.exclude)}]"
    lines = [f"  # {family.title}: {_where(seen)}"]
    if family.keep_last is None and family.keep_newer_than is None:
        lines.append("  # keeps them all: delete this rule to let later rules own them")
        keep = "all"
    else:
        lines.append(f"  # {_keep_words(family)}")
        keep = f"{{last: {family.keep_last}, newer_than: {family.keep_newer_than}}}"
    return [
        *lines,
        f"  - name: {family.key}",
        f"    match: {{{match}}}",
        f"    keep: {keep}",
    ]


def starter_policy(
    tags_by_repository: Mapping[str, Sequence[str]],
    *,
    url: str,
    username: str | None = None,
    password_env: str | None = None,
    written_on: str | None = None,
    filename: str | None = None,
    untagged: UntaggedSeen | None = None,
) -> str:
    """`render_policy(survey(tags_by_repository), ...)`: the pure half of `retention init`."""
    return render_policy(
        survey(tags_by_repository),
        url=url,
        username=username,
        password_env=password_env,
        written_on=written_on,
        filename=filename,
        untagged=untagged,
    )
