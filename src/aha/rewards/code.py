"""Code reward: the fraction of test cases passed by the completion's last fenced Python block.

    code_reward(completion, tests) = (# tests passed) / len(tests)

`tests` is a list of {"input": stdin, "output": expected stdout} (passed iff the program exits 0 and its
stdout equals the expected text line by line, each line stripped, surrounding blank lines ignored) or a list of
assert statements (each run after the program, in its namespace; passed iff the statement then completes: a
program that exits first, `sys.exit(0)` or `os._exit(0)` before the asserts could run, fails, where it used to
pass). A JSON string of either is accepted, and the layouts of peers (`as_tests`: open-r1's verification_info,
APPS / verl's prime_code inputs/outputs, call-based with fn_name). The asserts compare with the program's own
objects, so an object whose `__eq__` always holds passes them (the tests' author can compare types too).
The code is the last ```python / ```py block of the answer block, else its last untagged ``` block (else of
the text after </think>, else of the whole completion): a solution followed by a plain block of its sample
output is the solution.

Model code is untrusted, so every test runs once in the sandbox of `aha.rewards.sandbox` (bubblewrap: no
network, only the interpreter's files visible, a private size-limited /tmp, output read through a descriptor
the host holds, resource limits; see that module). Without bubblewrap code rewards refuse to run
(RuntimeError) unless the user opts out explicitly with `allow_unsafe=True` (RewardSpec kwargs) or the
environment variable AHA_CODE_UNSAFE=1.
"""

from __future__ import annotations

import json
import re
import secrets
import time

from aha.rewards.format import answer_block
from aha.rewards.sandbox import (  # noqa: F401  (re-exported: the sandbox's names as they were here)
    SCRATCH_MB,
    SCRATCH_PREFIX,
    UNSAFE_ENV,
    check_isolation,
    isolation,
    run_program,
)

MAX_CODE_CHARS = 100_000
_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
# An assert test runs after the program, in its namespace, and then prints a line the program cannot know; the
# test passes only when that line is the program's last output (so exiting before the asserts fails).
_ASSERT_HARNESS = """
import sys as _aha_sys
_aha_ns = {{"__name__": "__main__", "__builtins__": __builtins__}}
try:
    exec(compile({code!r}, "main.py", "exec"), _aha_ns)
except SystemExit as _aha_exit:
    if _aha_exit.code not in (None, 0):
        raise
exec(compile({test!r}, "test", "exec"), _aha_ns)
_aha_sys.stdout.flush()
_aha_sys.__stdout__.write("\\n{token}\\n")
"""


def extract_code(completion: str) -> str | None:
    """The last ```python / ```py fenced block of the answer, else its last untagged ``` block (see module
    docstring); None when there is none."""
    if not isinstance(completion, str):
        return None
    text = answer_block(completion)
    if text is None:
        text = completion.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(text)
    tagged = [code for tag, code in blocks if tag]
    return tagged[-1] if tagged else (blocks[-1][1] if blocks else None)


def as_tests(tests) -> list:
    """aha's list of tests from the layouts peers write them in (module docstring):
    - open-r1's `verification_info` {"test_cases": [{"input", "output", ...}], "language": "python"}: its cases;
    - APPS / verl's prime_code {"inputs": [...], "outputs": [...]} ("input"/"output" too): stdin/stdout pairs,
      or with "fn_name" call-based cases, each an assert calling the function (or the method of a `Solution`
      class) with the input's arguments; tuples compare as lists, and a value passes for a one-item list of it.
    Raises ValueError for a dict of another layout."""
    if isinstance(tests, dict):
        if "test_cases" in tests:
            return list(tests["test_cases"])
        ins = tests.get("inputs", tests.get("input"))
        outs = tests.get("outputs", tests.get("output"))
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise ValueError(
                f"code tests as a dict with keys {', '.join(map(str, tests))}: expected open-r1's "
                "{test_cases: [...]} or APPS' {inputs: [...], outputs: [...], fn_name?}, or a list of "
                "{input, output} cases or assert statements"
            )
        fn = tests.get("fn_name")
        if not fn:
            return [{"input": i, "output": o} for i, o in zip(ins, outs)]
        return [
            _CALL.format(fn=str(fn), args=i if isinstance(i, list) else [i], out=o)
            for i, o in zip(ins, outs)
        ]
    return list(tests)


# A call-based case (APPS, verl's prime_code) as an assert: run in the program's namespace after it.
_CALL = (
    "_aha_f = globals().get({fn!r}) or getattr(globals()['Solution'](), {fn!r})\n"
    "_aha_n = lambda v: [_aha_n(x) for x in v] if isinstance(v, (list, tuple)) else v\n"
    "_aha_r = _aha_n(_aha_f(*{args!r}))\n"
    "assert _aha_r == _aha_n({out!r}) or [_aha_r] == _aha_n({out!r})"
)


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
    scratch_mb: int = SCRATCH_MB,
    allow_unsafe: bool = False,
) -> float:
    """Fraction of `tests` passed (see module docstring). `timeout` is per test; tests not started within
    `budget` seconds in total count as failed. The runner's per-item timeout (RewardSpec.timeout or the
    runner's) must exceed budget + timeout, or slow-but-finishing items are killed and score 0. Each run may
    use `memory_mb` of address space plus `scratch_mb` of files in its private /tmp."""
    check_isolation(allow_unsafe)  # environment problem: raise, do not silently score 0
    limits = dict(timeout=timeout, memory_mb=memory_mb, scratch_mb=scratch_mb)
    try:
        if isinstance(tests, str):
            tests = json.loads(tests)
    except ValueError:
        return 0.0
    # a layout it does not know raises: said once, not a silent 0 on every item
    tests = as_tests(tests)
    try:
        code = extract_code(completion)
        if not tests or not code or len(code) > MAX_CODE_CHARS:
            return 0.0
        passed, start = 0, time.monotonic()
        for t in tests:
            if time.monotonic() - start > budget:
                break
            if isinstance(t, dict):  # stdin -> expected stdout
                status, out = run_program(
                    code, t.get("input", ""), allow_unsafe=allow_unsafe, **limits
                )
                passed += _passed(status, out, t.get("output", ""))
            else:  # an assert statement, run after the program (_ASSERT_HARNESS)
                token = secrets.token_hex(16)
                harness = _ASSERT_HARNESS.format(code=code, test=str(t), token=token)
                status, out = run_program(harness, allow_unsafe=allow_unsafe, **limits)
                passed += status == "ok" and out.rstrip().rsplit("\n", 1)[-1] == token
        return passed / len(tests)
    except (ValueError, TypeError, OSError):
        return 0.0
