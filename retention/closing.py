"""The one `with x:` → `x.close()` base of the objects that hold a resource (the digest cache,
the journal, the registry client). Pure: it imports nothing of ours.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """`with x:` gives `x` and, however the block ends, calls `x.close()`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
