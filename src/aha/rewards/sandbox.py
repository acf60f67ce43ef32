"""Run untrusted Python (model-written code) once, in a sandbox: `run_program(source, stdin)`.

With bubblewrap (`isolation() == "bwrap"`; `apt-get install bubblewrap`, 0.8 or later for a sized /tmp):
- New network, pid, ipc, uts (and cgroup) namespaces: no network, not even loopback, and so no TCP/UDP to the
  host; no other process visible; everything in the sandbox dies with it. All capabilities dropped; when aha
  runs as root each program runs as a uid/gid of its own (drawn from SANDBOX_IDS, no passwd entry) with
  no-new-privileges, so RLIMIT_NPROC, which the kernel counts per uid, holds for it alone: one program's fork
  bomb cannot make another's start fail (they all shared uid 65534, nobody, before).
- A file system built from nothing (issue 17, item 7): read-only binds of only what the interpreter needs --
  /usr and the /bin, /sbin, /lib* entries (symlinks into /usr on merged-/usr systems), the dynamic linker's
  cache in /etc, and the interpreter's own prefixes (sys.prefix, sys.base_prefix, the directories along
  sys.executable's symlinks). Never `/`, the home directory, /run, /var/run, /tmp or /var/tmp, so no host
  file outside those prefixes is readable and no path-based unix socket (ssh-agent, dbus, a listener in
  /var/tmp) can be reached. `/` and /dev are remounted read-only; /proc shows the sandbox's processes only.
- One writable place, a private tmpfs on /tmp of `scratch_mb` MiB (item 9): the program's cwd /tmp/sandbox
  (also $HOME) lives there. tmpfs pages are RAM that RLIMIT_AS does not see, so a program can hold at most
  `memory_mb` (address space) + `scratch_mb` (files) of memory; writes beyond the tmpfs size fail (ENOSPC).
  On bubblewrap older than 0.8 (no `--size`) there is no writable directory at all.
- The program text goes in through a descriptor (bwrap `--file`); stdin and stdout are unlinked temporary
  files whose descriptors the host holds, and the host reads the output through its own descriptor after the
  program is dead (item 8): nothing is ever opened by a path the program could replace (symlink, FIFO).
Always, sandbox or not: its own session (SIGKILLed whole on timeout), a wall-clock timeout, RLIMIT_CPU,
RLIMIT_AS (`memory_mb`), RLIMIT_FSIZE (FSIZE_MB per file, so also the output), RLIMIT_NPROC, RLIMIT_CORE=0.

Without bubblewrap code rewards refuse to run (RuntimeError) unless the user opts out explicitly with
`allow_unsafe=True` or AHA_CODE_UNSAFE=1; then only the "always" limits apply, the program runs in a host
scratch directory (no quota) and can read files, use the network and write wherever the user can.
"""

from __future__ import annotations

import ctypes
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache

UNSAFE_ENV = "AHA_CODE_UNSAFE"
# Host scratch directories (unsafe mode only) are named tempdir/aha-scratch-<reward worker pid>-*: the pool
# deletes them when it kills the worker (a killed worker cannot clean up after itself).
SCRATCH_PREFIX = "aha-scratch-"
# uids (and gids) the programs run as when aha runs as root: (first, how many); one drawn at random per run
SANDBOX_IDS = (2_000_000_000, 1 << 24)
SANDBOX_DIR = "/tmp/sandbox"  # the program's cwd and $HOME inside the sandbox, on its private tmpfs
PR_SET_PDEATHSIG = 1
NPROC_BUDGET = 64  # processes the sandboxed program may add
FSIZE_MB = 16  # largest file (and stdout) the program may write
SCRATCH_MB = 64  # size of the sandbox's private tmpfs (/tmp, which holds the cwd)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
)  # how ld.so finds libraries
# Run inside the sandbox as root: drop to the run's uid, forbid regaining privileges, exec the real program.
_DROP = (
    "import ctypes,os,sys;ctypes.CDLL(None).prctl(38,1,0,0,0);os.setgroups([]);os.setgid(int(sys.argv[2]));"
    "os.setuid(int(sys.argv[1]));os.execv(sys.argv[3],sys.argv[3:])"
)


