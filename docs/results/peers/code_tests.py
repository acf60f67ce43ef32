"""aha's code reward against open-r1's and verl's code checkers on one set of problems.

Setup (exact commands run):
    git clone -q /work/main /tmp/codecheck
    apt-get update -qq && apt-get install -y -qq bubblewrap          # aha's sandbox (README: apt-get install bubblewrap)
    python3 -m venv /tmp/cv && /tmp/cv/bin/pip install -q torch==2.13.0 && /tmp/cv/bin/pip install -q -e "/tmp/codecheck[test]"
    # peers, from the search tool's mirrors (fetch github:huggingface/open-r1, github:volcengine/verl):
    mkdir -p /tmp/peer/verl_prime_code /tmp/peer/openr1
    for f in __init__.py utils.py testing_util.py; do
      git --git-dir=/work/.mirror/volcengine+verl/repo show HEAD:verl/utils/reward_score/prime_code/$f > /tmp/peer/verl_prime_code/$f; done
    git --git-dir=/work/.mirror/huggingface+open-r1/repo show HEAD:src/open_r1/rewards.py > /tmp/peer/openr1/rewards.py
    python3 -m venv /tmp/peerv && /tmp/peerv/bin/pip install -q numpy      # pyext does not build on 3.11:
    # /tmp/peer/pyext.py is a 10-line stand-in for pyext.RuntimeModule.from_string; /tmp/peer/peer_score.py runs the peers
Run:
    /tmp/cv/bin/python /tmp/codecheck_run.py            # -> /tmp/codecheck_results.json and a table on stdout
    /tmp/cv/bin/python /tmp/codecheck_run.py --no-peers # aha only
    /tmp/cv/bin/python /tmp/codecheck_concurrency.py    # a fork bomb in one sandbox beside correct programs
    /tmp/cv/bin/python /tmp/codecheck_nproc_why.py      # the same, with the sandbox's stderr kept: EAGAIN in setuid/exec
    rm -f /tmp/codecheck_pwned /tmp/x                   # written on the host by the (unsandboxed) peer checkers
Agreement counts: python3 -c "import json; d=json.load(open('/tmp/codecheck_results.json')); ..." (see report)

verl versions: volcengine/verl b178a3cd5; open-r1 1416fa0; aha: /work/main at the clone's HEAD.
Peers run unsandboxed on this host, so the dangerous cases (fork bomb, memory, endless output) are not run
through them (marked "-"); their result there is by design, see the report.
"""

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

from aha.rewards import RewardRunner
from aha.rewards.code import code_reward, extract_code, isolation

PEER_PY = "/tmp/peerv/bin/python"
SECRET = "/tmp/codecheck_secret.txt"
open(SECRET, "w").write("TOPSECRET\n")

# host listeners the network attacks aim at (loopback and an abstract unix socket; nothing off this machine)
# (only in the main process: aha's reward workers start by spawn/forkserver and import this script again)
PORT = 0
if __name__ == "__main__":
    SRV = socket.socket()
    SRV.bind(("127.0.0.1", 0))
    SRV.listen(64)
    PORT = SRV.getsockname()[1]
    USRV = socket.socket(socket.AF_UNIX)
    USRV.bind("\0codecheck-abstract")
    USRV.listen(64)


def r1(code, lang="python"):
    """An R1-style completion: reasoning, then the code in the answer block."""
    return f"<think>\nI will read the input and compute.\n</think>\n<answer>\n```{lang}\n{code}\n```\n</answer>"


ADD = "a, b = map(int, input().split())\nprint(a + b)"
ADD_T = [("2 3\n", "5\n"), ("10 -4\n", "6\n")]
LINES3 = [("3\n", "1\n2\n3\n")]  # print 1..n, one per line


def stdin(name, group, completion, tests, peers=True, note=""):
    return dict(name=name, group=group, completion=completion, kind="stdin", tests=tests, peers=peers, note=note)


