"""What every step of one apply shares: the worker pool, the first error that stops the run,
and the caller's request to stop. Once stopped, a run starts nothing new; what is in flight
finishes and is journaled, and a re-run resumes (docs/decisions.md, "Apply").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from retention.apply.outcomes import reason_of
from retention.errors import RegistryError, RetentionError, TransportError

_T = TypeVar("_T")
_R = TypeVar("_R")


class RunControl:
    """The pool, the stop state and the caller's `should_stop` of one run."""

    def __init__(self, concurrency: int, should_stop: Callable[[], bool] | None) -> None:
        self.concurrency = max(1, concurrency)
        self.should_stop = should_stop
        self.abort_error: RetentionError | None = None
        self._abort_lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="apply")

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[tuple[_T, _R]]:
        """`fn` over `items` on the pool, each item with its result, in the order given."""
        work = list(items)
        futures = [self.pool.submit(fn, item) for item in work]
        return [(item, f.result()) for item, f in zip(work, futures, strict=True)]

    def stopping(self) -> bool:
        """True once the run must start nothing new: an error stopped it, or the caller asked."""
        if self.abort_error is None and self.should_stop is not None and self.should_stop():
            self.abort(
                RetentionError(
                    "apply was asked to stop before it finished",
                    hint="run the same plan again to resume from the journal",
                )
            )
        return self.abort_error is not None

    def not_attempted(self) -> str | None:
        """The reason given to work not started because the run stopped, or None to go on."""
        if self.stopping() and self.abort_error is not None:
            return f"not attempted: {reason_of(self.abort_error)}"
        return None

    def stop_on_transport(self, exc: RegistryError) -> None:
        # Retries are exhausted: the registry is down or failing. Asking it about the remaining
        # entries would only repeat the wait for each; stop, and let a re-run resume.
        if isinstance(exc, TransportError):
            self.abort(exc)

    def abort(self, exc: RetentionError) -> None:
        """Stop the run with `exc`, unless an earlier error already stopped it."""
        with self._abort_lock:
            if self.abort_error is None:
                self.abort_error = exc

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
