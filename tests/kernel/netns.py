"""Low-level network-namespace helpers: bounded commands, namespace lifetime.

This module owns every command the kernel tests run. Nothing here touches the
root network namespace's configuration: commands run through
``ip netns exec NS`` (:func:`run`) or ``ip -n NS`` (:func:`ip`); the only
root-namespace commands are ``ip netns add/del/pids``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import cache
from types import TracebackType

__all__ = [
    "PREFIX",
    "REQUIRED_BINARIES",
    "CommandError",
    "Namespace",
    "delete_namespace",
    "ip",
    "kernel_tests_available",
    "list_namespaces",
    "namespace_pids",
    "new_run_token",
    "run",
]

PREFIX = "egrt-"
DEFAULT_TIMEOUT = 10.0
REQUIRED_BINARIES = (
    "ip",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
    "iptables-legacy",
    "iptables-legacy-save",
    "iptables-legacy-restore",
    "ip6tables-legacy",
    "ip6tables-legacy-save",
    "ip6tables-legacy-restore",
    "ipset",
    "nft",
    "bridge",  # vxlan flood entries
    "sysctl",
    "conntrack",  # reset between tests
)

# Names created by this process and not yet deleted; the atexit hook removes
# leftovers when a caller forgot (or could not reach) its own cleanup.
_LIVE: set[str] = set()


class CommandError(RuntimeError):
    """A command failed or timed out; carries everything needed to debug it."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        timeout: float | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timeout is not None
        status = f"timed out after {timeout}s" if timeout is not None else f"rc={returncode}"
        super().__init__(
            f"command {' '.join(self.argv)!r} failed: {status}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _exec(argv: Sequence[str], input: str | None, timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(argv),
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, _text(exc.stdout), _text(exc.stderr), timeout=timeout) from None
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def run(
    ns: str,
    *argv: str,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside namespace ``ns`` (``ip netns exec``), bounded by ``timeout``.

    Raises :class:`CommandError` on timeout, and on a non-zero exit when ``check``.
    """
    if not ns:
        raise ValueError("a namespace name is required")
    if not argv:
        raise ValueError("no command given")
    return _exec(("ip", "netns", "exec", ns, *argv), input, timeout, check)


def ip(
    ns: str,
    *args: str,
    input: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``ip -n NS ARGS`` (cheaper than ``ip netns exec``, same confinement)."""
    if not ns:
        raise ValueError("a namespace name is required")
    return _exec(("ip", "-n", ns, *args), input, timeout, check)


def stop_process(proc: subprocess.Popen[str]) -> None:
    """Terminate a process a test started (killed if it lingers past 5 s) and close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def list_namespaces() -> list[str]:
    """Names of all network namespaces known to ``ip netns``."""
    out = _exec(("ip", "netns", "list"), None, DEFAULT_TIMEOUT, True).stdout
    # Lines look like "name" or "name (id: 3)".
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def new_run_token() -> str:
    """A short token unique enough to keep parallel runs' namespaces apart."""
    return f"{os.getpid() & 0xFF:02x}{secrets.token_hex(2)}"


def namespace_pids(name: str) -> list[int]:
    """Pids of processes inside namespace ``name`` (never our own)."""
    proc = _exec(("ip", "netns", "pids", name), None, DEFAULT_TIMEOUT, False)
    if proc.returncode != 0:
        return []
    me = os.getpid()
    return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != me]


def _kill_all(name: str, grace: float = 2.0) -> None:
    pids = namespace_pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.05)
            pids = namespace_pids(name)
        if not pids:
            return


def delete_namespace(name: str) -> None:
    """Kill every process inside ``name`` and delete it; no-op if already gone."""
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to delete namespace {name!r} not created by us")
    _kill_all(name)
    last: CommandError | None = None
    for _ in range(20):
        if name not in list_namespaces():
            _LIVE.discard(name)
            return
        try:
            _exec(("ip", "netns", "del", name), None, DEFAULT_TIMEOUT, True)
        except CommandError as exc:  # e.g. EBUSY while a process is exiting
            last = exc
            time.sleep(0.1)
    if name in list_namespaces():
        raise last or RuntimeError(f"could not delete namespace {name}")
    _LIVE.discard(name)


class Namespace:
    """A network namespace named ``egrt-<token>-<role>``, deleted on exit.

    Use as a context manager, or call :meth:`create` / :meth:`delete`
    yourself (an atexit hook deletes any this process leaves behind).
    """

    def __init__(self, role: str, token: str | None = None) -> None:
        self.role = role
        self.token = token or new_run_token()
        self.name = f"{PREFIX}{self.token}-{role}"
        self.created = False

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def create(self) -> Namespace:
        _exec(("ip", "netns", "add", self.name), None, DEFAULT_TIMEOUT, True)
        _LIVE.add(self.name)
        self.created = True
        # Loopback is down in a fresh namespace; everything expects it up.
        ip(self.name, "link", "set", "lo", "up")
        return self

    def delete(self) -> None:
        if self.created:
            delete_namespace(self.name)
            self.created = False

    def run(
        self,
        *argv: str,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(self.name, *argv, input=input, timeout=timeout, check=check)

    def ip(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return ip(self.name, *args, input=input, timeout=timeout, check=check)

    def __enter__(self) -> Namespace:
        try:
            return self.create()
        except BaseException:
            self.delete()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.delete()


@atexit.register
def _cleanup_leftovers() -> None:
    for name in sorted(_LIVE):
        try:
            delete_namespace(name)
        except Exception as exc:
            print(f"egress-rules kernel tests: could not delete {name}: {exc}", file=sys.stderr)


@cache
def kernel_tests_available() -> tuple[bool, str]:
    """Whether this machine can run the namespace-based tests, and why not.

    Needs Linux, root, the tools in :data:`REQUIRED_BINARIES`, and a kernel that
    lets us create a namespace with veth, bridge and vxlan links in it.
    """
    if not sys.platform.startswith("linux"):
        return False, f"kernel tests need Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "kernel tests need root (network namespaces, iptables)"
    missing = [b for b in REQUIRED_BINARIES if shutil.which(b) is None]
    if missing:
        return False, f"kernel tests need these binaries on PATH: {', '.join(missing)}"
    ns = Namespace("check")
    try:
        ns.create()
        ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ns.ip("link", "add", "br0", "type", "bridge")
        ns.ip("link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789")
        ns.run("iptables", "-w", "5", "-t", "nat", "-S")
        ns.run("nft", "list", "ruleset")
    except (CommandError, OSError) as exc:
        return False, f"network namespaces unusable: {exc}"
    finally:
        with contextlib.suppress(CommandError, OSError, RuntimeError):
            ns.delete()
    return True, ""