def call(name, group, completion, fn, args, outs, cls=False, peers=True, note="", wrap_out=False):
    return dict(name=name, group=group, completion=completion, kind="call", fn=fn, args=args, outs=outs,
                cls=cls, peers=peers, note=note, wrap_out=wrap_out)


# verl's own test problem (tests/utils/reward_score/test_sandbox_on_cpu.py: prime_code_answers / prime_code_gts)
def _verl_test_problem():
    import ast
    src = subprocess.run(["git", "--git-dir=/work/.mirror/volcengine+verl/repo", "show",
                          "HEAD:tests/utils/reward_score/test_sandbox_on_cpu.py"], capture_output=True, text=True).stdout
    vals = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("prime_code_answers", "prime_code_gts"):
            vals[node.targets[0].id] = eval(ast.get_source_segment(src, node.value))
    return vals["prime_code_answers"][0], vals["prime_code_gts"]


KING, KING_GTS = _verl_test_problem()

CASES = []
# ---------------- stdin/stdout problems (APPS / CodeContests style) ----------------
CASES += [
    stdin("add_correct", "stdin", r1(ADD), ADD_T),
    stdin("add_wrong", "stdin", r1(ADD.replace("+", "-")), ADD_T),
    stdin("add_half", "stdin", r1("print(5)"), ADD_T),
    stdin("multi_T_cases", "stdin",
          r1("import sys\nd=sys.stdin.read().split()\nt=int(d[0])\nfor i in range(t):\n"
             "    print(int(d[1+2*i])+int(d[2+2*i]))"),
          [("3\n1 2\n3 4\n5 6\n", "3\n7\n11\n"), ("1\n100 200\n", "300\n")]),
    stdin("large_output_1.3MB", "stdin", r1("n=int(input())\nprint('\\n'.join(map(str,range(1,n+1))))"),
          [("200000\n", "\n".join(map(str, range(1, 200001))) + "\n")]),
    stdin("large_output_22MB", "stdin", r1("import sys\nn=int(input())\nsys.stdout.write('1234567890\\n'*n)"),
          [("2000000\n", "1234567890\n" * 2000000)], note="legit output over aha's 16 MiB FSIZE"),
    stdin("large_input_7MB", "stdin", r1("import sys\nd=sys.stdin.buffer.read().split()\nprint(sum(map(int,d[1:])))"),
          [("1000000\n" + " ".join(str(i) for i in range(1000000)) + "\n", str(sum(range(1000000))) + "\n")]),
    stdin("float_tolerance", "stdin", r1("print(1/3)"), [("\n", "0.333333333\n")],
          note="expected 9 digits, program prints 16"),
    stdin("many_tests_100_correct", "stdin", r1(ADD), [(f"{i} {i}\n", f"{2*i}\n") for i in range(100)],
          note="aha budget=3 s over all tests"),
    stdin("slow_correct_1.5s", "stdin",
          r1("import time\nt=time.time()\nwhile time.time()-t<1.5: pass\n" + ADD), ADD_T[:1],
          note="1.5 s a test; aha timeout 1 s, peers 5 s"),
    stdin("deep_recursion_1e5", "stdin",
          r1("import sys\nsys.setrecursionlimit(10**6)\ndef f(n):\n    return 0 if n==0 else 1+f(n-1)\n"
             "print(f(int(input())))"), [("100000\n", "100000\n")]),
    stdin("memory_300MB_legit", "stdin", r1("x=bytearray(300*2**20)\nprint(len(x)>>20)"), [("\n", "300\n")]),
    stdin("memory_700MB_legit", "stdin", r1("x=bytearray(700*2**20)\nprint(len(x)>>20)"), [("\n", "700\n")],
          note="aha memory_mb=512"),
    stdin("threads_100", "stdin",
          r1("import threading,time\nr=[]\nts=[threading.Thread(target=lambda i: (time.sleep(0.3), r.append(i)),args=(i,)) for i in range(100)]\n"
             "[t.start() for t in ts]\n[t.join() for t in ts]\nprint(len(r))"), [("\n", "100\n")],
          note="aha RLIMIT_NPROC 64 counts threads"),
]
if KING:
    for i, gt in enumerate(KING_GTS):
        g = json.loads(gt)
        CASES.append(stdin(f"verl_king_gt{i}_unfenced", "stdin", KING, list(zip(g["inputs"], g["outputs"])),
                           note="verl's own test: expects 1.0 and 0.9"))
        CASES.append(stdin(f"verl_king_gt{i}_fenced", "stdin", r1(KING), list(zip(g["inputs"], g["outputs"]))))

