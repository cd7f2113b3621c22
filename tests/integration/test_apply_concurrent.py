"""The same plan applied twice at once, past the policy lock (two copies of the policy, two
journals), with every DELETE held in a proxy so that the two runs overlap: between them they
delete exactly the plan, each digest once; neither touches what the plan keeps; and each run
ends in a state a re-run of it finishes (DESIGN §5 "404 on DELETE = already gone", §6)."""

from __future__ import annotations

import threading
from pathlib import Path

from retention.apply import ApplyReport
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.integration.applyscene import push_scene
from tests.support.applykit import (
    assert_plan_applied_exactly,
    assert_untouched,
    load,
    make_plan,
    run_apply,
    write_policy,
)


def test_two_applies_of_one_plan_at_once_delete_it_exactly_once(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    scene = push_scene(pusher, repo_prefix)
    policies = [
        load(write_policy(tmp_path / f"p{i}.yaml", registry.url, repo_prefix)) for i in (1, 2)
    ]
    plan = make_plan(policies[0], repo_prefix)
    reports: dict[int, ApplyReport] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault("delay", method="DELETE", delay=0.2, times=None))

        def run(i: int) -> None:
            try:
                start.wait()
                reports[i] = run_apply(
                    policies[i - 1], plan, tmp_path / f"journal{i}.jsonl", url=proxy.url
                )
            except BaseException as exc:  # surfaced below, never swallowed
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        deletes = [r.path for r in proxy.requests if r.method == "DELETE"]

    assert not errors, errors
    assert set(reports) == {1, 2}
    # every planned digest was deleted by one of the runs (both, when their DELETEs crossed in
    # the registry); the other found it gone, or skipped it once its index had gone
    for e in plan.deletions:
        outcomes = [
            next(o for o in reports[i].outcomes if o.entry.digest == e.digest) for i in (1, 2)
        ]
        kinds = sorted(o.kind for o in outcomes)
        assert "deleted" in kinds and set(kinds) <= {"deleted", "gone", "stale"}, (
            e,
            [(o.kind, o.reason) for o in outcomes],
        )
    assert len(deletes) <= 2 * len(plan.deletions)
    assert_plan_applied_exactly(registry.url, plan)
    assert_untouched(registry.url, scene.kept + scene.unplanned)

    # each run, re-run with its own journal, has nothing left to do and deletes nothing
    for i in (1, 2):
        again = run_apply(policies[i - 1], plan, tmp_path / f"journal{i}.jsonl")
        assert again.count("deleted") == 0
        assert all(o.kind in ("resumed", "gone", "stale") for o in again.outcomes)
