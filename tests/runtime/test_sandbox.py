"""The worker sandbox, probed from inside: each case forks, confines the child, and reports back.

Confinement is irreversible, so it never happens in the pytest process itself. A child sends a
pickled dict through a pipe and leaves with ``os._exit``; the parent asserts on it (and on the
wait status, for limits that kill).
"""

from __future__ import annotations

import errno
import os
import pickle
import resource
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plughub.runtime.worker import _sandbox as sandbox
from plughub.runtime.worker._sandbox import (
    DEFAULT_ENV_ALLOW,
    SandboxError,
    SandboxPolicy,
    SandboxReport,
    apply,
    child_environment,
    landlock_abi,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux-only")

ABI = landlock_abi()
needs_landlock = pytest.mark.skipif(ABI == 0, reason="kernel without Landlock")
MiB = 1 << 20


def in_child(probe: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Run ``probe`` in a forked child; return (wait status, what it returned or raised)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(r)
            signal.alarm(20)  # a hung probe must not hang the suite
            payload = probe()
        except BaseException:
            payload = {"child_error": traceback.format_exc()}
            code = 1
        try:
            os.write(w, pickle.dumps(payload))
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    result: dict[str, Any] = pickle.loads(data) if data else {}
    assert "child_error" not in result, result.get("child_error")
    return status, result


def attempt(fn: Callable[[], object]) -> object:
    """The value, or ``(exception type name, errno)`` if ``fn`` raised."""
    try:
        return fn()
    except OSError as e:
        return (type(e).__name__, e.errno)
    except Exception as e:
        return (type(e).__name__, None)


# -- network -----------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Any:
    srv = socket.create_server(("127.0.0.1", 0))
    yield srv
    srv.close()


def _connect_tcp(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def _send_udp(port: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return s.sendto(b"x", ("127.0.0.1", port))


def _connect_unix(address: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(address)
        return "connected"


def test_no_network_blocks_tcp_and_unix_sockets(listener: socket.socket, tmp_path: Path) -> None:
    port = listener.getsockname()[1]
    path_sock = socket.socket(socket.AF_UNIX)
    path_sock.bind(str(tmp_path / "host.sock"))
    path_sock.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0plughub-test-{os.getpid()}")
    abstract.listen()
    try:

        def probe() -> dict[str, Any]:
            report = apply(SandboxPolicy(network=False))
            a, b = socket.socketpair()  # in-process pairs (asyncio's self-pipe) keep working
            a.close()
            b.close()
            return {
                "report": report,
                "tcp": attempt(lambda: _connect_tcp(port)),
                "udp": attempt(lambda: _send_udp(port)),
                "unix_path": attempt(lambda: _connect_unix(str(tmp_path / "host.sock"))),
                "unix_abstract": attempt(lambda: _connect_unix(f"\0plughub-test-{os.getppid()}")),
            }

        _, out = in_child(probe)
    finally:
        path_sock.close()
        abstract.close()
    report: SandboxReport = out["report"]
    if report.network_isolated.startswith("none"):
        pytest.skip(f"no network isolation on this kernel: {report.network_isolated}")
    assert out["tcp"] in (("PermissionError", errno.EACCES), ("OSError", errno.ENETUNREACH))
    if report.network_isolated == "netns":
        assert out["udp"] == ("OSError", errno.ENETUNREACH)
    # netns: the host's abstract socket namespace is out of sight; seccomp: no AF_UNIX socket.
    assert out["unix_abstract"] in (
        ("PermissionError", errno.EPERM),
        ("ConnectionRefusedError", errno.ECONNREFUSED),
    )
    if "seccomp: socket(AF_UNIX) and io_uring_setup denied" not in report.details:
        pytest.skip(f"pathname Unix sockets stay reachable here: {report.details}")
    assert out["unix_path"] == ("PermissionError", errno.EPERM)


def test_network_allowed_connects(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    def probe() -> dict[str, Any]:
        report = apply(SandboxPolicy(network=True))
        return {"report": report, "tcp": attempt(lambda: _connect_tcp(port))}

    _, out = in_child(probe)
    assert out["tcp"] == "connected"
    assert out["report"].network_isolated == "none: network allowed by policy"


@needs_landlock
def test_landlock_is_the_network_fallback(listener: socket.socket) -> None:
    if ABI < 4:
        pytest.skip(f"Landlock ABI {ABI} has no network rules (needs 4)")
    port = listener.getsockname()[1]

    def probe() -> dict[str, Any]:
        def no_namespaces(flags: int) -> None:
            raise OSError(errno.EPERM, "Operation not permitted")

        sandbox._unshare = no_namespaces  # this child only: as if unprivileged, no userns
        report = apply(SandboxPolicy(network=False))
        return {"report": report, "tcp": attempt(lambda: _connect_tcp(port))}

    _, out = in_child(probe)
    assert out["report"].network_isolated == "landlock"
    assert out["tcp"] == ("PermissionError", errno.EACCES)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged uid")
def test_unprivileged_worker_gets_a_user_namespace(listener: socket.socket) -> None:
    port = listener.getsockname()[1]

    def probe() -> dict[str, Any]:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        sandbox._prctl(4, 1)  # PR_SET_DUMPABLE, reset by setuid(); an exec'ed worker has it
        report = apply(SandboxPolicy(network=False))
        return {"report": report, "tcp": attempt(lambda: _connect_tcp(port)), "uid": os.getuid()}

    _, out = in_child(probe)
    report = out["report"]
    if report.network_isolated.startswith("none"):
        pytest.skip(f"no isolation for an unprivileged process here: {report.network_isolated}")
    assert out["tcp"] != "connected"
    assert out["uid"] == 65534  # the id map kept our own uid
    if report.network_isolated == "netns":
        assert "network namespace inside a new user namespace" in report.details


# -- filesystem ----------------------------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text()


def _append(path: Path) -> str:
    with path.open("a") as f:
        f.write("x")
    return "written"


@needs_landlock
def test_filesystem_grants(tmp_path: Path) -> None:
    secret = tmp_path / "secret"  # stands for ~/.ssh
    secret.mkdir()
    (secret / "id_ed25519").write_text("PRIVATE")
    hostdata = tmp_path / "hostdata"
    hostdata.mkdir()
    (hostdata / "private.txt").write_text("host only")
    (hostdata / "shared.txt").write_text("shared")
    code = tmp_path / "code"
    code.mkdir()
    (code / "plugin.py").write_text("VALUE = 1\n")
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "out.log"
    log.write_text("")
    fresh = next(m for m in ("fractions", "statistics", "wave", "colorsys") if m not in sys.modules)
    root_probe = Path("/root/.ssh") if Path("/root/.ssh").is_dir() else Path("/root")

    def probe() -> dict[str, Any]:
        report = apply(
            SandboxPolicy(
                code_dir=str(code),
                data_dir=str(data),
                read_paths=(str(hostdata / "shared.txt"),),  # a file: only file rights apply
                write_paths=(str(log),),
            )
        )

        def data_roundtrip() -> str:
            (data / "sub").mkdir()
            (data / "sub" / "f.txt").write_text("ok")
            (data / "sub" / "f.txt").rename(data / "g.txt")
            return (data / "g.txt").read_text()

        return {
            "report": report,
            "secret_read": attempt(lambda: _read(secret / "id_ed25519")),
            "secret_list": attempt(lambda: os.listdir(secret)),
            "hostdata_read": attempt(lambda: _read(hostdata / "private.txt")),
            "shared_read": attempt(lambda: _read(hostdata / "shared.txt")),
            "code_read": attempt(lambda: _read(code / "plugin.py")),
            "code_write": attempt(lambda: _append(code / "plugin.py")),
            "code_create": attempt(lambda: _append(code / "new.py")),
            "data": attempt(data_roundtrip),
            "log_write": attempt(lambda: _append(log)),
            "import_stdlib": attempt(lambda: __import__(fresh).__name__),
            "root_list": attempt(lambda: os.listdir(root_probe)),
            "tmp_list": attempt(lambda: os.listdir("/tmp")),
            "shadow": attempt(lambda: _read(Path("/etc/shadow"))),
            "passwd": attempt(lambda: bool(_read(Path("/etc/passwd")))),
            "devnull": attempt(lambda: _append(Path("/dev/null"))),
        }

    _, out = in_child(probe)
    denied = ("PermissionError", errno.EACCES)
    assert out["report"].filesystem == f"landlock abi {ABI}"
    assert out["secret_read"] == denied
    assert out["secret_list"] == denied
    assert out["hostdata_read"] == denied
    assert out["shared_read"] == "shared"
    assert out["code_read"] == "VALUE = 1\n"
    assert out["code_write"] == denied
    assert out["code_create"] == denied
    assert out["data"] == "ok"
    assert out["log_write"] == "written"
    assert out["import_stdlib"] == fresh  # the Python installation stays readable
    assert out["root_list"] == denied
    assert out["tmp_list"] == denied
    if Path("/etc/shadow").exists():
        assert out["shadow"] == denied  # /etc is granted entry by entry, not as a whole
    assert out["passwd"] is True
    assert out["devnull"] == "written"


def test_refuses_to_run_with_other_threads() -> None:
    def probe() -> dict[str, Any]:
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        try:
            return {"result": attempt(lambda: apply(SandboxPolicy()))}
        finally:
            stop.set()
            t.join()

    _, out = in_child(probe)
    assert out["result"] == (SandboxError.__name__, None)


# -- rlimits -------------------------------------------------------------------------------------


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def test_memory_limit_raises_memoryerror() -> None:
    def probe() -> dict[str, Any]:
        # 256 MiB, or more if this process already maps nearly that much (big test sessions).
        limit = max(256 * MiB, _vm_size() + 128 * MiB)
        report = apply(SandboxPolicy(network=True, memory_bytes=limit))
        return {"report": report, "limit": limit, "alloc": attempt(lambda: len(bytearray(1 << 30)))}

    _, out = in_child(probe)
    assert out["report"].rlimits["memory_bytes"] == out["limit"]
    assert out["alloc"] == ("MemoryError", None)


def test_cpu_limit_kills_a_busy_loop() -> None:
    def probe() -> dict[str, Any]:
        apply(SandboxPolicy(network=True, cpu_seconds=1))
        while True:
            pass

    status, _ = in_child(probe)
    assert os.WIFSIGNALED(status), status
    assert os.WTERMSIG(status) in (signal.SIGXCPU, signal.SIGKILL)


def test_open_files_limit_and_no_way_back() -> None:
    def probe() -> dict[str, Any]:
        report = apply(SandboxPolicy(network=True, open_files=32))
        files = []
        result: object = "no error"
        try:
            for _ in range(64):
                files.append(open("/dev/null"))  # noqa: SIM115
        except OSError as e:
            result = e.errno
        finally:
            for f in files:
                f.close()
        raise_back = attempt(
            lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)) or "raised"
        )
        return {"report": report, "result": result, "raise_back": raise_back}

    _, out = in_child(probe)
    assert out["report"].rlimits["open_files"] == 32
    assert out["result"] == errno.EMFILE
    # Capabilities are gone, so even a root worker cannot lift its own limits.
    assert out["raise_back"] == ("ValueError", None)


def test_rlimit_never_exceeds_existing_hard_limit() -> None:
    def probe() -> dict[str, Any]:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
        report = apply(SandboxPolicy(network=True, open_files=5000))
        return {"report": report, "now": resource.getrlimit(resource.RLIMIT_NOFILE)}

    _, out = in_child(probe)
    assert out["report"].rlimits["open_files"] == 100
    assert out["now"] == (100, 100)


def test_file_size_limit(tmp_path: Path) -> None:
    def probe() -> dict[str, Any]:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        report = apply(SandboxPolicy(network=True, data_dir=str(tmp_path), file_size=4096))

        def write_big() -> int:
            with open(tmp_path / "big.bin", "wb", buffering=0) as f:
                return f.write(b"x" * 4096) + f.write(b"y")

        return {"report": report, "write": attempt(write_big)}

    _, out = in_child(probe)
    assert out["report"].rlimits["file_size"] == 4096
    assert out["write"] == ("OSError", errno.EFBIG)
    assert (tmp_path / "big.bin").stat().st_size == 4096


# -- policy, report, environment ----------------------------------------------------------------


def test_policy_from_json_and_report_dict() -> None:
    policy = SandboxPolicy(**{"read_paths": ["/a"], "write_paths": ["/b"], "network": True})
    assert policy.read_paths == ("/a",)
    assert policy.write_paths == ("/b",)
    hash(policy)
    report = SandboxReport("netns", "landlock abi 7", {"open_files": 32}, ("x",))
    assert report.to_dict() == {
        "network_isolated": "netns",
        "filesystem": "landlock abi 7",
        "rlimits": {"open_files": 32},
        "details": ["x"],
    }


def test_child_environment_drops_secrets() -> None:
    base = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "HOME": "/root",
        "OPENAI_API_KEY": "sk-1",
        "GITHUB_TOKEN": "ghp",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "DB_PASSWORD": "pw",
        "GOOGLE_APPLICATION_CREDENTIALS": "/x.json",
        "LC_SECRET": "sneaky",  # allowlisted by pattern, still a secret
        "SSH_AUTH_SOCK": "/tmp/agent",
        "PYTHONPATH": "/elsewhere",
    }
    env = child_environment(base, extra={"HOME": "/data/plugin", "PLUGIN_API_KEY": "granted"})
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C",
        "TZ": "UTC",
        "HOME": "/data/plugin",
        "PLUGIN_API_KEY": "granted",  # extra is the host's explicit grant: not filtered
    }
    assert child_environment(base, allow=("*",)).keys() == {
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "SSH_AUTH_SOCK",
        "PYTHONPATH",
    }
    assert "PATH" in DEFAULT_ENV_ALLOW