# ---------------- whitespace / newline differences (expected "1\n2\n3\n") ----------------
W = {
    "ws_trailing_spaces": "for i in range(1,4): print(i, end=' \\n')",
    "ws_no_final_newline": "import sys\nsys.stdout.write('1\\n2\\n3')",
    "ws_extra_blank_lines_end": "print('1\\n2\\n3\\n\\n\\n')",
    "ws_leading_blank_line": "print('\\n1\\n2\\n3')",
    "ws_crlf": "import sys\nsys.stdout.write('1\\r\\n2\\r\\n3\\r\\n')",
    "ws_missing_last_line": "print('1\\n2')",
    "ws_extra_last_line": "print('1\\n2\\n3\\n4')",
    "ws_blank_line_middle": "print('1\\n\\n2\\n3')",
    "ws_one_line_space_sep": "print('1 2 3')",
    "ws_tabs_leading": "print('\\t1\\n\\t2\\n\\t3')",
}
for name, code in W.items():
    CASES.append(stdin(name, "whitespace", r1("n=input()\n" + code), LINES3))
CASES += [
    stdin("ws_internal_double_space", "whitespace", r1("input()\nprint('1  2')"), [("x\n", "1 2\n")]),
    stdin("ws_case_YES_vs_Yes", "whitespace", r1("input()\nprint('YES')"), [("x\n", "Yes\n")]),
    stdin("ws_expected_has_trailing_space", "whitespace", r1("input()\nprint('1 2')"), [("x\n", "1 2 \n\n")]),
    stdin("ws_empty_expected_empty_out", "whitespace", r1("input()"), [("x\n", "")]),
    stdin("ws_empty_out_expected_0", "whitespace", r1("input()"), [("x\n", "0\n")]),
]

# ---------------- call-based (fn_name) problems, APPS / TACO / prime_code style ----------------
CASES += [
    call("fn_add", "call", r1("def add(a, b):\n    return a + b"), "add", [[1, 2], [5, -7]], [3, -2]),
    call("fn_two_sum_list", "call",
         r1("def two_sum(nums, target):\n    seen={}\n    for i,x in enumerate(nums):\n"
            "        if target-x in seen: return [seen[target-x], i]\n        seen[x]=i"),
         "two_sum", [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]], [[0, 1], [1, 2]]),
    call("fn_returns_tuple", "call",
         r1("def two_sum(nums, target):\n    seen={}\n    for i,x in enumerate(nums):\n"
            "        if target-x in seen: return (seen[target-x], i)\n        seen[x]=i"),
         "two_sum", [[[2, 7, 11, 15], 9]], [[0, 1]], note="tuple vs expected list"),
    call("fn_class_solution", "call",
         r1("class Solution:\n    def maxProfit(self, prices):\n        lo, best = 10**9, 0\n"
            "        for p in prices:\n            lo=min(lo,p); best=max(best,p-lo)\n        return best"),
         "maxProfit", [[[7, 1, 5, 3, 6, 4]], [[7, 6, 4, 3, 1]]], [5, 0], cls=True),
    call("fn_apps_wrapped_output", "call", r1("def square(x):\n    return x*x"), "square", [[3], [4]], [9, 16],
         wrap_out=True, note="APPS stores outputs as [[9]]"),
    call("fn_prints_instead", "call", r1("def add(a, b):\n    print(a + b)"), "add", [[1, 2]], [3]),
    call("fn_wrong", "call", r1("def add(a, b):\n    return a - b"), "add", [[1, 2], [0, 0]], [3, 0]),
    call("fn_missing", "call", r1("def plus(a, b):\n    return a + b"), "add", [[1, 2]], [3]),
    # reward hacks on the call-based mapping (asserts appended after the program)
    call("fn_hack_sys_exit0_at_end", "call", r1("def add(a, b):\n    return 0\nimport sys\nsys.exit(0)"), "add",
         [[1, 2], [5, -7]], [3, -2]),
    call("fn_hack_os_exit0_at_end", "call", r1("def add(a, b):\n    return 0\nimport os\nos._exit(0)"), "add",
         [[1, 2], [5, -7]], [3, -2]),
    call("fn_hack_eq_always_true", "call",
         r1("class Any:\n    def __eq__(self, o): return True\ndef add(a, b):\n    return Any()"), "add",
         [[1, 2], [5, -7]], [3, -2]),
]
CASES += [
    stdin("timeout_on_one_of_two", "stdin", r1(ADD.replace("print(a + b)", "while a == 10: pass\nprint(a + b)")), ADD_T,
          note="2nd test loops"),
]

