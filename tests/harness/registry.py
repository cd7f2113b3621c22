"""A real registry process (distribution 2.8 or 3.x) on a free 127.0.0.1 port, for tests.

`registry_kinds()` names the registries of the test matrix (docs/registries.md): Debian's
distribution 2.8, and distribution 3.x built by `make go-tools` into `.tools/bin`.

Writes its own config (filesystem storage in a temporary folder, access log on), starts, stops,
kills and garbage-collects it. It binds loopback only and never leaves a process behind.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import yaml

from tests.harness.loopback import Started

__all__ = [
    "ENV_BINARY",
    "AccessLogEntry",
    "AuthRegistry",
    "CraneRegistry",
    "RegistryHarnessError",
    "RegistryKind",
    "RegistryProcess",
    "find_registry_binary",
    "htpasswd_entry",
    "live_processes",
    "registry_kinds",
    "tool_binary",
]

ENV_BINARY = "RETENTION_REGISTRY_BIN"
"""Environment variable naming the registry binary; it wins over PATH."""

_LOOPBACK = "127.0.0.1"

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"
"""Where `make go-tools` installs the pinned Go tools (distribution 3.x, regctl, oras, ...)."""

# Every process this module started and has not reaped yet: the atexit safety net kills them.
_LIVE: set[subprocess.Popen[bytes]] = set()


class RegistryHarnessError(RuntimeError):
    """The registry process could not be started, stopped or garbage-collected."""


def find_registry_binary() -> str | None:
    """Path of the registry binary: `$RETENTION_REGISTRY_BIN`, else `docker-registry` or
    `registry` on PATH; None when there is none (or the variable names no executable)."""
    named = os.environ.get(ENV_BINARY)
    if named:
        found = shutil.which(named)
        return str(Path(found).resolve()) if found else None
    for name in ("docker-registry", "registry"):
        found = shutil.which(name)
        if found:
            return found
    return None


def tool_binary(name: str) -> str | None:
    """A tool `make go-tools` built (`registry3`, `regctl`, `oras`, `cosign`):
    `$RETENTION_<NAME>_BIN` wins, then `.tools/bin/<name>`; None when there is none."""
    named = os.environ.get(f"RETENTION_{name.upper()}_BIN")
    candidate = named or str(TOOLS_BIN / name)
    found = shutil.which(candidate)
    return str(Path(found).resolve()) if found else None


@dataclass(frozen=True, slots=True)
class RegistryKind:
    """One registry of the matrix: its binary (None when missing, with `missing` saying why)
    and what its offline garbage collector does, which no HTTP probe can show."""

    id: str
    binary: str | None
    missing: str = ""
    gc_untagged_drops_index_children: bool = False
    """`garbage-collect --delete-untagged` also deletes the platform manifests of a tagged
    index (2.8: registry-facts 1.9; fixed in 3.x)."""

    def version(self) -> str:
        """What `<binary> --version` prints, e.g. `... v3.1.2+unknown` (`missing` if none)."""
        if self.binary is None:
            return "missing"
        done = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return (done.stdout or done.stderr).strip().split()[-1] if done.stdout else "unknown"


def registry_kinds() -> list[RegistryKind]:
    """The matrix, in order: distribution 2.8 (Debian) and distribution 3.x (`make go-tools`)."""
    legacy = find_registry_binary()
    modern = tool_binary("registry3")
    return [
        RegistryKind(
            "distribution-2.8",
            legacy,
            "" if legacy else "no docker-registry binary (apt-get install docker-registry)",
            gc_untagged_drops_index_children=True,
        ),
        RegistryKind(
            "distribution-3",
            modern,
            "" if modern else f"no {TOOLS_BIN / 'registry3'} (make go-tools needs Go)",
        ),
    ]


def htpasswd_entry(user: str, password: str) -> str:
    """One `user:bcrypt-hash` line for an htpasswd file (distribution accepts bcrypt only).

    Uses the `bcrypt` package (the project's test extra); falls back to apache2-utils'
    `htpasswd -B`. Cost 4, the minimum: the registry re-hashes on every request, and these are
    throw-away test passwords.
    """
    if ":" in user or "\n" in user or "\n" in password:
        raise ValueError(f"user name or password not allowed in htpasswd: {user!r}")
    try:
        import bcrypt
    except ImportError:
        tool = shutil.which("htpasswd")
        if tool is None:
            raise RegistryHarnessError(
                "neither the bcrypt package (pip install -e '.[test]') nor the htpasswd "
                "binary (apt-get install apache2-utils) is installed"
            ) from None
        done = subprocess.run(
            [tool, "-nbB", "-C", "4", user, password],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{user}:{hashed}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `extra` replaces."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _child_env() -> dict[str, str]:
    # distribution lets REGISTRY_* variables override the config file (REGISTRY_HTTP_ADDR could
    # bind another interface): the child sees none of them.
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One request from the registry's access log (Apache combined format)."""

    method: str
    path: str
    status: int
    size: int
    user: str | None
    user_agent: str


@dataclass(frozen=True, slots=True)
class AuthRegistry:
    """A registry behind htpasswd basic auth, with the credentials of its first user."""

    registry: RegistryProcess
    username: str
    password: str

    @property
    def url(self) -> str:
        return self.registry.url

    @property
    def auth(self) -> tuple[str, str]:
        """`(username, password)`, as `requests` and `Pusher(auth=...)` take it."""
        return (self.username, self.password)

    def __repr__(self) -> str:  # never print the password, even in test output
        return f"AuthRegistry({self.registry.url}, username={self.username!r})"


class RegistryProcess(Started):
    """A `docker-registry serve` child process with its own config, storage and log.

    Use as a context manager (starts on enter, stops and cleans up on exit) or call
    `start()` / `close()`. The port is chosen once and kept across restarts.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        root: Path | str | None = None,
        auth: Literal["htpasswd"] | None = None,
        users: Mapping[str, str] | None = None,
        delete_enabled: bool = True,
        readonly: bool = False,
        extra_config: Mapping[str, Any] | None = None,
        port: int | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        found = binary or find_registry_binary()
        if found is None:
            raise RegistryHarnessError(
                f"no registry binary: install docker-registry or set {ENV_BINARY}"
            )
        if auth not in (None, "htpasswd"):
            raise ValueError(f"auth must be None or 'htpasswd', not {auth!r}")
        if auth == "htpasswd" and not users:
            raise ValueError("auth='htpasswd' needs users={'name': 'password'}")
        self.binary = found
        self.auth = auth
        self.users: dict[str, str] = dict(users or {})
        self.delete_enabled = delete_enabled
        self.readonly = readonly
        self.extra_config: dict[str, Any] = copy.deepcopy(dict(extra_config or {}))
        self.start_timeout = start_timeout
        self._owns_root = root is None
        self._root = Path(tempfile.mkdtemp(prefix="retention-registry-") if root is None else root)
        self._root.mkdir(parents=True, exist_ok=True)
        self.storage_dir.mkdir(exist_ok=True)
        self._port_fixed = port is not None
        self._port = port if port is not None else _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._closed = False

    # -- paths and addresses -------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Folder holding the config, the storage, the log and the htpasswd file."""
        return self._root

    @property
    def storage_dir(self) -> Path:
        """Filesystem storage root (`storage.filesystem.rootdirectory`)."""
        return self._root / "storage"

    @property
    def config_path(self) -> Path:
        return self._root / "config.yml"

    @property
    def log_path(self) -> Path:
        """Registry stdout+stderr: logrus lines and access-log lines, appended across restarts."""
        return self._root / "registry.log"

    @property
    def htpasswd_path(self) -> Path:
        return self._root / "htpasswd"

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:40123` (no trailing slash)."""
        return f"http://{_LOOPBACK}:{self._port}"

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`, as used in image references."""
        return f"{_LOOPBACK}:{self._port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- configuration -------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The configuration that `start()` writes, `extra_config` merged in."""
        base: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": self.delete_enabled},
                "maintenance": {
                    "uploadpurging": {"enabled": False},
                    "readonly": {"enabled": self.readonly},
                },
            },
            "http": {
                "addr": f"{_LOOPBACK}:{self._port}",
                # A fixed secret keeps upload state valid across restarts of one instance.
                "secret": self._secret(),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.auth == "htpasswd":
            base["auth"] = {
                "htpasswd": {"realm": "retention-test", "path": str(self.htpasswd_path)}
            }
        merged = _merge(base, self.extra_config)
        addr = str(merged.get("http", {}).get("addr", ""))
        if addr != f"{_LOOPBACK}:{self._port}":
            raise ValueError(f"http.addr must stay {_LOOPBACK}:{self._port}, got {addr!r}")
        return merged

    def _secret(self) -> str:
        path = self._root / "http-secret"
        if not path.exists():
            path.write_text(secrets.token_hex(16))
        return path.read_text()

    def _write_files(self) -> None:
        if self.auth == "htpasswd":
            lines = [htpasswd_entry(user, pw) for user, pw in sorted(self.users.items())]
            self.htpasswd_path.write_text("\n".join(lines) + "\n")
        text = yaml.safe_dump(self.config(), sort_keys=False)
        self.config_path.write_text(text)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Start the registry and wait until GET /v2/ answers 200 or 401."""
        if self._closed:
            raise RegistryHarnessError("this RegistryProcess was closed")
        if self.running:
            return
        attempts = 1 if (self._port_fixed or self._started_once) else 3
        for attempt in range(attempts):
            self._write_files()
            mark = self.log_mark()
            self._spawn()
            try:
                self._wait_ready(self.start_timeout if timeout is None else timeout)
            except RegistryHarnessError:
                lost_port = "address already in use" in self._log_since(mark)
                self._reap(signal.SIGKILL, 5.0)
                if lost_port and attempt + 1 < attempts:
                    # Another process took the free port between probing and binding.
                    self._port = _free_port()
                    continue
                raise
            self._started_once = True
            return

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env(),
                start_new_session=True,
            )
        self._proc = proc
        _LIVE.add(proc)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise RegistryHarnessError(
                    f"registry exited with code {code} while starting on {self.url}\n"
                    f"config: {self.config_path}\n--- log tail ---\n{self.log_tail()}"
                )
            try:
                status = requests.get(f"{self.url}/v2/", timeout=1.0).status_code
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status in (200, 401):
                    return
                last = f"GET /v2/ answered {status}"
            if time.monotonic() >= deadline:
                raise RegistryHarnessError(
                    f"registry on {self.url} not ready after {timeout:.0f}s ({last})\n"
                    f"config: {self.config_path}\n--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _reap(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10.0)
        _LIVE.discard(proc)
        self._proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL after `timeout` seconds; a no-op when not running."""
        self._reap(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (storage stays as the crash left it)."""
        self._reap(signal.SIGKILL, 0.0)

    def restart(self, *, readonly: bool | None = None, delete_enabled: bool | None = None) -> None:
        """Stop, optionally change read-only / delete mode, start again on the same port."""
        self.stop()
        if readonly is not None:
            self.readonly = readonly
        if delete_enabled is not None:
            self.delete_enabled = delete_enabled
        self.start()

    def garbage_collect(self, delete_untagged: bool = False, *, dry_run: bool = False) -> str:
        """Run `garbage-collect` on the stopped registry, then start it again if it was running
        (same port, same storage, fresh blob-descriptor cache). Returns the collector's output.

        Distribution's GC is stop-the-world (registry-facts 1.9); `delete_untagged` on 2.8 also
        deletes the platform manifests of tagged indexes. On storage that never held a
        repository, 2.8 exits 1 ("Path not found: /docker/registry/v2/repositories"); there is
        nothing to collect then, so this returns without running it.
        """
        if not (self.storage_dir / "docker" / "registry" / "v2" / "repositories").is_dir():
            return "no repositories: nothing to collect\n"
        was_running = self.running
        self.stop()
        self._write_files()
        command = [self.binary, "garbage-collect"]
        if delete_untagged:
            command.append("--delete-untagged")
        if dry_run:
            command.append("--dry-run")
        command.append(str(self.config_path))
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=_child_env(),
                timeout=300,
                check=False,
            )
        finally:
            if was_running:
                self.start()
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise RegistryHarnessError(
                f"{' '.join(command)} exited with {done.returncode}:\n{output[-4000:]}"
            )
        return output

    def close(self) -> None:
        """Stop the process; remove the folder if this object created it."""
        self.stop()
        self._closed = True
        if self._owns_root:
            shutil.rmtree(self._root, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RegistryProcess {self.url} {state} root={self._root}>"

    # -- observation ---------------------------------------------------------------------------

    def storage_bytes(self) -> int:
        """Sum of the sizes of all files under the storage root."""
        total = 0
        for folder, _dirs, files in os.walk(self.storage_dir):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(folder, name)).st_size
        return total

    def blob_bytes(self) -> int:
        """Bytes of blob data (layers, configs, manifests) under the storage root: what a plan's
        `bytes_reclaimable` counts. Link files (71 bytes each) are left out: distribution 3.x's
        garbage collection also removes links that 2.8 leaves, which is not blob data."""
        blobs = self.storage_dir / "docker" / "registry" / "v2" / "blobs"
        total = 0
        for folder, _dirs, files in os.walk(blobs):
            for name in files:
                if name == "data":
                    with contextlib.suppress(FileNotFoundError):
                        total += os.lstat(os.path.join(folder, name)).st_size
        return total

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_mark(self) -> int:
        """Current size of the log; pass it as `since` to look only at later lines."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, mark: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(mark)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def access_log(self, since: int = 0) -> list[AccessLogEntry]:
        """Requests the registry logged after byte offset `since` (see `log_mark()`).

        The registry writes an access line just after it sends the response, so a line can
        trail the client by a few milliseconds: use `wait_for_requests` to count reliably.
        """
        entries = []
        for line in self._log_since(since).splitlines():
            match = _ACCESS_LINE.match(line)
            if match is None:
                continue
            size = match["size"]
            user = match["user"]
            entries.append(
                AccessLogEntry(
                    method=match["method"],
                    path=match["path"],
                    status=int(match["status"]),
                    size=0 if size == "-" else int(size),
                    user=None if user == "-" else user,
                    user_agent=match["agent"],
                )
            )
        return entries

    def wait_for_requests(
        self, since: int, count: int, timeout: float = 5.0
    ) -> list[AccessLogEntry]:
        """Access-log entries after `since`, once at least `count` are there (or on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.access_log(since)
            if len(entries) >= count or time.monotonic() >= deadline:
                return entries
            time.sleep(0.01)


class CraneRegistry(Started):
    """go-containerregistry's registry (`crane registry serve`, `make go-tools`) on a free
    127.0.0.1 port, blobs in a temporary `--disk` folder, manifests in memory.

    The tag-deleting registry of the untag tests (docs/registries.md): `DELETE
    /v2/<name>/manifests/<tag>` answers 202 and removes that tag alone. It has no GC, no auth,
    no access log and keeps nothing across a restart, so it stays out of the 2.8/3.x matrix.
    """

    def __init__(self, binary: str, *, start_timeout: float = 15.0) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self._root = Path(tempfile.mkdtemp(prefix="retention-crane-"))
        self._port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{_LOOPBACK}:{self._port}"

    @property
    def host(self) -> str:
        return f"{_LOOPBACK}:{self._port}"

    @property
    def log_path(self) -> Path:
        return self._root / "crane.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start it and wait until GET /v2/ answers 200."""
        (self._root / "disk").mkdir(exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    "registry",
                    "serve",
                    "--address",
                    f"{_LOOPBACK}:{self._port}",
                    "--disk",
                    str(self._root / "disk"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={k: v for k, v in os.environ.items() if k != "PORT"},
                start_new_session=True,
            )
        _LIVE.add(self._proc)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.running:
                raise RegistryHarnessError(
                    f"crane registry exited while starting on {self.url}:\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v2/", timeout=1.0).status_code == 200:
                    return
            if time.monotonic() >= deadline:
                raise RegistryHarnessError(f"crane registry on {self.url} not ready")
            time.sleep(0.05)

    def close(self) -> None:
        """SIGTERM by pid (SIGKILL after 10 s), then remove its folder."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10.0)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10.0)
            _LIVE.discard(proc)
            self._proc = None
        shutil.rmtree(self._root, ignore_errors=True)


def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
        _LIVE.discard(proc)


atexit.register(_kill_leftovers)


def live_processes() -> list[int]:
    """Pids of registry processes this module started and has not reaped (for leak checks)."""
    return sorted(p.pid for p in _LIVE if p.poll() is None)