def _forbidden() -> list[str]:
    """Directories that must never be bound, nor any directory containing one."""
    dirs = ["/tmp", "/var/tmp", "/run", "/var/run", "/dev/shm", os.path.expanduser("~")]
    return [os.path.realpath(d) for d in dirs]


def _link_dirs(path: str) -> set[str]:
    """The directories of every hop of `path`'s symlink chain (venv python -> base python -> ...)."""
    dirs, seen = set(), set()
    while path not in seen and len(seen) < 40:
        seen.add(path)
        dirs.add(os.path.realpath(os.path.dirname(path)))
        if not os.path.islink(path):
            break
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return dirs


def interpreter_paths() -> list[str]:
    """The directories the interpreter needs besides the system ones, outermost only. RuntimeError if one of
    them is `/` or contains a forbidden directory (home, /tmp, /run, ...): binding it would expose them."""
    wanted = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)}
    wanted |= {os.path.realpath(sys.base_exec_prefix)} | _link_dirs(sys.executable)
    system = [os.path.realpath(p) for p in SYSTEM_PATHS if os.path.isdir(p)]
    under = lambda p, d: p == d or p.startswith(d.rstrip("/") + "/")  # noqa: E731
    wanted = {p for p in wanted if not any(under(p, s) for s in system)}
    for p in wanted:
        bad = [d for d in _forbidden() if under(d, p)]
        if bad:
            raise RuntimeError(
                f"the Python interpreter lives in {p}, which contains {bad[0]}; binding it into the code "
                "sandbox would expose it: run aha from a virtual environment or Python installed elsewhere"
            )
    return sorted(p for p in wanted if not any(q != p and under(p, q) for q in wanted))


@lru_cache(maxsize=1)
def _bwrap_sizes_tmpfs() -> bool:
    """bubblewrap >= 0.8 has `--size` for a tmpfs."""
    try:
        out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "--size" in out.stdout + out.stderr


def bwrap_args(source_fd: int, as_root: bool, scratch_mb: int = SCRATCH_MB) -> list[str]:
    """The bubblewrap command line (up to `--`) of the sandbox described in the module docstring; the
    program's text is read from `source_fd` into /tmp/sandbox/main.py."""
    args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if not as_root:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    for p in SYSTEM_PATHS:
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            args += ["--ro-bind", p, p]
    args += [a for p in ETC_PATHS if os.path.exists(p) for a in ("--ro-bind", p, p)]
    args += ["--dev", "/dev", "--proc", "/proc"]
    made = {"/"}
    if _bwrap_sizes_tmpfs():  # first, so that an interpreter under /tmp is bound over it below
        args += ["--size", str(scratch_mb << 20), "--perms", "1777", "--tmpfs", "/tmp"]
        # else /tmp is made below like any parent: 0755 (bwrap's implicit parents are 0700)
        made.add("/tmp")
    for p in interpreter_paths():
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):  # traversable parents (bwrap would create them 0700)
            d = "/" + "/".join(parts[:i])
            if d not in made:
                made.add(d)
                args += ["--perms", "0755", "--dir", d]
        args += ["--ro-bind", p, p]
    args += ["--perms", "0777", "--dir", SANDBOX_DIR]
    args += ["--perms", "0444", "--file", str(source_fd), f"{SANDBOX_DIR}/main.py"]
    return args + ["--chdir", SANDBOX_DIR, "--remount-ro", "/", "--remount-ro", "/dev"]


def _count_processes(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.stat(f"/proc/{d}").st_uid == uid:
                n += 1
        except OSError:
            pass
    return n


def _limits(cpu_s: int, memory_mb: int, nproc: int):
    def apply():
        for res, value in (
            (resource.RLIMIT_CPU, cpu_s),
            (resource.RLIMIT_AS, memory_mb << 20),
            (resource.RLIMIT_FSIZE, FSIZE_MB << 20),
            (resource.RLIMIT_NPROC, nproc),
            (resource.RLIMIT_CORE, 0),
        ):
            hard = resource.getrlimit(res)[1]
            if value == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and value > hard):
                value = hard  # only ever lower a limit
            resource.setrlimit(res, (value, value))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        # If the reward worker running us is killed, we die too (bwrap then tears down the whole sandbox).
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return apply


