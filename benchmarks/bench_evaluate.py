"""Benchmark `evaluate` on a synthetic registry (default 1000 repositories x 100 tags).

    python benchmarks/bench_evaluate.py [--repos 1000] [--tags 100] [--tracemalloc]

Prints the time of evaluate, to_json and render_text, and the process's peak RSS (or, with
--tracemalloc, the peak of Python allocations during evaluate, which is slower to measure).
The target (DESIGN performance budget): 100,000 tags evaluated in <= 3 s and <= 400 MB.
No assertions: timing belongs here, never in tests.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import re2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retention import oci
from retention.evaluate import evaluate
from retention.model import Blob, Image, Inventory, Kind, Repository, Tag
from retention.plan import render_text, to_json
from retention.policy.model import (
    Keep,
    Match,
    Pattern,
    Policy,
    RegistryConfig,
    Rule,
)

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _pattern(source: str) -> Pattern:
    return Pattern(source, re2.compile(source))


def build_policy() -> Policy:
    return Policy(
        registry=RegistryConfig(url="https://registry.example.test"),
        protect_tags=(_pattern("latest"), _pattern(r"v?\d+\.\d+\.\d+")),
        rules=(
            Rule(
                "release-candidates",
                Match(repositories=(_pattern("apps/.*"),), tags=(_pattern(r".*-rc\d+"),)),
                Keep(last=5, newer_than=timedelta(days=30), newer_than_text="30d"),
            ),
            Rule(
                "ci-builds",
                Match(tags=(_pattern("main-.*"), _pattern(r"pr-\d+"))),
                Keep(last=10, newer_than=timedelta(days=7), newer_than_text="7d"),
            ),
            Rule("everything-else", Match(), Keep(all=True)),
        ),
    )


def build_inventory(repos: int, tags_per_repo: int) -> Inventory:
    """Each repository: mostly CI builds, some releases and rcs, indexes, signatures, shared
    digests, a few images of unknown age; layers shared within and across repositories."""
    base_layers = [Blob(_digest(f"base-{i}"), 30_000_000 + i) for i in range(20)]
    repositories = []
    for r in range(repos):
        name = f"apps/service-{r:04d}" if r % 2 else f"libs/component-{r:04d}"
        images: dict[str, Image] = {}
        tags: list[Tag] = []
        n = 0
        while len(tags) < tags_per_repo:
            n += 1
            created = NOW - timedelta(hours=7 * n + r % 13)
            key = f"{r}/{n}"
            digest = _digest(key)
            blobs = (
                Blob(_digest(f"cfg-{key}"), 1500),
                base_layers[(r + n) % len(base_layers)],
                Blob(_digest(f"layer-{key}"), 5_000_000 + n),
            )
            kind = n % 10
            if kind == 0:  # a multi-platform index with two platform manifests
                children = []
                for arch in ("amd64", "arm64"):
                    child = _digest(f"{key}/{arch}")
                    children.append(child)
                    images[child] = Image(
                        digest=child,
                        media_type=oci.OCI_MANIFEST,
                        kind=Kind.IMAGE,
                        manifest_size=900,
                        size=900 + sum(b.size for b in blobs),
                        created=created,
                        blobs=blobs,
                        platform=f"linux/{arch}",
                    )
                images[digest] = Image(
                    digest=digest,
                    media_type=oci.OCI_INDEX,
                    kind=Kind.INDEX,
                    manifest_size=700,
                    size=700 + 2 * (900 + sum(b.size for b in blobs)),
                    created=created,
                    children=tuple(children),
                )
            else:
                unknown = kind == 7 and n % 3 == 0
                images[digest] = Image(
                    digest=digest,
                    media_type=oci.DOCKER_MANIFEST,
                    kind=Kind.IMAGE,
                    manifest_size=1200,
                    size=1200 + sum(b.size for b in blobs),
                    created=None if unknown else created,
                    created_raw="1970-01-01T00:00:00Z" if unknown else None,
                    config_digest=blobs[0].digest,
                    blobs=blobs,
                )
            if n == 1:
                tags.append(Tag("latest", digest))
            if kind == 5:
                tags.append(Tag(f"v1.{n}.0", digest))
                tags.append(Tag(f"v1.{n}.0-rc1", digest))  # shares the release digest
            elif kind == 6:
                tags.append(Tag(f"v1.{n}.0-rc{n % 4 + 1}", digest))
            elif kind in (1, 3):
                tags.append(Tag(f"pr-{n}", digest))
            else:
                tags.append(Tag(f"main-{hashlib.sha1(key.encode()).hexdigest()[:12]}", digest))
            if kind in (2, 5):  # a cosign signature of this image
                sig = _digest(f"sig-{key}")
                images[sig] = Image(
                    digest=sig,
                    media_type=oci.OCI_MANIFEST,
                    kind=Kind.ARTIFACT,
                    manifest_size=600,
                    size=600 + 1400,
                    created=None,
                    blobs=(Blob(_digest(f"sigblob-{key}"), 1400),),
                )
                tags.append(Tag(f"sha256-{digest.removeprefix('sha256:')}.sig", sig))
        tags = tags[:tags_per_repo]
        repositories.append(
            Repository(
                name=name,
                tags=tuple(sorted(tags, key=lambda t: t.name)),
                images=tuple(sorted(images.values(), key=lambda i: i.digest)),
            )
        )
    return Inventory(
        registry="https://registry.example.test", taken_at=NOW, repositories=tuple(repositories)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--tags", type=int, default=100)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    inventory = build_inventory(args.repos, args.tags)
    policy = build_policy()
    built = time.perf_counter() - t0
    tags = sum(len(r.tags) for r in inventory.repositories)
    images = sum(len(r.images) for r in inventory.repositories)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"inventory: {args.repos} repositories, {tags} tags, {images} manifests "
        f"(built in {built:.2f} s, peak RSS so far {rss_before:.0f} MiB)"
    )

    if args.tracemalloc:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    plan = evaluate(policy, inventory, NOW)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced = ""
    if args.tracemalloc:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        traced = f", tracemalloc peak during evaluate {peak / 2**20:.0f} MiB"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"evaluate: {took:.2f} s wall, {cpu:.2f} s CPU; process peak RSS {rss:.0f} MiB{traced}")
    print(
        f"  {plan.summary.images_deleted} manifests ({plan.summary.tags_deleted} tags) to "
        f"delete, {plan.summary.bytes_reclaimable / 2**30:.1f} GiB reclaimable"
    )

    t0 = time.perf_counter()
    text = to_json(plan)
    print(f"to_json: {time.perf_counter() - t0:.2f} s ({len(text) / 2**20:.0f} MiB)")
    t0 = time.perf_counter()
    render_text(plan, now=NOW)
    print(f"render_text: {time.perf_counter() - t0:.2f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS at the end: {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
