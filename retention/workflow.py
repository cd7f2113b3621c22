"""The use cases the command line and its scheduled runs share: inventory, plan, execute a plan,
one scheduled run.

Prints nothing and never exits: each returns a value or raises a `RetentionError`, and warnings go
to the log; `retention/cli/` shows them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from retention.apply import (
    ApplyReport,
    ProgressEvent,
    apply_plan,
    check_plan,
    policy_keeps,
    policy_untag_keeps,
    untagged_owned,
)
from retention.cache import DigestCache
from retention.errors import InventoryError, RegistryError, UsageError
from retention.evaluate import evaluate
from retention.gc import run_gc, untagged_warnings
from retention.inventory import Progress, Shard, take_inventory
from retention.journal import Journal, default_journal_path
from retention.model import Inventory
from retention.oci import cosign_subject
from retention.plan import Plan
from retention.plan import to_json as plan_to_json
from retention.policy.model import Pattern, Policy
from retention.registry.client import RegistryClient, RunDeadline
from retention.runlog import RunOutcome
from retention.schedule import StopFlag
from retention.state import digest_cache_dir
from retention.storage import (
    compare_with_api,
    in_flight_warnings,
    take_storage_inventory,
    with_in_flight,
)
from retention.text import first_line

# the logger `retention` as before the split: `--log-format json` lines name it
log = logging.getLogger("retention")

# When the command being run started (`main`, and each scheduled run): `settings.timeouts.run`
# counts from here. A scheduled run with `run: null` still ends after SCHEDULED_RUN_LIMIT, so it
# never holds the policy's lock forever (docs/decisions.md, "What is trusted").
_command_started = time.monotonic()
_scheduled = False
SCHEDULED_RUN_LIMIT = timedelta(hours=6)


def start_command(*, scheduled: bool = False) -> None:
    """Start the clock of `settings.timeouts.run` for the command (or scheduled run) beginning."""
    global _command_started, _scheduled
    _command_started = time.monotonic()
    _scheduled = scheduled


def client_options(policy: Policy) -> dict[str, Any]:
    """The RegistryClient arguments `settings.timeouts` gives, for the command in progress."""
    t = policy.settings.timeouts
    run = t.run if t.run is not None else (SCHEDULED_RUN_LIMIT if _scheduled else None)
    deadline = None
    if run is not None:
        seconds = run.total_seconds()
        deadline = RunDeadline(at=_command_started + seconds, seconds=seconds)
    return {
        "timeout": (t.connect.total_seconds(), t.read.total_seconds()),
        "request_timeout": t.request.total_seconds(),
        "deadline": deadline,
    }


def inventory_source(policy: Policy, requested: str | None) -> str:
    """`--inventory-source`, else storage when the policy names it, else the API."""
    if requested == "storage" and policy.registry.storage_path is None:
        raise UsageError(
            "--inventory-source storage: the policy has no registry.storage.filesystem",
            hint="add registry: {storage: {filesystem: /var/lib/registry}} to the policy "
            "(the registry's storage rootdirectory), see docs/registries.md",
        )
    if requested is not None:
        return requested
    return "storage" if policy.registry.storage_path is not None else "api"


def inventory_for(
    policy: Policy,
    *,
    repository: Pattern | None,
    progress: Progress | None,
    use_cache: bool = True,
    shard: Shard | None = None,
    repositories: Sequence[str] | None = None,
    source: str = "api",
) -> Inventory:
    """Walk the registry (`repository`, `shard` narrow it); `repositories` walks just those,
    without the catalog."""
    select_pattern = repository

    def select(name: str) -> bool:
        if shard is not None and name not in shard:
            return False
        return select_pattern is None or select_pattern.matches(name)

    if source == "storage":
        assert policy.registry.storage_path is not None  # inventory_source checked it
        wanted = None if repositories is None else set(repositories)
        return take_storage_inventory(
            policy.registry.storage_path,
            registry=policy.registry.url,
            now=datetime.now(UTC),  # when the inventory is taken: the wall clock, never --as-of
            select=lambda name: select(name) and (wanted is None or name in wanted),
            complete=repositories is None
            and select_pattern is None
            and (shard is None or shard.count == 1),
            concurrency=policy.settings.concurrency,
            progress=progress or (lambda phase, done, total: None),
        )
    cache = DigestCache(digest_cache_dir(os.environ)) if use_cache else None
    with (
        cache or contextlib.nullcontext(),
        RegistryClient(
            policy.registry,
            concurrency=policy.settings.concurrency,
            env=os.environ,
            **client_options(policy),
        ) as client,
    ):
        return take_inventory(
            client,
            now=datetime.now(UTC),  # when the inventory is taken: the wall clock, never --as-of
            select=select,
            complete=repositories is None
            and select_pattern is None
            and (shard is None or shard.count == 1),
            concurrency=policy.settings.concurrency,
            cache=cache,
            progress=progress or (lambda phase, done, total: None),
            repositories=repositories,
        )


def make_plan(
    policy: Policy,
    *,
    now: datetime,
    repository: Pattern | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
    shard: Shard | None = None,
    source: str | None = None,
) -> tuple[Plan, Inventory]:
    """Inventory the registry and evaluate the policy: the one path to a plan.

    A storage inventory is first checked against the API (one tags/list per repository): a
    storage that is not the URL's registry is an error before anything is planned.
    """
    chosen = inventory_source(policy, source)
    inventory = inventory_for(
        policy,
        repository=repository,
        progress=progress,
        use_cache=use_cache,
        shard=shard,
        source=chosen,
    )
    if chosen != "storage":
        return with_untag_methods(policy, evaluate(policy, inventory, now)), inventory
    # The same-registry check mostly waits on the registry: the policy is evaluated meanwhile,
    # and that plan is kept only if the check passes and adds no tag in flight
    # (docs/decisions.md, "Storage inventory: speed").
    with ThreadPoolExecutor(max_workers=1) as pool:
        checking = pool.submit(_same_registry, policy, inventory)
        try:
            plan = evaluate(policy, inventory, now)
        finally:
            checked = checking.result()  # a storage that is not this registry is the error
    if checked is not inventory:
        plan = evaluate(policy, checked, now)
    return with_untag_methods(policy, plan), checked


def with_untag_methods(policy: Policy, plan: Plan) -> Plan:
    """`plan` with how apply removes a tag alone in each repository it untags in, probed once
    per repository (`RegistryClient.probe_tag_delete`: a DELETE of a random tag, never a real
    one): "delete-tag" where the registry deletes tags, else "throw-away". A probe the registry
    refuses (no delete permission for this account, deletion disabled) plans "throw-away", which
    works wherever a digest can be deleted, and says so in the plan's warnings."""
    repositories = sorted({u.repository for u in plan.untags})
    if not repositories:
        return plan
    methods: list[tuple[str, str]] = []
    warnings: list[str] = []
    with RegistryClient(
        policy.registry,
        concurrency=policy.settings.concurrency,
        env=os.environ,
        **client_options(policy),
    ) as client:
        for repository in repositories:
            try:
                deletes_tags = client.probe_tag_delete(repository)
            except RegistryError as exc:
                deletes_tags = False
                warnings.append(
                    f"{repository}: whether the registry deletes tags could not be probed "
                    f"({first_line(exc.diagnostics())}); untags there use the throw-away method"
                )
            methods.append((repository, "delete-tag" if deletes_tags else "throw-away"))
    for warning in warnings:
        log.warning("%s", warning)
    return dataclasses.replace(
        plan, untag_methods=tuple(methods), warnings=(*plan.warnings, *warnings)
    )


