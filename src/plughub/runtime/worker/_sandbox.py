"""Confine a worker process before any plugin code is imported.

Third-party plugins run in worker processes; ``apply`` is the worker's first act after start-up
and it cannot be undone. It uses only what an ordinary Linux process can ask of the kernel (no
helper binary, no cgroups), each layer optional, and returns a ``SandboxReport`` saying what was
actually enforced; the host shows it (``plughub info``) so an operator can see how confined each
worker really is.

Layers, in the order ``apply`` takes them:

1. **no_new_privs**: setuid binaries and file capabilities cannot hand privileges back; it is
   also what lets an unprivileged process use Landlock and seccomp.
2. **Process group**: the worker becomes its own process-group leader so a supervisor can kill
   it and everything it started with one ``os.killpg(pid, SIGKILL)`` (the answer to fork bombs
   here, since there are no cgroups). A plugin can leave the group with ``setsid()``; the group
   is a clean-up convenience, not a containment.
3. **Network** (``policy.network == False``): a fresh, empty network namespace
   (``unshare(CLONE_NEWNET)``, as root), else a user + network namespace (unprivileged, where
   user namespaces are allowed). The new namespace has only a loopback that is down: no TCP,
   UDP, ICMP or abstract Unix socket reaches the host. Without a namespace, Landlock ABI >= 4
   denies every TCP ``connect``/``bind`` (also added on top of a namespace); UDP and raw
   sockets are **not** covered then.
4. **Filesystem** (Landlock, ABI-aware): everything not granted below is denied for the rights
   the kernel can handle. Read-only (read, list, execute) beneath the Python installation, the
   ``sys.path`` directories, ``/usr``, ``/lib``, ``/lib64``, ``/bin``, ``/sbin``, ``/proc``, a
   curated list of ``/etc`` entries (not ``/etc`` as a whole: as root that would expose
   ``/etc/shadow`` and ``/etc/ssh`` host keys), ``/sys/devices/system/cpu``, the ``/dev`` nodes
   ``null`` (read-write), ``zero``, ``urandom``, ``random``, ``policy.code_dir`` and
   ``policy.read_paths``. Every right beneath ``policy.data_dir`` and ``policy.write_paths``.
   Never the home directory, ``/root``, ``/tmp`` or ``/var``. Landlock ABI >= 6 also scopes
   signals (the plugin cannot signal processes outside its sandbox) and, when the network is
   denied, abstract Unix sockets.
5. **seccomp** (network denied, x86_64/aarch64): ``socket(AF_UNIX)`` and ``io_uring_setup``
   fail with EPERM. Neither a namespace nor Landlock (through ABI 7) mediates ``connect()`` to
   a *pathname* Unix socket, and for a root worker ``/run/docker.sock`` would be a way out.
6. **rlimits** (``setrlimit``): address space, CPU seconds, open files, file size, processes.
   Process-wide and inherited by children; soft = hard (CPU: hard = soft + 1, so SIGXCPU comes
   first and SIGKILL a second later). Never raised above the current hard limit. Set after the
   steps above so a tight ``open_files`` or ``memory_bytes`` cannot starve the set-up itself.
7. **Capabilities**: all are dropped (effective, permitted, inheritable, ambient, bounding).
   Without this a root worker could simply raise its rlimits again.

Not enforced: reading ``/proc/<pid>/cmdline`` of other processes (``/proc`` is readable;
``environ``/``mem`` of processes outside the sandbox are not), the process count for uid 0 (the
kernel exempts root from ``RLIMIT_NPROC``, and counts it per uid system-wide otherwise), and
anything done through file descriptors opened before ``apply`` (inherited pipes, stdio).

Landlock, ``no_new_privs``, seccomp, capabilities and ``unshare`` act on the *calling thread*
only (Landlock through ABI 7 cannot confine sibling threads), so ``apply`` refuses to run in a
process that already has more than one thread.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import resource
import stat
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_ENV_ALLOW",
    "SandboxError",
    "SandboxPolicy",
    "SandboxReport",
    "apply",
    "child_environment",
    "landlock_abi",
]

# -- kernel constants (include/uapi/linux/landlock.h, linux/sched.h, linux/prctl.h) ---------------

_SYS_LANDLOCK_CREATE_RULESET = 444  # same number on every architecture
_SYS_LANDLOCK_ADD_RULE = 445
_SYS_LANDLOCK_RESTRICT_SELF = 446
_LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH = 1

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
# Rights that make sense on a file; a rule on a non-directory with any other bit is EINVAL.
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ_ONLY = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR

_NET_BIND_TCP = 1 << 0  # ABI 4
_NET_CONNECT_TCP = 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_O_PATH = getattr(os, "O_PATH", 0o10000000)

# seccomp (linux/seccomp.h, linux/filter.h, linux/audit.h)
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JGE_K = 0x35
_BPF_RET_K = 0x06
_X32_SYSCALL_BIT = 0x40000000
_AF_UNIX = 1
#: machine -> (AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup)
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, 41, 425),
    "aarch64": (0xC00000B7, 198, 425),
}

# -- system grants --------------------------------------------------------------------------------

#: Read-only system trees: shared libraries, interpreters, tools a plugin may execute.
_SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc")
#: What libc, Python's stdlib and TLS read from ``/etc``. Not the whole of ``/etc``: that holds
#: ``shadow``, ``ssh/`` host keys and ``ssl/private``, all readable by a root worker.
_ETC_READ = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "locale.alias",
    "nsswitch.conf",
    "passwd",
    "group",
    "hosts",
    "host.conf",
    "resolv.conf",
    "gai.conf",
    "services",
    "protocols",
    "networks",
    "mime.types",
    "os-release",
    "terminfo",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust",
)
_OPTIONAL_READ = ("/sys/devices/system/cpu",)
_DEV_READ = ("/dev/zero", "/dev/urandom", "/dev/random")
_DEV_READ_WRITE = ("/dev/null",)
#: Never granted, nor any ancestor, through ``sys.path`` (a stray ``/`` would open everything).
_PROTECTED = ("/root", "/home", "/tmp", "/var", "/etc", "/dev", "/run", "/sys")

#: Environment names a worker inherits by default; shell-style patterns are allowed.
DEFAULT_ENV_ALLOW: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "HOME",
    "TMPDIR",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
)
#: Substrings that mark a name as a secret; such names never pass the allowlist.
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


class SandboxError(RuntimeError):
    """``apply`` cannot confine this process without leaving part of it unconfined."""


@dataclass(frozen=True)
class SandboxPolicy:
    """What a worker may do; everything unset is denied (paths) or unlimited (limits).

    ``network``: may the plugin open network sockets at all. ``code_dir`` and ``read_paths``:
    read-only grants (directories or single files). ``data_dir`` and ``write_paths``: full
    access (the caller creates them; point ``HOME``/``TMPDIR`` there). A path that cannot be
    opened is not granted and is named in the report. Limits map to ``RLIMIT_AS``,
    ``RLIMIT_CPU``, ``RLIMIT_NOFILE``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``; ``memory_bytes`` is
    address space, so thread stacks count (a tight value shows up as "can't start new thread").
    ``processes`` is counted by Linux per real uid system-wide and not enforced at all for root:
    it only means something when each worker has its own uid. Fork bombs are otherwise
    contained by the supervisor killing the worker's process group.
    """

    network: bool = False
    read_paths: tuple[str, ...] = ()
    write_paths: tuple[str, ...] = ()
    code_dir: str | None = None
    data_dir: str | None = None
    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None
    processes: int | None = None
    file_size: int | None = None

    def __post_init__(self) -> None:
        # Policies arrive as JSON (lists, not tuples); keep the dataclass hashable.
        object.__setattr__(self, "read_paths", tuple(str(p) for p in self.read_paths))
        object.__setattr__(self, "write_paths", tuple(str(p) for p in self.write_paths))


@dataclass(frozen=True)
class SandboxReport:
    """What ``apply`` enforced.

    ``network_isolated``: ``"netns"`` (own empty network namespace), ``"landlock"`` (TCP
    connect/bind denied only), or ``"none: <why>"``. ``filesystem``: ``"landlock abi N"`` or
    ``"none: <why>"``. ``rlimits``: the soft limit set, keyed by policy field name.
    ``details``: further facts (scopes, capabilities, skipped paths, limits that do not bite).
    """

    network_isolated: str
    filesystem: str
    rlimits: dict[str, int]
    details: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, object]:
        return {
            "network_isolated": self.network_isolated,
            "filesystem": self.filesystem,
            "rlimits": dict(self.rlimits),
            "details": list(self.details),
        }


# -- libc -----------------------------------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)): 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    # A private handle, so the restype set here does not leak into other users of ctypes.
    global _libc_handle
    if _libc_handle is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int
        _libc_handle = lib
    return _libc_handle


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _prctl(option: int, arg2: int = 0) -> int:
    ulong = ctypes.c_ulong
    return int(_libc().prctl(ctypes.c_int(option), ulong(arg2), ulong(0), ulong(0), ulong(0)))


def _unshare(flags: int) -> None:
    """``unshare(2)`` (Python 3.11 has no ``os.unshare``); raises ``OSError`` on failure."""
    unshare = getattr(_libc(), "unshare", None)
    if unshare is None:
        raise OSError(errno.ENOSYS, "unshare is not available")
    _check(int(unshare(ctypes.c_int(flags))), "unshare")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        ret = _libc().syscall(
            ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
            ctypes.c_void_p(None),
            ctypes.c_size_t(0),
            ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError):
        return 0
    return max(int(ret), 0)


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


# -- environment ----------------------------------------------------------------------------------


def _is_secret(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in _SECRET_MARKERS)


def child_environment(
    base: Mapping[str, str],
    allow: Iterable[str] = DEFAULT_ENV_ALLOW,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment a worker starts with: allowlisted names from ``base``, then ``extra``.

    ``allow`` holds exact names or shell patterns (``LC_*``). A name containing KEY, TOKEN,
    SECRET, PASSWORD, PASSWD or CREDENTIAL is dropped even if allowlisted, so a broad pattern
    cannot leak the host's secrets. ``extra`` is taken as given, unfiltered: it is how the host
    hands a worker what it is entitled to (``HOME``/``TMPDIR`` pointing into ``data_dir``, or a
    credential granted to that plugin).
    """
    patterns = tuple(allow)
    env = {
        name: value
        for name, value in base.items()
        if not _is_secret(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }
    if extra:
        env.update(extra)
    return env


# -- rlimits --------------------------------------------------------------------------------------


def _apply_rlimits(policy: SandboxPolicy, details: list[str]) -> dict[str, int]:
    wanted = (
        ("memory_bytes", resource.RLIMIT_AS, policy.memory_bytes),
        ("cpu_seconds", resource.RLIMIT_CPU, policy.cpu_seconds),
        ("open_files", resource.RLIMIT_NOFILE, policy.open_files),
        ("processes", resource.RLIMIT_NPROC, policy.processes),
        ("file_size", resource.RLIMIT_FSIZE, policy.file_size),
    )
    applied: dict[str, int] = {}
    for name, which, value in wanted:
        if value is None:
            continue
        _, cur_hard = resource.getrlimit(which)

        def cap(n: int, hard: int = cur_hard) -> int:
            return n if hard == resource.RLIM_INFINITY else min(n, hard)

        soft = cap(max(int(value), 0))
        # CPU: SIGXCPU at the soft limit (catchable), SIGKILL one second later at the hard one.
        hard = cap(soft + 1) if which == resource.RLIMIT_CPU else soft
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as e:
            details.append(f"rlimit {name} not set: {e}")
            continue
        applied[name] = soft
        if soft < int(value):
            details.append(f"rlimit {name} capped at the existing hard limit {soft}")
    if policy.processes is not None and os.getuid() == 0:
        details.append("rlimit processes is not enforced for uid 0 (kernel exemption)")
    return applied


def _own_process_group(details: list[str]) -> None:
    try:
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
        details.append(f"process group {os.getpgrp()}")
    except OSError as e:
        details.append(f"process group unchanged: {e}")


# -- network --------------------------------------------------------------------------------------


def _write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _isolate_network(details: list[str]) -> str:
    """Move into an empty network namespace; return ``""`` or why that failed."""
    try:
        _unshare(_CLONE_NEWNET)
        return ""
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EACCES):
            return f"unshare(CLONE_NEWNET): {e.strerror}"
        first = e.strerror
    uid, gid = os.getuid(), os.getgid()
    try:
        _unshare(_CLONE_NEWUSER | _CLONE_NEWNET)
    except OSError as e:
        return f"unshare(CLONE_NEWNET): {first}; with CLONE_NEWUSER: {e.strerror}"
    details.append("network namespace inside a new user namespace")
    # Map our ids to themselves so files keep their owners; setgroups must be denied first.
    try:
        _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
        _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as e:
        # The namespaces exist regardless (the network is isolated); unmapped, the process
        # sees itself as the overflow uid, which only restricts it further.
        details.append(f"user namespace id map not written: {e.strerror}")
    return ""


