"""The decode kernel's inner-loop size in sm_90 SASS (compiled on the CPU, see sass.py) and the time it would
take if the SM issued one instruction a clock per scheduler and nothing else limited it (4,352 tokens, 64 rows).

    TRITON_DEFAULT_FP_FUSION=1 PYTHONPATH=src python docs/results/scale_h200/s9/lab/loop.py
"""
import collections, os, re, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton
from sass import build

def sass_of(k):
    with tempfile.TemporaryDirectory() as d:
        open(f"{d}/k.cubin", "wb").write(k.asm["cubin"])
        return subprocess.run([os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"), "-sass", f"{d}/k.cubin"], capture_output=True, text=True).stdout

def loops(sass):
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)([^;]*);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(3), m.group(4)))
    out = []
    for addr, op, args in ins:
        if op == "BRA":
            t = re.search(r"0x([0-9a-f]+)", args)
            if t and int(t.group(1), 16) < addr:
                body = [o for a, o, _ in ins if int(t.group(1), 16) <= a <= addr]
                out.append((len(body), collections.Counter(body)))
    return out

L, B, KVH, SMS, GHZ = 4352, 64, 2, 132, 1.98
for cfg in [(False, 64, 3, 0), (True, 128, 3, 0), (True, 128, 3, 1), (True, 64, 3, 0)]:
    k = build(*cfg)
    ls = loops(sass_of(k))
    n, ops = max(ls, key=lambda x: x[0])
    bn = cfg[1]
    iters = B * KVH * L / bn / SMS  # program-iterations per SM
    us = iters * 4 * n / 4 / GHZ / 1e3  # 4 warps a program, 4 schedulers an SM, one instruction a clock each
    top = " ".join(f"{o}:{c}" for o, c in ops.most_common(10))
    print(f"{'fp8' if cfg[0] else 'bf16'} BN{bn} stages {cfg[2]} conv {cfg[3]}: loop {n} instructions a warp; "
          f"issue-bound {us:.1f} us at {L} tokens | {top}")
