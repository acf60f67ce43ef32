"""Compile attn_layout.py's kernel variants for sm_90 on the CPU (no GPU needed: Triton + ptxas + cuobjdump) and
count their SASS instructions (static, whole kernel). cfg = (fp8?, block_n, stages, conv, vt).

    TRITON_DEFAULT_FP_FUSION=1 PYTHONPATH=src python docs/results/scale_h200/s9/lab/sass.py [--f8]
"""
import collections, os, re, subprocess, sys, tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from attn_layout import attn

def build(quant, bn, stages, conv, vt=0, twoh=0, noscale=0, warps=4):
    kv = "*fp8e4nv" if quant else "*bf16"
    names = attn.arg_names
    types = dict(Q="*bf16", KC=kv, VC=kv, KS="*fp32", VS="*fp32", BT="*i32", LENS="*i32", MO="*fp32", ML="*fp32", scale="fp32")
    const = dict(G=6, BLOCK_G=64 if conv == 3 else 16, D=128, PAGE=16, BLOCK_N=bn, SPLITS=4, QUANT=quant, NOSCALE=bool(noscale), TWOH=bool(twoh), CONV=conv, VT=bool(vt), KVH=2)
    sig = {n: "constexpr" if n in const else types.get(n, "i32") for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if sig[n].startswith("*") or n in ("sqb", "sqh", "skt", "skh", "sbt")}
    src = ASTSource(fn=attn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()}, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))

KEEP = ("QGMMA", "HGMMA", "WARPGROUP", "LDS", "LDGSTS", "F2F", "HMMA", "PRMT", "LOP3", "SHF", "STS", "LDSM", "MUFU", "I2F")
def main():
    cfgs = [(False, 64, 3, 0, 0), (True, 128, 3, 0, 0), (True, 128, 3, 1, 0), (True, 128, 3, 0, 1), (True, 128, 3, 1, 1)]
    if "--f8" in sys.argv:  # conv 3: both dots in e4m3 (QGMMA: Hopper's fp8 wgmma)
        cfgs = [(True, 128, 3, 3, 1), (True, 64, 3, 3, 1), (True, 128, 3, 3, 0), (True, 128, 3, 0, 0)]
    for cfg in cfgs:
        k = build(*cfg)
        with tempfile.TemporaryDirectory() as d:
            open(f"{d}/k.cubin", "wb").write(k.asm["cubin"])
            sass = subprocess.run([os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"), "-sass", f"{d}/k.cubin"], capture_output=True, text=True).stdout
        ops = collections.Counter()
        for line in sass.splitlines():
            m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
            if m:
                ops[m.group(2)] += 1
        total = sum(ops.values())
        print(cfg, "smem", k.metadata.shared, "total", total)
        print("   ", " ".join(f"{o}:{c}" for c, o in sorted(((c, o) for o, c in ops.items() if o.startswith(KEEP)), reverse=True)))


if __name__ == "__main__":
    main()
