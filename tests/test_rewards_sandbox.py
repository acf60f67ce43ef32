"""The code sandbox's holes of issue 17 (items 7-9) stay closed: host unix sockets and files outside the
interpreter are out of reach, the output is never read through a path the program controls, the private /tmp
and the scratch directory are size-limited. Runs as root (CI) and as an ordinary user."""

import os
import socket
import sys
import tempfile
import threading

import pytest

import aha.rewards.sandbox as sandbox
from aha.rewards.sandbox import bwrap_args, interpreter_paths, isolation, run_program

needs_sandbox = pytest.mark.skipif(
    isolation() != "bwrap", reason="bubblewrap sandbox not available here"
)
OK = "REACHED"


@pytest.fixture
def var_tmp_dir():
    """A world-traversable directory in /var/tmp, the kind of place a host service keeps a socket."""
    d = tempfile.mkdtemp(prefix="aha-sandbox-test-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    for name in os.listdir(d):
        os.remove(os.path.join(d, name))
    os.rmdir(d)


def _binds(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a in ("--bind", "--ro-bind", "--dev-bind")]


@pytest.mark.parametrize("as_root", [True, False])
def test_binds_only_the_interpreter_and_system_dirs(as_root):
    args = bwrap_args(3, as_root)
    home = os.path.realpath(os.path.expanduser("~"))
    for src in _binds(args):
        src = os.path.realpath(src)
        for d in ("/tmp", "/var/tmp", "/run", "/var/run", home):
            assert not (d == src or d.startswith(src.rstrip("/") + "/")), (src, d)
    assert "--remount-ro" in args and args[args.index("--remount-ro") + 1] == "/"


def test_an_interpreter_whose_prefix_holds_home_is_refused(monkeypatch):
    monkeypatch.setenv("HOME", os.path.join(sys.prefix, "inner-home"))
    with pytest.raises(RuntimeError, match="interpreter lives in .* contains"):
        interpreter_paths()


@needs_sandbox
def test_unix_socket_and_files_outside_the_interpreter_are_unreachable(var_tmp_dir, monkeypatch):
    path = os.path.join(var_tmp_dir, "agent.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)  # reachable by anyone who can see it
    server.listen(1)
    server.setblocking(False)
    secret = os.path.join(var_tmp_dir, "id_rsa")
    with open(secret, "w") as f:
        f.write("PRIVATE")
    os.chmod(secret, 0o644)
    monkeypatch.setenv("HOME", var_tmp_dir)  # the host user's home holds both
    connect = f"import socket\nsocket.socket(socket.AF_UNIX).connect({path!r})\nprint({OK!r})"
    read = f"print(open({secret!r}).read())"
    try:
        assert run_program(connect, timeout=5)[1].strip() != OK
        assert "PRIVATE" not in run_program(read, timeout=5)[1]
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
    finally:
        server.close()
    # next to the virtual environment (a project's .env, its checkout) nothing else is visible
    parent = os.path.dirname(os.path.realpath(sys.prefix))
    status, out = run_program(f"import os\nprint(sorted(os.listdir({parent!r})))", timeout=5)
    visible = {os.path.basename(os.path.realpath(sys.prefix))} | (
        {"sandbox"} if parent == "/tmp" else set()
    )
    assert status == "ok" and set(eval(out)) <= visible, out
    status, out = run_program("import os\nprint(sorted(os.listdir('/')))", timeout=5)
    system = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}
    prefixes = {p.strip("/").split("/")[0] for p in interpreter_paths()}
    assert status == "ok" and set(eval(out)) <= system | prefixes


@needs_sandbox
def test_output_is_read_from_the_hosts_descriptor(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("ROOT-ONLY")
    secret.chmod(0o600)  # readable by the host, never by the sandboxed program
    # the program swaps every file of its directory for a link to the secret (the old .stdout included)
    swap = (
        "import os\nfor n in os.listdir('.') + ['.stdout']:\n    try:\n        os.remove(n)\n"
        f"    except OSError:\n        pass\n    os.symlink({str(secret)!r}, n)\nprint('done')"
    )
    status, out = run_program(swap, timeout=5)
    assert (status, out.strip()) == ("ok", "done")
    fifo = (
        "import os\nfor n in os.listdir('.') + ['.stdout']:\n    try:\n        os.remove(n)\n"
        "    except OSError:\n        pass\n    os.mkfifo(n)\nprint('done')"
    )
    result = []
    t = threading.Thread(target=lambda: result.append(run_program(fifo, timeout=5)), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "reading the output hung on a FIFO the program made"
    assert result[0][1].strip() == "done"


FILL = """import os
written = {}
for k, where in enumerate(('.', '/tmp', '/dev/shm', '/', '/etc', '/var/tmp', os.path.expanduser('~'))):
    n = 0
    try:
        for i in range(48):  # 1 MiB files: RLIMIT_FSIZE (16 MiB) is per file, so it does not stop this
            with open(os.path.join(where, f'fill-{k}-{i}'), 'wb') as f:
                f.write(b'x' * (1 << 20))
            n += 1
    except OSError:
        pass
    written[where] = n
print(written)
"""


@needs_sandbox
def test_private_tmp_and_scratch_are_size_limited():
    status, out = run_program(FILL, timeout=20, scratch_mb=8)
    assert status == "ok", out
    written = eval(out)
    private = (".", "/tmp", "/tmp/sandbox")  # the cwd, /tmp and ~ (= the cwd) share one 8 MiB tmpfs
    assert sum(written[k] for k in private) <= 8
    assert written["."] >= 4  # but it is usable
    assert {k: v for k, v in written.items() if k not in private} == dict.fromkeys(
        ("/dev/shm", "/", "/etc", "/var/tmp"), 0
    )


@needs_sandbox
def test_old_bubblewrap_without_size_has_no_writable_directory(monkeypatch):
    monkeypatch.setattr(sandbox, "_bwrap_sizes_tmpfs", lambda: False)
    status, out = run_program(FILL, timeout=20)
    assert status == "ok", out
    assert set(eval(out).values()) == {0}
    assert run_program("print(input())", "hi", timeout=5) == ("ok", "hi\n")


def test_old_bubblewrap_makes_tmp_traversable_for_an_interpreter_under_it(monkeypatch):
    """A virtual environment under /tmp (/tmp/venv) on bubblewrap < 0.8 (no sized tmpfs on /tmp): /tmp is made
    0755 before the interpreter is bound, as bwrap's own implicit parents are 0700 and `nobody` could not reach
    the interpreter (every program then failed)."""
    monkeypatch.setattr(sandbox, "_bwrap_sizes_tmpfs", lambda: False)
    monkeypatch.setattr(sandbox, "interpreter_paths", lambda: ["/tmp/venv"])
    args = sandbox.bwrap_args(0, as_root=True)
    made, bound = args.index("/tmp"), args.index("/tmp/venv")
    assert args[made - 3 : made + 1] == ["--perms", "0755", "--dir", "/tmp"] and made < bound
    monkeypatch.setattr(
        sandbox, "_bwrap_sizes_tmpfs", lambda: True
    )  # sized: /tmp is the scratch tmpfs
    args = sandbox.bwrap_args(0, as_root=True)
    assert ["--dir", "/tmp"] != args[args.index("/tmp") - 1 : args.index("/tmp") + 1]
