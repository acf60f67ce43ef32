"""Code reward: the fraction of test cases passed by the completion's last fenced Python block.

    code_reward(completion, tests) = (# tests passed) / len(tests)

`tests` is a list of {"input": stdin, "output": expected stdout} (passed iff the program exits 0 and its
stdout equals the expected text line by line, each line stripped, surrounding blank lines ignored) or a list of
assert statements (each appended to the program; passed iff it exits 0). A JSON string of either is accepted.
The code is the last ```python / ```py / ``` block of the answer block (else of the text after </think>, else
of the whole completion).

Model code is untrusted, so every test runs in a sandbox (`isolation()` says which is active):
- "bwrap" (bubblewrap; `apt-get install bubblewrap`): new network, pid, ipc and uts namespaces (no network,
  not even loopback; no other process visible; everything in the sandbox dies with it), the file system
  read-only except a fresh temporary directory (the cwd) and a private /tmp, all capabilities dropped. When
  aha runs as root the program runs as uid/gid 65534 (nobody), so RLIMIT_NPROC is enforced.
- Always: its own session/process group (SIGKILLed whole on timeout), a wall-clock timeout, and RLIMIT_CPU,
  RLIMIT_AS (memory), RLIMIT_FSIZE (file size), RLIMIT_NPROC (fork bombs), RLIMIT_CORE=0; stdout goes to a
  size-limited file, not a pipe; the temporary directory is deleted afterwards.
Without bubblewrap, code rewards refuse to run (RuntimeError) unless the user opts out explicitly with
`allow_unsafe=True` (RewardSpec kwargs) or the environment variable AHA_CODE_UNSAFE=1; then only the "always"
limits apply and the code can read files, use the network and write wherever the user can.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import lru_cache

from aha.rewards.format import answer_block

UNSAFE_ENV = "AHA_CODE_UNSAFE"
# Scratch directories are named tempdir/aha-scratch-<reward worker pid>-*: the pool deletes them when it kills
# the worker (a killed worker cannot clean up after itself).
SCRATCH_PREFIX = "aha-scratch-"
NOBODY = 65534
SANDBOX_DIR = (
    "/tmp/sandbox"  # where the temporary directory appears inside the sandbox (on its private /tmp)
)
PR_SET_PDEATHSIG = 1
NPROC_BUDGET = 64  # processes the sandboxed program may add
FSIZE_MB = 16
MAX_CODE_CHARS = 100_000
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
# Run inside the sandbox as root: drop to nobody, forbid regaining privileges, exec the real program.
_DROP = (
    "import ctypes,os,sys;ctypes.CDLL(None).prctl(38,1,0,0,0);os.setgroups([]);os.setgid(int(sys.argv[2]));"
    "os.setuid(int(sys.argv[1]));os.execv(sys.argv[3],sys.argv[3:])"
)


def extract_code(completion: str) -> str | None:
    """The last fenced Python (or untagged) code block of the answer (see module docstring), else None."""
    if not isinstance(completion, str):
        return None
    text = answer_block(completion)
    if text is None:
        text = completion.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


def _hidden_ancestor(path: str) -> str | None:
    """The topmost ancestor of `path` that other users cannot traverse (e.g. /root), or None."""
    parts = os.path.realpath(path).split(os.sep)
    for i in range(2, len(parts)):
        a = os.sep.join(parts[:i])
        if not os.stat(a).st_mode & 0o001:
            return a
    return None


def _bwrap_args(workdir: str, as_root: bool) -> list[str]:
    args = [
        "bwrap",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--bind",
        workdir,
        SANDBOX_DIR,
        "--chdir",
        SANDBOX_DIR,
    ]
    if not as_root:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    # The interpreter must stay reachable: its directories under the fresh /tmp (a virtual environment made
    # there, as CI does) and, for nobody, under unreadable ancestors such as /root (covered with an empty
    # tmpfs) are bound back, read-only.
    needed = {
        os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable))
    }
    needed.add(os.path.dirname(os.path.realpath(sys.executable)))
    hidden = {h for p in needed if as_root and (h := _hidden_ancestor(p))}
    for h in sorted(hidden):
        args += ["--tmpfs", h]
    if any(p.startswith("/tmp" + os.sep) for p in needed):
        hidden.add("/tmp")
    made = set()
    for p in sorted(needed):
        h = next((h for h in sorted(hidden) if p.startswith(h + os.sep)), None)
        if h is None:
            continue
        parts = p[len(h) + 1 :].split(os.sep)
        for i in range(1, len(parts)):  # traversable parents (bwrap would create them 0700)
            d = os.path.join(h, *parts[:i])
            if d not in made:
                made.add(d)
                args += ["--perms", "0755", "--dir", d]
        args += ["--ro-bind", p, p]
    return args


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
    allow_unsafe: bool = False,
) -> tuple[str, str]:
    """Run Python `source` once in the sandbox. Returns (status, stdout) with status "ok" | "error" |
    "timeout". Raises RuntimeError only when no isolation is available and the user has not opted out."""
    return _run(source, stdin, check_isolation(allow_unsafe), timeout, memory_mb)


def _run(source: str, stdin: str, mode: str, timeout: float, memory_mb: int) -> tuple[str, str]:
    as_root = os.geteuid() == 0
    # Named after our process group (= the reward worker's pid), so the pool can delete it if it has to kill
    # the worker before the `finally` below runs.
    workdir = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpgid(0)}-code-")
    try:
        prog, out_path = os.path.join(workdir, "main.py"), os.path.join(workdir, ".stdout")
        with open(prog, "w", encoding="utf-8", errors="replace") as f:
            f.write(source)
        python = [sys.executable, "-I", "main.py"]
        if mode == "bwrap":
            if as_root:
                os.chown(workdir, NOBODY, NOBODY)
                python = [sys.executable, "-I", "-c", _DROP, str(NOBODY), str(NOBODY), *python]
            cmd = _bwrap_args(workdir, as_root) + ["--", *python]
        else:
            cmd = python
        nproc = NPROC_BUDGET if as_root else _count_processes(os.getuid()) + NPROC_BUDGET
        if as_root and mode != "bwrap":
            nproc = resource.RLIM_INFINITY  # not enforced for root anyway; documented as unsafe
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": SANDBOX_DIR if mode == "bwrap" else workdir,
        }
        with tempfile.TemporaryFile() as stdin_f, open(out_path, "wb") as out_f:
            stdin_f.write(str(stdin).encode("utf-8", "replace"))
            stdin_f.seek(0)
            proc = subprocess.Popen(
                cmd,
                stdin=stdin_f,
                stdout=out_f,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env=env,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_limits(int(timeout) + 1, memory_mb, nproc),
            )
            try:
                code = proc.wait(timeout=timeout)
                status = "ok" if code == 0 else "error"
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:
                    os.killpg(
                        proc.pid, signal.SIGKILL
                    )  # everything in its session (bwrap tears down the rest)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
        with open(out_path, "rb") as f:
            stdout = f.read(FSIZE_MB << 20).decode("utf-8", "replace")
        return status, stdout
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@lru_cache(maxsize=1)
def isolation() -> str:
    """ "bwrap" if bubblewrap can build the sandbox here (probed once by running a program), else "none"."""
    if shutil.which("bwrap") is None:
        return "none"
    try:
        status, out = _run("print('ok')", "", "bwrap", 20.0, 512)
    except OSError:
        return "none"
    return "bwrap" if (status, out.strip()) == ("ok", "ok") else "none"


def check_isolation(allow_unsafe: bool = False) -> str:
    """The isolation code rewards will use; RuntimeError if none and the user has not opted out."""
    mode = isolation()
    if mode == "none" and not (allow_unsafe or os.environ.get(UNSAFE_ENV) == "1"):
        raise RuntimeError(
            "code rewards need bubblewrap for isolation (no network, read-only file system); "
            f"install it (apt-get install bubblewrap) or opt out with {UNSAFE_ENV}=1"
        )
    return mode


def _passed(status: str, stdout: str, expected) -> bool:
    if status != "ok":
        return False
    if expected is None:
        return True
    lines = lambda s: [line.strip() for line in str(s).strip().splitlines()]  # noqa: E731
    return lines(stdout) == lines(expected)


def code_reward(
    completion: str,
    tests,
    *,
    timeout: float = 1.0,
    budget: float = 3.0,
    memory_mb: int = 512,
    allow_unsafe: bool = False,
) -> float:
    """Fraction of `tests` passed (see module docstring). `timeout` is per test; tests not started within
    `budget` seconds in total count as failed. The runner's per-item timeout (RewardSpec.timeout or the
    runner's) must exceed budget + timeout, or slow-but-finishing items are killed and score 0."""
    check_isolation(allow_unsafe)  # environment problem: raise, do not silently score 0
    try:
        if isinstance(tests, str):
            tests = json.loads(tests)
        tests = list(tests)
        code = extract_code(completion)
        if not tests or not code or len(code) > MAX_CODE_CHARS:
            return 0.0
        passed, start = 0, time.monotonic()
        for t in tests:
            if time.monotonic() - start > budget:
                break
            if isinstance(t, dict):
                status, out = run_program(
                    code,
                    t.get("input", ""),
                    timeout=timeout,
                    memory_mb=memory_mb,
                    allow_unsafe=allow_unsafe,
                )
                passed += _passed(status, out, t.get("output", ""))
            else:
                status, out = run_program(
                    f"{code}\n\n{t}\n",
                    timeout=timeout,
                    memory_mb=memory_mb,
                    allow_unsafe=allow_unsafe,
                )
                passed += _passed(status, out, None)
        return passed / len(tests)
    except (ValueError, TypeError, OSError):
        return 0.0