# ---------------- adversarial completions (stdin "", expected "OK": the attack pays only if it works) ------
OK = [("", "OK\n")]
ADV = {
    "adv_infinite_loop": ("while True:\n    pass", True),
    "adv_sleep_then_answer": ("import time\ntime.sleep(30)\nprint('OK')", True),
    "adv_fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", False),
    "adv_bg_child_then_answer": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\n"
                                 "print('OK')", False),
    "adv_memory_4GB": ("x = bytearray(4 * 1024 ** 3)\nprint('OK')", False),
    "adv_memory_tmpfs_fill": ("open('/tmp/f','wb').write(b'x'*(200<<20))\nprint('OK')", False),
    "adv_print_forever": ("while True:\n    print('x' * 10000)", False),
    "adv_read_secret_tmp": (f"print('OK' if 'TOPSECRET' in open({SECRET!r}).read() else 'no')", True),
    "adv_read_etc_shadow": ("print('OK' if open('/etc/shadow').read() else 'no')", True),
    "adv_read_home_bashrc": ("print('OK' if open('/root/.bashrc').read() is not None else 'no')", True),
    "adv_list_proc_host": ("import os\nprint('OK' if len([p for p in os.listdir('/proc') if p.isdigit()])>5 else 'no')",
                           True),
    "adv_write_tmp": ("open('/tmp/codecheck_pwned','w').write('x')\nprint('OK')", True),
    "adv_write_interpreter_prefix": ("import sys\nopen(sys.prefix+'/codecheck_pwned','w').write('x')\nprint('OK')", False),
    "adv_write_home": ("open('/root/codecheck_pwned','w').write('x')\nprint('OK')", False),
    "adv_net_loopback": (f"import socket\nsocket.create_connection(('127.0.0.1', {PORT}), timeout=1)\nprint('OK')", True),
    "adv_net_abstract_unix": ("import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0codecheck-abstract')\n"
                              "print('OK')", True),
    "adv_kill_all": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('OK')", False),
    "adv_sys_exit0_after_answer": ("import sys\nprint('OK')\nsys.exit(0)", True),
    "adv_sys_exit0_before_answer": ("import sys\nsys.exit(0)\nprint('OK')", True),
    "adv_exit1_after_answer": ("import sys\nprint('OK')\nsys.exit(1)", True),
    "adv_os_exit0_unflushed": ("import os\nprint('OK')\nos._exit(0)", True),
    "adv_os_exit0_flushed": ("import os, sys\nprint('OK')\nsys.stdout.flush()\nos._exit(0)", True),
    "adv_raise_after_answer": ("print('OK')\nraise ValueError('boom')", True),
    "adv_raise": ("raise ValueError('boom')", True),
    "adv_syntax_error": ("print('OK'\n", True),
    "adv_stdout_close_reopen": ("import os\nos.close(1)\nfd=os.open('/tmp/x', os.O_CREAT|os.O_WRONLY)\n"
                                "os.write(fd, b'OK\\n')", True),
}
for name, (code, peers) in ADV.items():
    CASES.append(stdin(name, "adversarial", r1(code), OK, peers=peers))