# -- filesystem -----------------------------------------------------------------------------------


def _handled_fs(abi: int) -> int:
    handled = _FS_ABI1
    if abi >= 2:
        handled |= _FS_REFER
    if abi >= 3:
        handled |= _FS_TRUNCATE
    if abi >= 5:
        handled |= _FS_IOCTL_DEV
    return handled


def _too_broad(real: str) -> bool:
    """Whether granting ``real`` would also grant the home directory, ``/tmp``, ``/etc``, ..."""
    prefix = real.rstrip("/") + "/"
    home = os.path.realpath(os.path.expanduser("~"))
    return any(p == real or p.startswith(prefix) for p in (*_PROTECTED, home))


def _python_paths() -> list[str]:
    """The interpreter's own trees and ``sys.path``, minus entries that would grant too much."""
    entries = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]
    if sys.executable:
        entries.append(os.path.dirname(os.path.realpath(sys.executable)))
    out: list[str] = []
    for entry in entries:
        if not entry:  # "" means the current directory: never granted implicitly
            continue
        real = os.path.realpath(entry)
        if _too_broad(real):
            continue
        out.append(real)  # Landlock ties a rule to the inode, so the resolved path suffices
    return out


def _grants(policy: SandboxPolicy, handled: int) -> list[tuple[str, int, bool]]:
    """``(path, rights, required)``: required paths (the policy's) are reported when missing."""
    ro = _FS_READ_ONLY & handled
    rw = handled
    dev_rw = (_FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE) & handled
    grants: list[tuple[str, int, bool]] = []
    grants += [(p, ro, False) for p in _SYSTEM_READ + _OPTIONAL_READ + _DEV_READ]
    grants += [(os.path.join("/etc", p), ro, False) for p in _ETC_READ]
    grants += [(p, dev_rw, False) for p in _DEV_READ_WRITE]
    grants += [(p, ro, False) for p in _python_paths()]
    if policy.code_dir:
        grants.append((policy.code_dir, ro, True))
    grants += [(p, ro, True) for p in policy.read_paths]
    if policy.data_dir:
        grants.append((policy.data_dir, rw, True))
    grants += [(p, rw, True) for p in policy.write_paths]
    return grants


