"""Run verl's reward-scoring cases through aha's verifiers; report agreement.

Reference: verl's own scorers, run from a snapshot extracted to /tmp/verlref (verl commit in
/tmp/verlref/VERL_COMMIT; `git archive HEAD verl/utils/reward_score verl/utils/py_functional.py
verl/utils/metric verl/utils/import_utils.py`, with empty verl/__init__.py and verl/utils/__init__.py so the
heavy package __init__ is not imported). aha: /tmp/verlcheck (clone of /work/main), installed -e in /tmp/vv.

Run:  /tmp/vv/bin/python /tmp/verlcheck_run.py            (prints a table + summary, writes /tmp/verlcheck_out.json)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, "/tmp/verlref")

import warnings

warnings.filterwarnings("ignore")

from verl.utils.reward_score import default_compute_score  # noqa: E402
from verl.utils.reward_score import math_verify as verl_math_verify  # noqa: E402

from aha.rewards.math import math_accuracy  # noqa: E402

THINK = "<think>Let me work through the problem step by step.</think>"

# Each case: (id, origin, data_source, verl-style solution string, ground_truth as verl stores it,
#             expected verl score from the verl test or None, the answer a model would put in aha's <answer>)
# origin "T:" = a verl test case (file@commit), "R:" = representative string (verl's preprocess formats).
HEAD = "tests/utils/reward_score/test_sandbox_on_cpu.py@HEAD (test_prime_math asserted 1.0 at 5a66ed26)"
CANON = "tests/utils/reward_score/test_numeric_canonicalization_on_cpu.py@87d81599 (unmerged branch)"
INTER = "tests/interactions/test_gsm8k_interaction.py@HEAD (calculate_score args)"
G8K, MATH, DAPO, NUM, GEO, MV = (
    "openai/gsm8k",
    "DigitalLearningGmbH/MATH-lighteval",
    "math_dapo",
    "numina_aops_forum",
    "hiyouga/geometry3k",
    "math_verify",  # not a data_source: verl.utils.reward_score.math_verify.compute_score (opt-in scorer)
)
PM_A = "\\begin{bmatrix}\n -7 & 6 & -8 \\\\\n 11 & -9 & 12 \\\\\n 15 & -16 & 19 \n \\end{bmatrix}"
PM_G = "\\begin{pmatrix}\n -7 & 6 & -8 \\\\\n 11 & -9 & 12 \\\\\n 15 & -16 & 19\n \\end{pmatrix}"
CASES = [
    # ---- verl test cases -------------------------------------------------------------------------------
    ("pm1-matrix", "T:" + HEAD, NUM, PM_A, PM_G, 1, PM_A),
    ("pm2-frac", "T:" + HEAD, NUM, "\\frac{\\sqrt{505}}{7}", "\\frac{\\sqrt{505}}{7}", 1, "\\frac{\\sqrt{505}}{7}"),
    ("pm3-symbolic", "T:" + HEAD, NUM, "x^2 + y^2 + 4x - 6y + 13", "(x + 2)^2 + (y - 3)^2 ", 1,
     "x^2 + y^2 + 4x - 6y + 13"),
    ("can-033", "T:" + CANON, MATH, "\\boxed{33}", "033", 1, "33"),
    ("can-+033", "T:" + CANON, MATH, "\\boxed{33}", "+033", 1, "33"),
    ("can--0", "T:" + CANON, MATH, "\\boxed{0}", "-0", 1, "0"),
    ("can-000", "T:" + CANON, MATH, "\\boxed{0}", "000", 1, "0"),
    ("gi-42", "T:" + INTER, G8K, "#### 42", "42", 1, "42"),
    ("gi-24", "T:" + INTER, G8K, "#### 24", "42", 0, "24"),
    ("gi-bare42", "T:" + INTER + " (mocked 1.0; real strict scorer)", G8K, "42", "42", None, "42"),
    # ---- GSM8K (verl preprocess: ground_truth = the number after ####, commas removed) ---------------------
    ("g-basic", "R", G8K, "She sells 16-3-4=9 eggs, 9*2=18.\n#### 18", "18", None, "18"),
    ("g-trailing-dot", "R", G8K, "So the total is 72.\n#### 72.", "72", None, "72."),
    ("g-decimal-.0", "R", G8K, "#### 72.0", "72", None, "72.0"),
    ("g-thousands", "R", G8K, "#### 1,000", "1000", None, "1,000"),
    ("g-dollar", "R", G8K, "#### $72", "72", None, "$72"),
    ("g-neg", "R", G8K, "#### -5", "-5", None, "-5"),
    ("g-no-hash", "R", G8K, "The answer is 72.", "72", None, "72"),
    ("g-hash-nospace", "R", G8K, "####72", "72", None, "72"),
    ("g-boxed", "R", G8K, "The answer is \\boxed{72}.", "72", None, "\\boxed{72}"),
    ("g-last-wins", "R", G8K, "#### 72\nWait, recheck.\n#### 73", "72", None, "73"),
    ("g-wrong", "R", G8K, "#### 71", "72", None, "71"),
    ("g-clip300", "R", G8K, "#### 72\n" + "x" * 320, "72", None, "72"),
    ("g-units", "R", G8K, "#### 72 dollars", "72", None, "72 dollars"),
    ("g-frac-gt", "R", G8K, "#### 0.5", "0.5", None, "1/2"),
    # ---- MATH (verl preprocess: ground_truth = content of the solution's last \boxed{}) ---------------------
    ("m-frac", "R", MATH, "so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", None, "\\frac{1}{2}"),
    ("m-0.5", "R", MATH, "\\boxed{0.5}", "\\frac{1}{2}", None, "0.5"),
    ("m-dfrac", "R", MATH, "\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", None, "\\dfrac{1}{2}"),
    ("m-frac12", "R", MATH, "\\boxed{\\frac12}", "\\frac{1}{2}", None, "\\frac12"),
    ("m-slash", "R", MATH, "\\boxed{1/2}", "\\frac{1}{2}", None, "1/2"),
    ("m-x=", "R", MATH, "\\boxed{x=5}", "5", None, "x=5"),
    ("m-sqrt8", "R", MATH, "\\boxed{2\\sqrt{2}}", "\\sqrt{8}", None, "2\\sqrt{2}"),
    ("m-sqrt3", "R", MATH, "\\boxed{\\frac{\\sqrt3}{2}}", "\\frac{\\sqrt{3}}{2}", None, "\\frac{\\sqrt3}{2}"),
    ("m-tuple", "R", MATH, "\\boxed{(1,2)}", "(1, 2)", None, "(1,2)"),
    ("m-percent", "R", MATH, "\\boxed{10\\%}", "10", None, "10\\%"),
    ("m-degree", "R", MATH, "\\boxed{90^\\circ}", "90", None, "90^\\circ"),
    ("m-units", "R", MATH, "\\boxed{5 \\text{ cm}}", "5", None, "5 \\text{ cm}"),
    ("m-choice", "R", MATH, "\\boxed{\\text{(A)}}", "\\text{(A)}", None, "\\text{(A)}"),
    ("m-poly", "R", MATH, "\\boxed{x^2+2x+1}", "(x+1)^2", None, "x^2+2x+1"),
    ("m-pi-approx", "R", MATH, "\\boxed{3.14}", "\\pi", None, "3.14"),
    ("m-boxed-space", "R", MATH, "The answer is $\\boxed 5$.", "5", None, "\\boxed 5"),
    ("m-fbox", "R", MATH, "\\fbox{5}", "5", None, "\\fbox{5}"),
    ("m-nobox", "R", MATH, "The answer is 5.", "5", None, "5"),
    ("m-interval", "R", MATH, "\\boxed{[1,2)}", "[1,2)", None, "[1,2)"),
    ("m-set", "R", MATH, "\\boxed{\\{1,2\\}}", "\\{1,2\\}", None, "\\{1,2\\}"),
    ("m-1/3-approx", "R", MATH, "\\boxed{0.333}", "\\frac13", None, "0.333"),
    ("m-list-order", "R", MATH, "\\boxed{3, 1}", "1, 3", None, "3, 1"),
    ("m-hedge", "R", MATH, "\\boxed{3} or \\boxed{5}", "5", None, "\\boxed{3} or \\boxed{5}"),
    ("m-wrong", "R", MATH, "\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", None, "\\frac{1}{3}"),
    ("m-thousands", "R", MATH, "\\boxed{10,000}", "10000", None, "10,000"),
    ("m-dollar", "R", MATH, "\\boxed{\\$18.90}", "18.90", None, "\\$18.90"),
    ("m-mixed", "R", MATH, "\\boxed{1\\frac{1}{2}}", "\\frac{3}{2}", None, "1\\frac{1}{2}"),
    # ---- math_dapo / aime* (DAPO prompt: last line "Answer: $Answer"; score +1 / -1) -----------------------
    ("d-basic", "R", DAPO, "...\nAnswer: 34", "34", None, "34"),
    ("d-boxed-after", "R", DAPO, "Answer: \\boxed{34}", "34", None, "\\boxed{34}"),
    ("d-trailing-dot", "R", DAPO, "Answer: 34.", "34", None, "34."),
    ("d-boxed-only", "R", DAPO, "So the answer is \\boxed{34}.", "34", None, "34"),
    ("d-thousands", "R", DAPO, "Answer: 1,000", "1000", None, "1,000"),
    ("d-assign", "R", DAPO, "Answer: x = 34", "34", None, "x = 34"),
    ("d-dollars", "R", DAPO, "Answer: $34$", "34", None, "$34$"),
    ("d-frac-vs-dec", "R", DAPO, "Answer: \\frac{1}{2}", "0.5", None, "\\frac{1}{2}"),
    ("d-units", "R", DAPO, "Answer: 34 students", "34", None, "34 students"),
    ("d-lower", "R", DAPO, "answer: 34", "34", None, "34"),
    ("d-wrong", "R", DAPO, "Answer: 35", "34", None, "35"),
    ("aime-basic", "R", "aime24", "Answer: 204", "204", None, "204"),
    ("aime-leading0", "R", "aime24", "Answer: 033", "33", None, "033"),
    # ---- prime_math (numina_*) -----------------------------------------------------------------------------
    ("p-answer-is", "R", NUM, "The final answer is 12", "12", None, "12"),
    ("p-boxed-half", "R", NUM, "\\boxed{\\frac{1}{2}}", "0.5", None, "\\frac{1}{2}"),
    ("p-pi", "R", NUM, "\\boxed{2\\pi}", "6.28", None, "2\\pi"),
    ("p-wrong", "R", NUM, "\\boxed{7}", "8", None, "7"),
    ("p-sqrt", "R", NUM, "\\boxed{2\\sqrt{2}}", "\\sqrt{8}", None, "2\\sqrt{2}"),
    # ---- verl math_verify (opt-in scorer: gt wrapped in \boxed{}, pred by Expr+Latex extraction) -------------
    ("v-half", "R", MV, "The answer is $\\frac{1}{2}$", "0.5", None, "\\frac{1}{2}"),
    ("v-list-last", "R", MV, "The roots are 1, 2, 3", "3", None, "1, 2, 3"),
    ("v-plain", "R", MV, "42", "42", None, "42"),
    ("v-boxed", "R", MV, "\\boxed{(x+1)^2}", "x^2+2x+1", None, "(x+1)^2"),
    # ---- geo3k (verl: 0.9*acc(\boxed via mathruler) + 0.1*format(<think>...</think>...\boxed{})) ----------
    ("geo-ok", "R", GEO, THINK + " The answer is \\boxed{3}", "3", None, "3"),
    ("geo-noformat", "R", GEO, "\\boxed{3}", "3", None, "3"),
]


def verl_score(ds, sol, gt):
    if ds == MV:
        r = verl_math_verify.compute_score(sol, gt)
    else:
        r = default_compute_score(ds, sol, gt)
    if isinstance(r, dict):
        return float(r["score"]), bool(r["acc"])
    return float(r), float(r) >= 0.5  # geo3k: 0.9*acc + 0.1*format


def run_cases():
    rows = []
    for cid, origin, ds, sol, gt, expected, ans in CASES:
        vs, vacc = verl_score(ds, sol, gt)
        raw = math_accuracy(sol, gt)  # the verl-style completion as it is (no tags)
        full = math_accuracy(f"{THINK}<answer>{sol}</answer>", gt)  # the whole verl string inside the tags
        tagged = math_accuracy(f"{THINK}<answer>{ans}</answer>", gt)  # the model's answer inside the tags
        rows.append(dict(id=cid, origin=origin, data_source=ds, solution=sol, ground_truth=gt,
                         expected=expected, verl_score=vs, verl_acc=vacc, aha_raw=raw,
                         aha_full_in_tags=full, aha_answer_in_tags=tagged, answer=ans))
    return rows


def summarise(rows, key):
    agree = [r for r in rows if (r[key] == 1.0) == r["verl_acc"]]
    aha_only = [r for r in rows if r[key] == 1.0 and not r["verl_acc"]]
    verl_only = [r for r in rows if r[key] != 1.0 and r["verl_acc"]]
    return agree, aha_only, verl_only


def verl_task_check():
    """aha's verl task on a verl-layout parquet: mapping, routing, odd ground_truth shapes, verl's own
    compute_score through aha's RewardRunner (verl_batch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aha.data.tasks import get_task
    from aha.rewards.runner import RewardRunner, RewardSpec

    def row(ds, q, gt, sysmsg=None):
        prompt = ([{"role": "system", "content": sysmsg}] if sysmsg else []) + [{"role": "user", "content": q}]
        return {"data_source": ds, "prompt": prompt, "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": gt},
                "extra_info": {"split": "train", "index": 0, "answer": "... #### 72", "question": q}}

    out = {}
    d = tempfile.mkdtemp(prefix="verltask")
    # verl gsm8k + MATH + dapo rows (ground_truth a string, as verl's preprocess writes)
    rows = [row(G8K, 'Q? Let\'s think step by step and output the final answer after "####".', "72"),
            row(MATH, "Q? Let's think step by step and output the final answer within \\boxed{}.", "\\frac{1}{2}"),
            row(DAPO, "Solve ... Answer: $Answer ...", "34", sysmsg="You are a helpful assistant.")]
    p = os.path.join(d, "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows), p)
    t = get_task("verl", path=p)
    ds = t.dataset("train")
    out["accuracy_reward"] = t.accuracy_reward
    out["rows"] = [{k: r.get(k) for k in ("question", "answer", "data_source", "system", "extra_info")} for r in ds]
    comps = [
        f"{THINK}<answer>72</answer>",  # gsm8k, aha format
        "Let me think.\n#### 72",  # gsm8k, the verl prompt's format
        f"{THINK}<answer>0.5</answer>",
        "so \\boxed{\\frac{1}{2}}",
        f"{THINK}<answer>34</answer>",
        "Answer: 34",
    ]
    rrows = [ds[0], ds[0], ds[1], ds[1], ds[2], ds[2]]
    runner = RewardRunner([RewardSpec(t.accuracy_reward, 1.0)], num_workers=0)
    out["aha_task_reward"] = list(zip(comps, runner.score(comps, rrows).scores[:, 0].tolist()))
    runner.close()
    # verl's own default_compute_score as a user reward through aha (verl_batch)
    runner = RewardRunner([RewardSpec("verl.utils.reward_score:default_compute_score", 1.0)], num_workers=0)
    out["verl_fn_through_aha"] = list(zip(comps, runner.score(comps, rrows).scores[:, 0].tolist()))
    runner.close()
    # odd ground_truth shapes verl datasets use: list (multi-answer), dict (searchR1 {"target": [...]}), int
    odd = [row(G8K, "Q list", ["72", "72.0"]), row("searchR1_nq", "Q dict", {"target": ["Paris"]}),
           row(G8K, "Q int", 72)]
    results = {}
    for r in odd:
        p2 = os.path.join(d, f"odd_{type(r['reward_model']['ground_truth']).__name__}.parquet")
        try:
            pq.write_table(pa.Table.from_pylist([r]), p2)
            rr = get_task("verl", path=p2).dataset("train")[0]
            good = "72" if r["data_source"] == G8K else "Paris"
            results[type(r["reward_model"]["ground_truth"]).__name__] = {
                "loaded_answer": rr["answer"],
                "score_correct_completion": math_accuracy(f"{THINK}<answer>{good}</answer>", rr["answer"])}
        except Exception as e:  # noqa: BLE001
            results[type(r["reward_model"]["ground_truth"]).__name__] = f"{type(e).__name__}: {e}"
    out["odd_ground_truth"] = results
    return out


def main():
    rows = run_cases()
    print(f"{'id':16} {'ds':12} {'verl':>5} {'acc':>5} {'exp':>4} {'raw':>4} {'full':>4} {'ans':>4}")
    for r in rows:
        print(f"{r['id']:16} {r['data_source'][:12]:12} {r['verl_score']:5.2f} {int(r['verl_acc']):5d} "
              f"{'' if r['expected'] is None else r['expected']:>4} {r['aha_raw']:4.0f} "
              f"{r['aha_full_in_tags']:4.0f} {r['aha_answer_in_tags']:4.0f}")
    t_rows = [r for r in rows if r["origin"].startswith("T:") and r["expected"] is not None]
    miss = [r["id"] for r in t_rows if int(r["verl_acc"]) != r["expected"]]
    print(f"\nverl test cases with an expectation: {len(t_rows)}; verl@HEAD misses its own expectation on: {miss}")
    summary = {}
    for key in ("aha_raw", "aha_full_in_tags", "aha_answer_in_tags"):
        a, ao, vo = summarise(rows, key)
        summary[key] = {"agree": len(a), "aha_accepts_verl_rejects": [r["id"] for r in ao],
                        "aha_rejects_verl_accepts": [r["id"] for r in vo]}
        print(f"\n[{key}] n={len(rows)} agree={len(a)} aha-accepts/verl-rejects={len(ao)} "
              f"aha-rejects/verl-accepts={len(vo)}")
        print("  aha+ verl-:", [r["id"] for r in ao])
        print("  aha- verl+:", [r["id"] for r in vo])
    task = verl_task_check()
    print("\nverl task check:")
    print(json.dumps(task, indent=1, default=str))
    with open("/tmp/verlcheck_out.json", "w") as f:
        json.dump({"cases": rows, "summary": summary, "verl_task": task}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