# ---------------- code fences ----------------
B = "```"
CASES += [
    stdin("fence_python_answer_block", "fence", r1(ADD), ADD_T),
    stdin("fence_none_pure_code", "fence", ADD + "\n", ADD_T),
    stdin("fence_py", "fence", r1(ADD, "py"), ADD_T),
    stdin("fence_python3", "fence", r1(ADD, "python3"), ADD_T),
    stdin("fence_Python_caps", "fence", r1(ADD, "Python"), ADD_T),
    stdin("fence_plain", "fence", r1(ADD, ""), ADD_T),
    stdin("fence_two_blocks_last_is_usage", "fence",
          f"<answer>\n{B}python\n{ADD}\n{B}\nUsage:\n{B}python\n# run: python main.py < in.txt\n{B}\n</answer>", ADD_T),
    stdin("fence_two_blocks_draft_then_final", "fence",
          f"<answer>\nDraft:\n{B}python\nprint(0)\n{B}\nFinal:\n{B}python\n{ADD}\n{B}\n</answer>", ADD_T),
    stdin("fence_code_then_plain_output_block", "fence",
          f"<answer>\n{B}python\n{ADD}\n{B}\nFor input `2 3` it prints:\n{B}\n5\n{B}\n</answer>", ADD_T,
          note="untagged block after the python block"),
    stdin("fence_code_then_text_output_block", "fence",
          f"<answer>\n{B}python\n{ADD}\n{B}\nOutput:\n{B}text\n5\n{B}\n</answer>", ADD_T),
    stdin("fence_code_only_in_think", "fence",
          f"<think>\n{B}python\n{ADD}\n{B}\n</think>\n<answer>\nThe program above.\n</answer>", ADD_T),
    stdin("fence_unclosed_truncated", "fence", f"<think>ok</think>\n{B}python\n{ADD}\n", ADD_T),
    stdin("fence_no_think_trailing_prose", "fence", f"{B}python\n{ADD}\n{B}\nThis reads two ints.", ADD_T),
    stdin("fence_crlf_newlines", "fence", f"{B}python\r\n{ADD.replace(chr(10), chr(13)+chr(10))}\r\n{B}", ADD_T),
    stdin("fence_javascript", "fence", r1("console.log(5)", "javascript"), ADD_T),
    stdin("fence_example_input_block_first", "fence",
          f"Example input:\n{B}\n2 3\n{B}\n{B}python\n{ADD}\n{B}", ADD_T),
    stdin("fence_main_guard", "fence", r1("def main():\n    " + ADD.replace("\n", "\n    ") +
                                           "\nif __name__ == '__main__':\n    main()"), ADD_T),
]


# ---------------- mapping into each format ----------------
def aha_tests(case):
    """aha's `tests` column, mapped as aha's docs say: [{input, output}] or assert statements."""
    if case["kind"] == "stdin":
        return [{"input": i, "output": o} for i, o in case["tests"]]
    fn = f"Solution().{case['fn']}" if case["cls"] else case["fn"]
    return [f"assert {fn}(*{a!r}) == {o!r}" for a, o in zip(case["args"], case["outs"])]


def verl_gt(case):
    """verl's reward_model.ground_truth for codecontests/apps/taco: a JSON string {inputs, outputs[, fn_name]}."""
    if case["kind"] == "stdin":
        return json.dumps({"inputs": [i for i, _ in case["tests"]], "outputs": [o for _, o in case["tests"]]})
    outs = [[o] if case["wrap_out"] else o for o in case["outs"]]
    return json.dumps({"fn_name": case["fn"], "inputs": ["\n".join(json.dumps(x) for x in a) for a in case["args"]],
                       "outputs": [json.dumps(o) for o in outs]})