def _add_path_rule(ruleset_fd: int, path: str, rights: int) -> None:
    fd = os.open(path, _O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FS_FILE_RIGHTS
        attr = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        ret = _libc().syscall(
            ctypes.c_long(_SYS_LANDLOCK_ADD_RULE),
            ctypes.c_int(ruleset_fd),
            ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        )
        _check(int(ret), f"landlock_add_rule({path})")
    finally:
        os.close(fd)


def _landlock(
    policy: SandboxPolicy, abi: int, deny_tcp: bool, details: list[str]
) -> tuple[str, bool]:
    """Build and enforce one ruleset; return (filesystem status, whether TCP is denied)."""
    attr = _RulesetAttr(handled_access_fs=_handled_fs(abi))
    size = 8
    if abi >= 4:
        size = 16
        if deny_tcp:
            attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP  # no rule: all denied
    if abi >= 6:
        size = 24
        attr.scoped = _SCOPE_SIGNAL
        if not policy.network:
            attr.scoped |= _SCOPE_ABSTRACT_UNIX_SOCKET
    ruleset_fd = _check(
        int(
            _libc().syscall(
                ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET),
                ctypes.byref(attr),
                ctypes.c_size_t(size),
                ctypes.c_uint32(0),
            )
        ),
        "landlock_create_ruleset",
    )
    try:
        seen: set[tuple[str, int]] = set()
        for path, rights, required in _grants(policy, attr.handled_access_fs):
            if (path, rights) in seen:
                continue
            seen.add((path, rights))
            try:
                _add_path_rule(ruleset_fd, path, rights)
            except OSError as e:
                # Fail closed: a path that cannot be opened (missing, or not searchable for
                # this uid) is simply not granted; only the policy's own paths are worth a note.
                if required:
                    details.append(f"not granted ({e.strerror}): {path}")
        ret = _libc().syscall(
            ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)
        )
        _check(int(ret), "landlock_restrict_self")
    finally:
        os.close(ruleset_fd)
    if attr.scoped & _SCOPE_ABSTRACT_UNIX_SOCKET:
        details.append("landlock scope: abstract unix sockets")
    if attr.scoped & _SCOPE_SIGNAL:
        details.append("landlock scope: signals")
    return f"landlock abi {abi}", bool(attr.handled_access_net)


