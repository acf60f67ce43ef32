"""Code reward: the fraction of test cases passed by the completion's last fenced Python block.

    code_reward(completion, tests) = (# tests passed) / len(tests)

`tests` is a list of {"input": stdin, "output": expected stdout} (passed iff the program exits 0 and its
stdout equals the expected text line by line, each line stripped, surrounding blank lines ignored) or a list of
assert statements (each appended to the program; passed iff it exits 0). A JSON string of either is accepted.
The code is the last ```python / ```py / ``` block of the answer block (else of the text after </think>, else
of the whole completion).

Model code is untrusted, so every test runs once in the sandbox of `aha.rewards.sandbox` (bubblewrap: no
network, only the interpreter's files visible, a private size-limited /tmp, output read through a descriptor
the host holds, resource limits; see that module). Without bubblewrap code rewards refuse to run
(RuntimeError) unless the user opts out explicitly with `allow_unsafe=True` (RewardSpec kwargs) or the
environment variable AHA_CODE_UNSAFE=1.
"""

from __future__ import annotations

import json
import re
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
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str | None:
    """The last fenced Python (or untagged) code block of the answer (see module docstring), else None."""
    if not isinstance(completion, str):
        return None
    text = answer_block(completion)
    if text is None:
        text = completion.rsplit("</think>", 1)[-1]
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else None


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
        tests = list(tests)
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
            else:  # an assert statement appended to the program
                status, out = run_program(f"{code}\n\n{t}\n", allow_unsafe=allow_unsafe, **limits)
                passed += _passed(status, out, None)
        return passed / len(tests)
    except (ValueError, TypeError, OSError):
        return 0.0