def openr1_vi(case):
    """open-r1's verification_info: {language, test_cases: [{input, output, type: stdin_stdout}]} (stdin only)."""
    if case["kind"] != "stdin":
        return None
    return {"language": "python",
            "test_cases": [{"input": i, "output": o, "type": "stdin_stdout"} for i, o in case["tests"]]}


def nobody_procs():
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if os.stat(d).st_uid == 65534 and "Z" not in open(f"{d}/stat").read().split(")")[-1][:3]:
                out.append(d)
        except OSError:
            pass
    return out


def run_aha(case):
    t = time.monotonic()
    try:
        score = code_reward(case["completion"], aha_tests(case))
        err = None
    except Exception as e:  # a crash of the reward itself
        score, err = None, f"{type(e).__name__}: {e}"
    dt = time.monotonic() - t
    time.sleep(0.3)
    left = nobody_procs()
    return dict(aha=score, t_aha=round(dt, 2), aha_err=err, leftover_procs=len(left))


def run_peers(case):
    job = dict(completion=case["completion"], verl_gt=verl_gt(case), openr1_vi=openr1_vi(case))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # this host sets it; aha clears it
        p = subprocess.run([PEER_PY, "/tmp/peer/peer_score.py", f.name], capture_output=True, text=True,
                           timeout=240, cwd="/tmp/peer", env=env)
        line = [x for x in p.stdout.splitlines() if x.startswith("PEER_RESULT ")]
        return json.loads(line[-1][12:]) if line else {"peer_err": (p.stderr or p.stdout)[-300:]}
    except subprocess.TimeoutExpired:
        return {"peer_err": "peer checker hung > 240 s"}
    finally:
        os.unlink(f.name)


def runner_checks():
    """What a user coming from open-r1 / verl meets through aha's RewardRunner and file tasks."""
    out = {}
    vi = openr1_vi(CASES[0])
    gt = verl_gt(CASES[0])
    comp = CASES[0]["completion"]

    def score(rows, comps=None, **kw):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                with RewardRunner([("code", 1.0)], timeout=6.0, **kw) as r:
                    res = r.score(comps or [comp] * len(rows), rows)
                s = res.scores[:, 0].tolist()
            except Exception as e:
                s = f"{type(e).__name__}: {e}"
        return {"scores": s, "warnings": [str(x.message) for x in w]}

    out["openr1_row_verification_info"] = score([{"prompt": "p", "verification_info": vi}])
    out["verl_row_reward_model"] = score([{"prompt": "p", "data_source": "codecontests",
                                           "reward_model": {"style": "rule", "ground_truth": gt}}])
    out["tests=verl_ground_truth_json_string"] = score([{"tests": gt}])
    out["tests=verl_ground_truth_dict"] = score([{"tests": json.loads(gt)}])
    out["tests=verl_call_based_dict"] = score(
        [{"tests": json.loads(verl_gt(CASES[[c['name'] for c in CASES].index('fn_add')]))}],
        comps=[r1("def add(a, b):\n    return a + b")])
    out["tests=openr1_verification_info_dict"] = score([{"tests": vi}])
    out["tests=openr1_test_cases_list"] = score([{"tests": vi["test_cases"]}])
    out["tests=apps_input_output_keys"] = score([{"tests": [{"input": ["2 3"], "output": ["5"]}]}])

    # file tasks, as the README maps columns
    from aha.data.tasks import get_task
    d = tempfile.mkdtemp()
    with open(f"{d}/o.jsonl", "w") as f:
        f.write(json.dumps({"problem": "add", "verification_info": vi}) + "\n")
    with open(f"{d}/v.jsonl", "w") as f:
        f.write(json.dumps({"prompt": [{"role": "user", "content": "add"}], "data_source": "codecontests",
                            "reward_model": {"style": "rule", "ground_truth": gt}}) + "\n")
    for key, kw in {
        "task_openr1_no_mapping": dict(name="jsonl", path=f"{d}/o.jsonl", question="problem", accuracy_reward="code"),
        "task_openr1_columns_tests=verification_info.test_cases": dict(
            name="jsonl", path=f"{d}/o.jsonl", question="problem", accuracy_reward="code",
            columns={"tests": "verification_info.test_cases"}),
        "task_verl_accuracy_code": dict(name="verl", path=f"{d}/v.jsonl", accuracy_reward="code"),
        "task_verl_columns_tests=reward_model.ground_truth": dict(
            name="verl", path=f"{d}/v.jsonl", accuracy_reward="code", columns={"tests": "reward_model.ground_truth"}),
    }.items():
        name = kw.pop("name")
        try:
            rows = get_task(name, **kw).dataset("train")
            out[key] = {"tests_field": repr(rows[0].get("tests"))[:120],
                        "score": code_reward(comp, rows[0]["tests"])}
        except Exception as e:
            out[key] = f"{type(e).__name__}: {e}"

    # concurrency: a fork bomb beside correct programs in other reward workers (they share uid nobody's NPROC)
    bomb = r1(ADV["adv_fork_bomb"][0])
    comps = [bomb, comp, comp, comp, bomb, comp, comp, comp]
    t = time.monotonic()
    out["concurrent_forkbomb_and_correct"] = score([{"tests": aha_tests(CASES[0])}] * 8, comps=comps)
    out["concurrent_forkbomb_and_correct"]["seconds"] = round(time.monotonic() - t, 2)
    # budget under load: the 100-test correct solution, 4 at once in 2 workers
    many = [c for c in CASES if c["name"] == "many_tests_100_correct"][0]
    out["many_tests_100_x4_runner"] = score([{"tests": aha_tests(many)}] * 4, comps=[many["completion"]] * 4,
                                            num_workers=2)
    return out