# -- seccomp ---------------------------------------------------------------------------------------


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _deny_unix_sockets() -> str:
    """Fail ``socket(AF_UNIX, ...)`` and ``io_uring_setup`` with EPERM; return ``""`` or why not.

    A network namespace and Landlock (ABI < 9) leave ``connect()`` to *pathname* Unix sockets
    open, and for a root worker ``/run/docker.sock`` or the system bus is a way out. New Unix
    sockets are refused instead; ``socketpair()`` (asyncio's self-pipe) and inherited sockets
    still work. io_uring is refused because its socket/connect operations bypass seccomp.
    Syscalls of a foreign ABI (x32, 32-bit) are refused as a whole, so they cannot bypass it.
    """
    arch = _SECCOMP_ARCH.get(os.uname().machine)
    if arch is None or sys.byteorder != "little":
        return f"no seccomp filter for {os.uname().machine}"
    audit_arch, nr_socket, nr_io_uring_setup = arch
    deny = _SECCOMP_RET_ERRNO | errno.EPERM
    program = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # 0: seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, audit_arch),  # 1: native ABI -> 3
        (_BPF_RET_K, 0, 0, deny),  # 2: foreign ABI
        (_BPF_LD_W_ABS, 0, 0, 0),  # 3: seccomp_data.nr
        (_BPF_JGE_K, 5, 0, _X32_SYSCALL_BIT),  # 4: x32 syscall -> 10
        (_BPF_JEQ_K, 4, 0, nr_io_uring_setup),  # 5: -> 10
        (_BPF_JEQ_K, 0, 2, nr_socket),  # 6: socket -> 7, else -> 9
        (_BPF_LD_W_ABS, 0, 0, 16),  # 7: low word of seccomp_data.args[0] (domain)
        (_BPF_JEQ_K, 1, 0, _AF_UNIX),  # 8: AF_UNIX -> 10
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW),  # 9
        (_BPF_RET_K, 0, 0, deny),  # 10
    ]
    filters = (_SockFilter * len(program))(*(_SockFilter(*insn) for insn in program))
    prog = _SockFprog(len=len(program), filter=filters)
    ret = _libc().prctl(
        ctypes.c_int(_PR_SET_SECCOMP),
        ctypes.c_ulong(_SECCOMP_MODE_FILTER),
        ctypes.byref(prog),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    try:
        _check(int(ret), "prctl(PR_SET_SECCOMP)")
    except OSError as e:
        return str(e)
    return ""


# -- capabilities ---------------------------------------------------------------------------------


def _drop_capabilities(details: list[str]) -> None:
    libc = _libc()
    try:
        _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in range(64):  # EINVAL past the kernel's last capability: ignored
            _prctl(_PR_CAPBSET_DROP, cap)  # EPERM without CAP_SETPCAP: nothing to drop then
        header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
        data = (_CapData * 2)()
        _check(int(libc.capset(ctypes.byref(header), data)), "capset")
    except (OSError, AttributeError) as e:
        details.append(f"capabilities not dropped: {e}")
        return
    details.append("capabilities dropped")


# -- entry point ----------------------------------------------------------------------------------


def apply(policy: SandboxPolicy) -> SandboxReport:
    """Confine the current process, irreversibly, and report what was enforced.

    Call it from a single-threaded process, before importing plugin code; raises
    ``SandboxError`` (having changed nothing) if other threads exist, since they would escape
    the per-thread layers. Order: process group, network namespace (needs ``/proc`` to write id
    maps), Landlock (after it only the grants are left), rlimits (after the setup, so a tight
    ``open_files`` or ``memory_bytes`` cannot starve it), capabilities last. Each unavailable
    layer is reported, not raised.
    """
    threads = _thread_count()
    if threads > 1:
        raise SandboxError(
            f"sandbox must be applied before any thread starts ({threads} threads exist): "
            "Landlock, no_new_privs, capabilities and namespaces would confine only the caller"
        )
    details: list[str] = []
    # Required by Landlock and seccomp without CAP_SYS_ADMIN; also stops setuid binaries and
    # file capabilities from handing privileges back to the plugin.
    try:
        _check(_prctl(_PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")
        details.append("no_new_privs set")
    except OSError as e:
        details.append(f"no_new_privs not set: {e}")
    _own_process_group(details)

    net_failure = "" if policy.network else _isolate_network(details)
    abi = landlock_abi()
    tcp_denied = False
    if abi:
        try:
            filesystem, tcp_denied = _landlock(policy, abi, not policy.network, details)
        except OSError as e:
            filesystem = f"none: {e}"
    else:
        filesystem = "none: Landlock unavailable (kernel too old or LSM disabled)"

    if policy.network:
        network = "none: network allowed by policy"
    elif not net_failure:
        network = "netns"
        if tcp_denied:
            details.append("landlock also denies TCP connect/bind")
    elif tcp_denied:
        network = "landlock"
        details.append(f"no netns ({net_failure}); only TCP connect/bind denied, not UDP/raw")
    elif not abi:
        network = f"none: {net_failure}; Landlock unavailable"
    elif abi < 4:
        network = f"none: {net_failure}; Landlock ABI {abi} < 4 has no network rules"
    else:
        network = f"none: {net_failure}; {filesystem}"

    if not policy.network:
        why = _deny_unix_sockets()
        details.append(
            f"seccomp not installed: {why}"
            if why
            else "seccomp: socket(AF_UNIX) and io_uring_setup denied"
        )

    rlimits = _apply_rlimits(policy, details)
    _drop_capabilities(details)
    return SandboxReport(network, filesystem, rlimits, tuple(details))