def _same_registry(policy: Policy, inventory: Inventory) -> Inventory:
    """A storage inventory checked against the API (one tags/list per repository): raises when
    the storage is not the URL's registry; pushes in flight are noted as warnings."""
    assert policy.registry.storage_path is not None
    with RegistryClient(
        policy.registry,
        concurrency=policy.settings.concurrency,
        env=os.environ,
        **client_options(policy),
    ) as client:
        seen = compare_with_api(
            client,
            inventory,
            policy.registry.storage_path,
            concurrency=policy.settings.concurrency,
        )
    inventory = with_in_flight(inventory, seen)
    flying = in_flight_warnings(seen)
    for warning in flying:
        log.warning("%s", warning)
    if flying:
        inventory = dataclasses.replace(inventory, warnings=(*inventory.warnings, *flying))
    return inventory


def sha256_of(plan: Plan) -> str:
    """A one-step plan's journal key, as a saved plan's is the sha256 of its file."""
    return hashlib.sha256(plan_to_json(plan).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class _PolicyCheck:
    keeps: dict[tuple[str, str], str]  # (repository, digest) → why the policy keeps it now
    untagged: frozenset[tuple[str, str]]  # untagged manifests an untagged rule owns now
    untag_keeps: dict[tuple[str, str], str]  # (repository, tag) → why it is not untagged now


def _policy_check(policy: Policy, plan: Plan) -> _PolicyCheck:
    """Invariant 8: the plan's deletions the policy keeps now, each with its reason; the
    untagged manifests its untagged rules own now (apply accepts only those untagged entries);
    and the plan's untags the policy does not plan now, each with the reason.

    The policy is evaluated again at the wall clock on a fresh inventory of the repositories the
    plan deletes or untags in (tags and manifests by tag are fetched again; index children and
    configs come from the digest cache). A plan made from the storage is checked on the storage
    (read again, those repositories only, and compared with the API as `plan` does): only it sees
    untagged manifests. A partial inventory cannot tell an orphan attachment from one whose
    subject lives in another repository, so when that alone keeps something a whole-registry plan
    deletes, the whole registry is walked; if that walk fails, the partial answer stands (it
    keeps more). Any other failure raises before the first DELETE.
    """
    now = datetime.now(UTC)
    repositories = sorted(
        {e.repository for e in plan.deletions} | {u.repository for u in plan.untags}
    )
    if not repositories:
        return _PolicyCheck({}, frozenset(), {})
    source = (
        "storage"
        if plan.inventory_source == "storage" and policy.registry.storage_path is not None
        else "api"
    )

    def fresh(names: Sequence[str] | None) -> tuple[Plan, Inventory]:
        inventory = inventory_for(
            policy, repository=None, progress=None, repositories=names, source=source
        )
        if source == "storage":
            inventory = _same_registry(policy, inventory)
        return evaluate(policy, inventory, now), inventory

    again, inventory = fresh(repositories)
    keeps = policy_keeps(plan, again)
    if keeps and plan.summary.complete and _subjects_outside(inventory, keeps):
        log.info("the policy keeps attachments whose subject may be elsewhere: walking it all")
        try:
            again, _ = fresh(None)
        except InventoryError as exc:
            log.warning("%s; the partial inventory's answer stands", exc.diagnostics())
        else:
            keeps = policy_keeps(plan, again)
    return _PolicyCheck(keeps, untagged_owned(again), policy_untag_keeps(plan, again))


def _subjects_outside(inventory: Inventory, keys: Iterable[tuple[str, str]]) -> bool:
    """Whether an image among `keys` is an attachment whose subject the inventory lacks."""
    held = {i.digest for r in inventory.repositories for i in r.images}
    images = {(r.name, i.digest): i for r in inventory.repositories for i in r.images}
    tags = {(r.name, t.digest): t.name for r in inventory.repositories for t in r.tags}
    for key in keys:
        image = images.get(key)
        subject = image.subject if image is not None else None
        if subject is None and key in tags:
            subject = cosign_subject(tags[key])
        if subject is not None and subject not in held:
            return True
    return False


def execute_plan(
    plan: Plan,
    plan_sha256: str,
    policy: Policy,
    *,
    journal_path: Path,
    verify_kept: bool,
    check_policy: bool,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ApplyReport:
    """The one way a plan is executed: by `apply` and by every scheduled run.

    `check_policy` re-evaluates the policy first (`_policy_check`); a plan this process has just
    made from a fresh inventory with the same policy (`apply -p`, scheduled runs) skips it.
    """
    # a plan made by this process has just been evaluated: its own untagged entries are the
    # policy's now
    check = (
        _policy_check(policy, plan) if check_policy else _PolicyCheck({}, untagged_owned(plan), {})
    )
    with (
        RegistryClient(
            policy.registry,
            concurrency=policy.settings.concurrency,
            env=os.environ,
            **client_options(policy),
        ) as client,
        Journal(journal_path, registry=client.url).open(
            plan_sha256=plan_sha256, policy_path=policy.path
        ) as journal,
    ):
        return apply_plan(
            plan,
            client,
            journal,
            concurrency=policy.settings.concurrency,
            progress=progress,
            verify_kept=verify_kept,
            should_stop=should_stop,
            policy_keeps=check.keeps,
            policy_untagged=check.untagged,
            untag_keeps=check.untag_keeps,
        )


def _apply_scheduled(policy: Policy, plan: Plan, *, now: datetime, stop: StopFlag) -> ApplyReport:
    """Apply a plan just made, with the policy's limits and a journal, as `apply -p` does."""
    preflight = check_plan(plan, registry_url=policy.registry.url, now=now, policy=policy)
    for warning in preflight.warnings:
        log.warning("%s", warning)
    digest = sha256_of(plan)
    return execute_plan(
        plan,
        digest,
        policy,
        journal_path=default_journal_path(policy.registry.url, digest, os.environ),
        verify_kept=False,  # the plan is seconds old: made by this run from a fresh inventory
        check_policy=False,  # ... with this policy, at this time
        should_stop=stop.is_set,
    )


def scheduled_run(policy: Policy, *, stop: StopFlag, gc_timeout: float) -> RunOutcome:
    """One scheduled run: plan, apply with the policy's limits, then gc if something went.
    It ends by its deadline (`settings.timeouts.run`, else SCHEDULED_RUN_LIMIT)."""
    start_command(scheduled=True)
    now = datetime.now(UTC)
    plan, inventory = make_plan(policy, now=now)
    warnings = list(plan.warnings)
    if policy.gc is not None:
        warnings += untagged_warnings(policy.gc.command, inventory)
    for warning in warnings:
        log.warning("%s", warning)
    outcome = RunOutcome(
        repositories=plan.summary.repositories,
        tags=plan.summary.tags,
        images=plan.summary.images,
        tags_planned=plan.summary.tags_deleted,
        images_planned=plan.summary.images_deleted,
        bytes_reclaimable=plan.summary.bytes_reclaimable,
        untags_planned=plan.summary.tags_untagged,
        warnings=tuple(warnings),
    )
    if plan.deletions or plan.untags:
        report = _apply_scheduled(policy, plan, now=now, stop=stop)
        error = report.error.diagnostics() if report.error else None
        if stop.is_set() and error is not None:
            # Stopped on request, not broken: the entries not attempted make the run partial,
            # and the next run plans them again.
            warnings.append(f"{stop.reason}: stopped between deletions; the next run goes on")
            error = None
        # counted in the history; the first untag not done is also said, with its reason
        undone = [u for u in report.untags if u.kind in ("stale", "kept", "failed")]
        if undone:
            first = f"{undone[0].untag.repository}:{undone[0].untag.tag}: {undone[0].reason}"
            warnings.append(f"{len(undone)} untag(s) not done ({undone[0].kind} {first})")
        outcome = dataclasses.replace(
            outcome,
            deleted=report.count("deleted") + report.count("resumed"),
            stale=report.count("stale"),
            gone=report.count("gone"),
            failed=report.count("failed"),
            untagged=sum(report.untag_count(k) for k in ("untagged", "gone", "resumed")),
            untags_skipped=report.untag_count("stale") + report.untag_count("kept"),
            untags_failed=report.untag_count("failed"),
            bytes_deleted=report.bytes_reclaimable,
            warnings=tuple(warnings),
            error=error,
        )
    if policy.gc is None or outcome.deleted == 0:
        return outcome
    if stop.is_set():
        log.warning("%s: garbage collection not started; run it by hand", stop.reason)
        return dataclasses.replace(
            outcome, warnings=(*outcome.warnings, "stopped before garbage collection")
        )
    gc = run_gc(policy.gc.command, storage_path=policy.gc.storage_path, timeout=gc_timeout)
    return dataclasses.replace(
        outcome,
        gc_command=gc.command,
        gc_exit_code=gc.exit_code,
        gc_output=gc.output,
        gc_bytes_freed=gc.bytes_freed,
        gc_error=gc.error,
    )
