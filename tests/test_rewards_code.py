"""code_reward: test-case scoring, and model code that attacks the sandbox scores 0 and leaves nothing behind."""

import glob
import json
import os
import socket
import tempfile
import time

import pytest

import aha.rewards.sandbox as sandbox
from aha.rewards import RewardRunner
from aha.rewards.code import check_isolation, code_reward, extract_code, isolation, run_program

needs_sandbox = pytest.mark.skipif(
    isolation() != "bwrap", reason="bubblewrap sandbox not available here"
)

ADD_IO = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4", "output": " 6 "}]


def fenced(code, lang="python"):
    return f"<think>r</think><answer>\n```{lang}\n{code}\n```\n</answer>"


EXTRACT = [
    (fenced("print(1)"), "print(1)\n"),
    (fenced("print(1)", "py"), "print(1)\n"),
    (fenced("print(1)", ""), "print(1)\n"),
    ("<answer>```python\nA\n``` and ```python\nB\n```</answer>", "B\n"),  # the last block
    (
        "<think>```python\nA\n```</think><answer>no code</answer>",
        None,
    ),  # code in the reasoning only
    ("```python\nA\n```</think>```python\nB\n```", "B\n"),  # no answer block: after </think>
    ("```python\nA\n```", "A\n"),
    ("no code at all", None),
    (fenced("print(1)", "javascript"), None),
    # the solution, then a plain block of its sample output: the tagged block is the code
    ("<answer>```python\nprint(5)\n```\nOutput:\n```\n5\n```</answer>", "print(5)\n"),
    ("<answer>```python\r\nprint(5)\r\n```</answer>", "print(5)\r\n"),  # CRLF fences
]


@pytest.mark.parametrize("completion,expected", EXTRACT)
def test_extract_code(completion, expected):
    assert extract_code(completion) == expected


