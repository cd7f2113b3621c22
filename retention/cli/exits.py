"""Exit codes of the command line."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What `main` returns; 2 only ever means `plan --detailed-exitcode` found deletions."""

    OK = 0
    ERROR = 1
    CHANGES = 2  # plan --detailed-exitcode: deletions present
    PARTIAL = 3  # apply: only part of the plan was applied
