"""Run Math-Verify's own test cases through aha's math verifier.

Usage (from /tmp: aha has a module named math): PYTHONPATH=SRC python docs/results/verifier/mathverify_cases.py --mvtests DIR [--json OUT]
where DIR holds the tests/*.py files of huggingface/Math-Verify (5d148cf) and math-verify is installed.
aha call: math_accuracy("<answer>" + pred + "</answer>", gold)   (pred = model output, gold = reference)
Baseline: Math-Verify's own compare_strings() with the test's own params (installed math-verify).
"""
import argparse, importlib, json, multiprocessing as mp, os, shutil, sys, time, traceback

ap = argparse.ArgumentParser()
ap.add_argument("--mvtests", default="/tmp/mvtests")
ap.add_argument("--json", default="/tmp/mvrun/results.json")
ap.add_argument("--timeout", type=float, default=20.0)
args = ap.parse_args()

# make a package "tests" out of the copied test files
pkg = "/tmp/mvrun/pkg/tests"
shutil.rmtree("/tmp/mvrun/pkg", ignore_errors=True)
os.makedirs(pkg)
for f in os.listdir(args.mvtests):
    if f.endswith(".py"):
        shutil.copy(os.path.join(args.mvtests, f), pkg)
open(os.path.join(pkg, "__init__.py"), "w").close()
sys.path.insert(0, "/tmp/mvrun/pkg")

from aha.rewards.math import math_accuracy  # noqa: E402
from math_verify import parse, verify  # noqa: E402
import tests.test_all as ta  # noqa: E402

cases = []
for modname in ["test_all", "test_boxed", "test_numina_cases", "test_open_thoughts", "test_yujianll",
                "test_strict", "test_string_extraction"]:
    mod = importlib.import_module("tests." + modname)
    for name in dir(mod):
        fn = getattr(mod, name)
        if not (name.startswith("test_") and callable(fn)):
            continue
        for mark in getattr(fn, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            argnames = [a.strip() for a in (mark.args[0].split(",") if isinstance(mark.args[0], str) else mark.args[0])]
            if "gold" not in argnames:
                continue
            for i, vals in enumerate(mark.args[1]):
                vals = getattr(vals, "values", vals)
                d = dict(zip(argnames, vals))
                exp = d.get("expected", d.get("result"))
                kw = {k: d[k] for k in ("precision", "strict", "allow_set_relation_comp") if k in d}
                cases.append(dict(file=modname, test=name, idx=i, gold=d["gold"], pred=d["pred"],
                                  expected=int(exp), kw=kw))
# inline case of test_precision
cases.append(dict(file="test_all", test="test_precision", idx=0, gold="$\\frac{1}{3}$", pred="0.3333$",
                  expected=1, kw={"precision": 4}))

# match_types per test function (from the source: compare_strings(..., match_types=[...]))
import inspect, re  # noqa: E402
def match_types(modname, test):
    if modname == "test_string_extraction":
        return None
    src = inspect.getsource(getattr(importlib.import_module("tests." + modname), test))
    m = re.search(r"match_types=\[([^\]]*)\]", src)
    return [s.strip().strip("'\"") for s in m[1].split(",")] if m else ["latex", "expr"]

def run_one(c, conn):
    out = {}
    try:
        out["aha"] = int(math_accuracy("<answer>" + c["pred"] + "</answer>", c["gold"]))
    except Exception as e:
        out["aha_err"] = repr(e)
    try:
        mt = match_types(c["file"], c["test"])
        if mt is None:
            out["mv"] = int(verify(parse(c["gold"]), parse(c["pred"])))
        else:
            kw = dict(c["kw"]); 
            if "precision" in kw: kw["precision"] = kw["precision"]
            out["mv"] = int(ta.compare_strings(c["gold"], c["pred"], match_types=mt, **kw))
    except Exception as e:
        out["mv_err"] = repr(e)
    # mode B: aha's equality on the answers Math-Verify itself extracted (isolates equivalence from extraction)
    try:
        from aha.rewards.math import math_equal
        from math_verify import LatexExtractionConfig, ExprExtractionConfig
        cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        g, p = parse(c["gold"], cfg), parse(c["pred"], cfg)
        out["mv_gold_str"], out["mv_pred_str"] = (g[1] if len(g) > 1 else None), (p[1] if len(p) > 1 else None)
        out["aha_eq"] = int(bool(out["mv_gold_str"] and out["mv_pred_str"]
                                 and math_equal(out["mv_pred_str"], out["mv_gold_str"])))
    except Exception as e:
        out["aha_eq_err"] = repr(e)
    conn.send(out)

ctx = mp.get_context("fork")
res = []
t0 = time.time()
for c in cases:
    r, w = ctx.Pipe(False)
    p = ctx.Process(target=run_one, args=(c, w))
    p.start()
    out = r.recv() if r.poll(args.timeout) else {"timeout": True}
    p.join(1)
    if p.is_alive():
        p.kill(); p.join()
    c.update(out)
    res.append(c)

def kind(c):
    if c.get("timeout") or "aha" not in c:
        return "error"
    if c["aha"] == c["expected"]:
        return "agree"
    return "FP" if c["aha"] == 1 else "FN"

tally = {}
for c in res:
    c["kind"] = kind(c)
    tally[c["kind"]] = tally.get(c["kind"], 0) + 1
mv_fail = [c for c in res if c.get("mv") != c["expected"]]
print(f"{len(res)} cases in {time.time()-t0:.0f}s: {tally}")
eq = {}
for c in res:
    if "aha_eq" in c:
        k = "agree" if c["aha_eq"] == c["expected"] else ("FP" if c["aha_eq"] else "FN")
        c["kind_eq"] = k; eq[k] = eq.get(k, 0) + 1
print(f"mode B (aha math_equal on Math-Verify-extracted strings): {eq}")
print(f"installed math-verify itself fails {len(mv_fail)} of them")
json.dump(res, open(args.json, "w"), indent=1)
for k in ("FP", "FN", "error"):
    print(f"\n===== {k} =====")
    for c in res:
        if c["kind"] == k:
            print(f"[{c['file']}::{c['test']}#{c['idx']}] exp={c['expected']} aha={c.get('aha')} mv={c.get('mv')} aha_eq={c.get('aha_eq')} kw={c['kw']}\n   gold={c['gold'][:300]!r}\n   pred={c['pred'][-300:]!r}\n   mv-extracted: gold={c.get('mv_gold_str')!r} pred={c.get('mv_pred_str')!r}")
print("\n===== mode B disagreements =====")
for c in res:
    if c.get("kind_eq") not in (None, "agree"):
        print(f"[{c['kind_eq']}] [{c['file']}::{c['test']}#{c['idx']}] exp={c['expected']} kw={c['kw']} gold={c.get('mv_gold_str')!r} pred={c.get('mv_pred_str')!r}")