def _sandbox_leftovers(wait: float = 3.0) -> list:
    """Processes of the sandbox user (when root) and sandbox temp directories still present after `wait` s
    (killed processes take a moment to disappear)."""
    deadline = time.monotonic() + wait
    while (left := _leftovers_now()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _leftovers_now() -> list:
    procs = []
    if os.geteuid() == 0:
        for d in glob.glob("/proc/[0-9]*"):
            try:
                if (
                    os.stat(d).st_uid >= sandbox.SANDBOX_IDS[0]
                    and "Z" not in open(f"{d}/stat").read().split(")")[-1][:3]
                ):
                    procs.append(d)
            except OSError:
                pass
    return procs + glob.glob(os.path.join(tempfile.gettempdir(), "aha-scratch-*"))


@needs_sandbox
def test_correct_and_wrong_programs():
    add = "a, b = map(int, input().split())\nprint(a + b)"
    assert code_reward(fenced(add), ADD_IO) == 1.0
    assert code_reward(fenced(add.replace("+", "-")), ADD_IO) == 0.0
    assert code_reward(fenced("print(5)"), ADD_IO) == 0.5
    assert code_reward(fenced("print(5)\nraise SystemExit(1)"), ADD_IO) == 0.0  # must exit 0
    asserts = ["assert f(2) == 4", "assert f(3) == 6", "assert f(0) == 1"]
    assert code_reward(fenced("def f(x):\n    return 2 * x"), asserts) == pytest.approx(2 / 3)
    assert (
        code_reward(fenced("def f(x):\n    return 2 * x"), '["assert f(1) == 2"]') == 1.0
    )  # JSON tests
    assert code_reward("no code", ADD_IO) == 0.0
    assert code_reward(fenced(add), []) == 0.0
    assert code_reward(fenced(add), "not json") == 0.0


@needs_sandbox
def test_attacks_score_zero_and_leave_nothing(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    outside = tmp_path / "pwned.txt"
    ok = "CONNECTED"
    attacks = {  # each would print "CONNECTED" (the expected output) if the attack worked
        "loopback": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('{ok}')",
        "internet": f"import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\nprint('{ok}')",
        "write_outside": f"open({str(outside)!r}, 'w').write('x')\nprint('{ok}')",
        "write_home": f"open('/root/pwned', 'w').write('x')\nprint('{ok}')",
        "read_secret": f"print(open('/etc/shadow').read()[:0] + '{ok}')",
        "infinite_loop": "while True:\n    pass",
        "sleep": "import time\ntime.sleep(1000)",
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "escape_session": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\n"
        f"print('{ok}')\ntime.sleep(1000)",
        "memory": f"x = bytearray(4 * 1024 ** 3)\nprint('{ok}')",
        "huge_output": "while True:\n    print('x' * 10000)",
        "kill_everything": f"import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('{ok}')",
    }
    start = time.monotonic()
    for name, code in attacks.items():
        assert code_reward(fenced(code), [{"input": "", "output": ok}], timeout=0.5) == 0.0, name
    assert time.monotonic() - start < 30
    assert not outside.exists() and not os.path.exists("/root/pwned")
    with pytest.raises(BlockingIOError):
        server.accept()  # nothing ever connected
    server.close()
    time.sleep(0.2)
    assert _sandbox_leftovers() == []
    # the sandbox itself still works after all that
    assert code_reward(fenced(f"print('{ok}')"), [{"input": "", "output": ok}]) == 1.0


@needs_sandbox
def test_writes_inside_the_sandbox_are_allowed_and_discarded():
    code = "open('scratch.txt', 'w').write('7')\nimport tempfile\ntempfile.mkstemp()\nprint(open('scratch.txt').read())"
    assert run_program(code)[0] == "ok" and run_program(code)[1].strip() == "7"
    assert _sandbox_leftovers() == []


def test_refuses_without_isolation_unless_opted_out(monkeypatch):
    monkeypatch.setattr(sandbox, "_probe", lambda: ("none", "bwrap not installed (test)"))
    monkeypatch.delenv(sandbox.UNSAFE_ENV, raising=False)
    with pytest.raises(RuntimeError, match="bubblewrap.*AHA_CODE_UNSAFE=1"):
        code_reward(fenced("print(5)"), [{"input": "", "output": "5"}])
    with pytest.raises(RuntimeError, match="bubblewrap"):
        RewardRunner([("code", 1.0)])
    assert check_isolation(allow_unsafe=True) == "none"
    assert code_reward(fenced("print(5)"), [{"input": "", "output": "5"}], allow_unsafe=True) == 1.0
    monkeypatch.setenv(sandbox.UNSAFE_ENV, "1")
    assert (
        code_reward(fenced("while True: pass"), [{"input": "", "output": "5"}], timeout=0.3) == 0.0
    )
    RewardRunner([("code", 1.0)]).close()


@needs_sandbox
def test_code_through_the_runner():
    comps = [
        fenced("a, b = map(int, input().split())\nprint(a + b)"),
        fenced("while True: pass"),
        "x",
    ]
    rows = [{"tests": ADD_IO}] * 3
    with RewardRunner([("code", 1.0)], timeout=6.0) as r:
        res = r.score(comps, rows)
    assert res.scores[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert res.metrics["reward/timeouts"] == 0.0  # the sandbox's own timeout fired first
    assert _sandbox_leftovers() == []


ADD_ASSERTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]


@needs_sandbox
@pytest.mark.parametrize(
    "code,expected",
    [
        ("def add(a, b):\n    return a + b", 1.0),
        # exiting before the asserts could run passed every test (a reward hack)
        ("import sys\ndef add(a, b):\n    return a - b\nsys.exit(0)", 0.0),
        ("import os\ndef add(a, b):\n    return a - b\nos._exit(0)", 0.0),
        ("def add(a, b):\n    return a - b\nprint(ADD)", 0.0),
        # the usual main guard still works: its exit(0) ends the program, not the asserts
        (
            "import sys\ndef add(a, b):\n    return a + b\ndef main():\n    return 0\n"
            "if __name__ == '__main__':\n    sys.exit(main())",
            1.0,
        ),
        ("import sys\ndef add(a, b):\n    return a + b\nsys.exit(3)", 0.0),
    ],
)
def test_asserts_run_after_the_program_and_cannot_be_skipped(code, expected):
    assert code_reward(fenced(code), ADD_ASSERTS) == expected


@needs_sandbox
def test_peer_test_layouts():
    """open-r1's verification_info, APPS / verl prime_code's inputs/outputs (stdin or fn_name call-based)."""
    add_io = "a, b = map(int, input().split())\nprint(a + b)"
    open_r1 = {
        "language": "python",
        "test_cases": [{"input": "1 2\n", "output": "3\n", "type": "stdin_stdout"}],
    }
    assert code_reward(fenced(add_io), open_r1) == 1.0
    apps = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "8\n"]}
    assert code_reward(fenced(add_io), apps) == 0.5
    call = {"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]}
    assert code_reward(fenced("def add(a, b):\n    return a + b"), call) == 1.0
    method = "class Solution:\n    def add(self, a, b):\n        return a + b"
    assert code_reward(fenced(method), json.dumps(call)) == 1.0
    assert code_reward(fenced("def add(a, b):\n    return a - b"), call) == 0.0
    pair = {
        "fn_name": "pair",
        "inputs": [[1]],
        "outputs": [[[1, 1]]],
    }  # APPS wraps the output in a list
    assert code_reward(fenced("def pair(a):\n    return (a, a)"), pair) == 1.0
    with pytest.raises(ValueError, match="code tests as a dict with keys foo"):
        code_reward(fenced(add_io), {"foo": 1})


@needs_sandbox
def test_a_fork_bomb_does_not_fail_other_programs():
    """Every program had uid 65534 when aha runs as root, and RLIMIT_NPROC counts per uid: fork bombs in other
    sandboxes made a correct program fail at start (BlockingIOError; 5 of 60 runs here before, 0 of 60 after)."""
    import threading

    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    stop = time.monotonic() + 3.0

    def attacker():
        while time.monotonic() < stop:
            run_program(bomb, timeout=1.0)

    thread = threading.Thread(target=attacker)
    thread.start()
    time.sleep(0.3)
    try:
        results = [run_program("print(6 * 7)", timeout=2.0) for _ in range(15)]
    finally:
        thread.join()
    assert results == [("ok", "42\n")] * 15
