"""Reference scores from the peers' own local checkers (run with /tmp/peerv/bin/python, never inside aha).

    peer_score.py JOB.json  ->  prints {"verl": float, "openr1": float, "openr1_binary": float, "t_verl": s, "t_openr1": s}

verl: verl/utils/reward_score/prime_code.compute_score(solution_str, ground_truth, continuous=True), as
default_compute_score calls it for data_source in {codecontests, apps, codeforces, taco} without a
sandbox_fusion_url, reduced as default_compute_score does (float(res[0])). pyext is replaced by the stand-in
/tmp/peer/pyext.py (pyext 0.7 does not build on Python 3.11).
open-r1: the evaluation script of open_r1.rewards.code_reward (its evaluation_script_template, formatted as
code_reward formats it, with open-r1's own extract_code on completion[-1]["content"]) executed locally instead
of in E2B; the value of its last expression is the reward, and an exception in it is 0.0 as open-r1's E2B
provider maps it (float(execution.text) of a failed cell -> TypeError -> 0.0). binary_code_reward: > 0.99.
"""

import ast
import json
import os
import sys
import tempfile
import textwrap
import time

sys.path.insert(0, "/tmp/peer")
SRC = open("/tmp/peer/openr1/rewards.py").read()
TREE = ast.parse(SRC)


def _openr1_parts():
    extract_src, template = None, None
    for node in ast.walk(TREE):
        if isinstance(node, ast.FunctionDef) and node.name == "extract_code":
            extract_src = ast.get_source_segment(SRC, node)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "evaluation_script_template":
            template = node.value.value
    ns = {}
    exec("import re\n" + extract_src, ns)
    return ns["extract_code"], textwrap.dedent(template)


def openr1_score(completion, verification_info):
    extract_code, template = _openr1_parts()
    code = extract_code(completion)
    script = template.format(code=json.dumps(code), test_cases=json.dumps(json.dumps(verification_info["test_cases"])))
    mod = ast.parse(script)
    last = mod.body.pop()
    ns = {}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        try:
            exec(compile(mod, "<openr1>", "exec"), ns)
            value = eval(compile(ast.Expression(last.value), "<openr1>", "eval"), ns)
            return float(value)
        except Exception as e:  # E2B: a failed cell has no text -> 0.0
            sys.stderr.write(f"openr1 script error: {type(e).__name__}\n")
            return 0.0
        finally:
            os.chdir(cwd)


def verl_score(completion, ground_truth):
    import verl_prime_code

    res = verl_prime_code.compute_score(completion, ground_truth, continuous=True)
    return float(res[0])


if __name__ == "__main__":
    job = json.load(open(sys.argv[1]))
    out = {}
    if job.get("verl_gt") is not None:
        t = time.monotonic()
        out["verl"] = verl_score(job["completion"], job["verl_gt"])
        out["t_verl"] = round(time.monotonic() - t, 2)
    if job.get("openr1_vi") is not None:
        t = time.monotonic()
        s = openr1_score(job["completion"], job["openr1_vi"])
        out["openr1"], out["openr1_binary"] = s, (1.0 if s > 0.99 else 0.0)
        out["t_openr1"] = round(time.monotonic() - t, 2)
    sys.stdout.flush()
    print("PEER_RESULT " + json.dumps(out))
