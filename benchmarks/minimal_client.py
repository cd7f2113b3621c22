"""The yardstick: the least a concurrent Python client must do to learn every tag's image and
creation date, and nothing more.

Requests, exactly: 1 ping, the catalog pages, 1 tags/list per repository, 1 manifest GET per tag
(full Accept set), 1 GET per distinct index child, 1 config GET per distinct config digest.
`requests` + `ThreadPoolExecutor`, one Session whose connection pool is sized to the
concurrency, like the product. Work is pipelined: a repository's manifests are requested as
soon as its tag list arrives, a config as soon as the first manifest naming it arrives.

It checks nothing it need not (no digest verification, no retries, no cache): it is the floor.
Usage: python benchmarks/minimal_client.py URL [--concurrency 8]; prints a JSON summary.
Never imports `retention`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
    }
)
TIMEOUT = (5.0, 60.0)


class Walk:
    """One cold walk of a registry."""

    def __init__(self, url: str, concurrency: int, catalog_page: int = 1000) -> None:
        self.url = url.rstrip("/")
        self.catalog_page = catalog_page
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.pool = ThreadPoolExecutor(max_workers=concurrency)
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.pending = 0
        self.errors: list[BaseException] = []
        self.seen: set[str] = set()
        self.requests: Counter[str] = Counter()
        self.tags: dict[tuple[str, str], str] = {}  # (repo, tag) → manifest digest
        self.created: dict[str, str | None] = {}  # config digest → created

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.session.close()

    def _get(self, kind: str, url: str, accept: str | None = None) -> requests.Response:
        headers = {"Accept": accept} if accept else {}
        resp = self.session.get(url, headers=headers, timeout=TIMEOUT)
        with self.lock:
            self.requests[kind] += 1
        if resp.status_code != 200:
            raise RuntimeError(f"GET {url} answered {resp.status_code}")
        return resp

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self.lock:
            self.pending += 1
        self.pool.submit(self._run, fn, *args)

    def _run(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
        finally:
            with self.lock:
                self.pending -= 1
                if self.pending == 0:
                    self.idle.notify_all()

    def _first(self, digest: str) -> bool:
        with self.lock:
            if digest in self.seen:
                return False
            self.seen.add(digest)
            return True

    # -- the walk ----------------------------------------------------------------------------

    def catalog(self) -> list[str]:
        names: list[str] = []
        url: str | None = f"{self.url}/v2/_catalog?n={self.catalog_page}"
        while url is not None:
            resp = self._get("catalog", url)
            names.extend(resp.json()["repositories"] or [])
            link = resp.headers.get("Link")
            url = urljoin(url, link.split(";")[0].strip("<> ")) if link else None
        return names

    def list_tags(self, repo: str) -> None:
        resp = self._get("tags_list", f"{self.url}/v2/{repo}/tags/list")
        for tag in resp.json()["tags"] or []:
            self._submit(self.manifest, repo, tag, False)

    def manifest(self, repo: str, reference: str, by_digest: bool) -> None:
        kind = "manifest_by_digest" if by_digest else "manifest_by_tag"
        resp = self._get(kind, f"{self.url}/v2/{repo}/manifests/{reference}", MANIFEST_ACCEPT)
        doc = resp.json()
        if not by_digest:
            with self.lock:
                self.tags[(repo, reference)] = resp.headers["Docker-Content-Digest"]
        for child in doc.get("manifests") or []:
            if self._first(child["digest"]):
                self._submit(self.manifest, repo, child["digest"], True)
        config = doc.get("config")
        if config and config.get("mediaType") in CONFIG_TYPES and self._first(config["digest"]):
            self._submit(self.config, repo, config["digest"])

    def config(self, repo: str, digest: str) -> None:
        resp = self._get("blob", f"{self.url}/v2/{repo}/blobs/{digest}")
        created = json.loads(resp.content).get("created")
        with self.lock:
            self.created[digest] = created

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self._get("ping", f"{self.url}/v2/")
        repositories = self.catalog()
        for repo in repositories:
            self._submit(self.list_tags, repo)
        with self.lock:
            while self.pending:
                self.idle.wait()
        if self.errors:
            raise self.errors[0]
        return {
            "repositories": len(repositories),
            "tags": len(self.tags),
            "configs": len(self.created),
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "seconds": round(time.perf_counter() - started, 3),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    walk = Walk(args.url, args.concurrency)
    try:
        summary = walk.run()
    finally:
        walk.close()
    json.dump(summary, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