def main():
    peers = "--no-peers" not in sys.argv
    assert isolation() == "bwrap", "install bubblewrap first"
    results = []
    for case in CASES:
        r = dict(name=case["name"], group=case["group"], note=case["note"])
        r.update(run_aha(case))
        results.append(r)
        print(f"aha  {case['name']:40s} {r['aha']}  {r['t_aha']}s  left={r['leftover_procs']}", flush=True)
    r_pwn = [p for p in ("/tmp/codecheck_pwned", sys.prefix + "/codecheck_pwned", "/root/codecheck_pwned", "/tmp/x")
             if os.path.exists(p)]
    if peers:
        todo = [(i, c) for i, c in enumerate(CASES) if c["peers"]]
        with ThreadPoolExecutor(2) as ex:
            for (i, c), pr in zip(todo, ex.map(lambda ic: run_peers(ic[1]), todo)):
                results[i].update(pr)
                print(f"peer {c['name']:40s} {pr}", flush=True)
    extra = runner_checks()
    left = nobody_procs() + glob.glob(os.path.join(tempfile.gettempdir(), "aha-scratch-*"))
    json.dump(dict(cases=results, runner=extra, pwned_by_aha=r_pwn, leftovers=left),
              open("/tmp/codecheck_results.json", "w"), indent=1)
    print("\n%-40s %6s %6s %6s %6s %6s" % ("case", "aha", "t_aha", "verl", "or1", "or1bin"))
    for r in results:
        f = lambda k: "-" if r.get(k) is None else (f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]))  # noqa
        print("%-40s %6s %6s %6s %6s %6s %s" % (r["name"], f("aha"), f("t_aha"), f("verl"), f("openr1"),
                                                f("openr1_binary"), r.get("aha_err") or r.get("peer_err") or ""))
    print(json.dumps(extra, indent=1))
    print("file written by aha's sandbox outside:", r_pwn, "| leftovers:", left)


if __name__ == "__main__":
    main()