def run_program(
    source: str,
    stdin: str = "",
    *,
    timeout: float = 2.0,
    memory_mb: int = 512,
    scratch_mb: int = SCRATCH_MB,
    allow_unsafe: bool = False,
) -> tuple[str, str]:
    """Run Python `source` once in the sandbox. Returns (status, stdout) with status "ok" | "error" |
    "timeout". Raises RuntimeError only when no isolation is available and the user has not opted out."""
    return _run(source, stdin, check_isolation(allow_unsafe), timeout, memory_mb, scratch_mb)


def _run(
    source: str, stdin: str, mode: str, timeout: float, memory_mb: int, scratch_mb: int
) -> tuple[str, str]:
    as_root, workdir = os.geteuid() == 0, None
    try:
        with (
            tempfile.TemporaryFile() as src_f,
            tempfile.TemporaryFile() as in_f,
            tempfile.TemporaryFile() as out_f,
        ):
            for f, text in ((src_f, source), (in_f, stdin)):
                f.write(str(text).encode("utf-8", "replace"))
                f.seek(0)
            python = [sys.executable, "-I", "main.py"]
            if mode == "bwrap":
                if as_root:
                    uid = str(SANDBOX_IDS[0] + secrets.randbelow(SANDBOX_IDS[1]))
                    python = [sys.executable, "-I", "-c", _DROP, uid, uid, *python]
                cmd = bwrap_args(src_f.fileno(), as_root, scratch_mb) + ["--", *python]
                cwd, fds, home = "/", (src_f.fileno(),), SANDBOX_DIR
            else:  # unsafe: a host scratch directory, named after our process group for the pool
                workdir = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpgid(0)}-code-")
                with open(os.path.join(workdir, "main.py"), "wb") as f:
                    shutil.copyfileobj(src_f, f)
                cmd, cwd, fds, home = python, workdir, (), workdir
            nproc = NPROC_BUDGET if as_root else _count_processes(os.getuid()) + NPROC_BUDGET
            if as_root and mode != "bwrap":
                nproc = resource.RLIM_INFINITY  # not enforced for root anyway; documented as unsafe
            proc = subprocess.Popen(
                cmd,
                stdin=in_f,
                stdout=out_f,
                stderr=subprocess.DEVNULL,
                cwd=cwd,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home},
                start_new_session=True,
                close_fds=True,
                pass_fds=fds,
                preexec_fn=_limits(int(timeout) + 1, memory_mb, nproc),
            )
            try:
                status = "ok" if proc.wait(timeout=timeout) == 0 else "error"
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:  # everything in its session (bwrap tears down the rest)
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            out_f.seek(0)  # our own descriptor: whatever the program did to paths does not matter
            return status, out_f.read(FSIZE_MB << 20).decode("utf-8", "replace")
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


@lru_cache(maxsize=1)
def _probe() -> tuple[str, str]:
    """("bwrap", "") if bubblewrap can build the sandbox here (probed once by running a program), else
    ("none", why)."""
    if shutil.which("bwrap") is None:
        return "none", "bubblewrap is not installed (apt-get install bubblewrap)"
    try:
        status, out = _run("print('ok')", "", "bwrap", 20.0, 512, SCRATCH_MB)
    except RuntimeError as e:
        return "none", str(e)
    except OSError as e:
        return "none", f"bubblewrap failed to start ({e})"
    if (status, out.strip()) != ("ok", "ok"):
        return (
            "none",
            "bubblewrap is installed but cannot build the sandbox here (user namespaces off?)",
        )
    return "bwrap", ""


def isolation() -> str:
    """ "bwrap" if bubblewrap can build the sandbox here, else "none"."""
    return _probe()[0]


def check_isolation(allow_unsafe: bool = False) -> str:
    """The isolation code rewards will use; RuntimeError if none and the user has not opted out."""
    mode, why = _probe()
    if mode == "none" and not (allow_unsafe or os.environ.get(UNSAFE_ENV) == "1"):
        raise RuntimeError(
            f"code rewards need the bubblewrap sandbox (no network, only the interpreter's files): {why}; "
            f"fix that or opt out with {UNSAFE_ENV}=1"
        )
    return mode
