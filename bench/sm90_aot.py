"""Compile zoo's Triton kernels for Hopper (sm90) on a machine without a GPU, and report what ptxas made of them:
registers, spill stack, shared memory, and the tensor-core schedule (wgmma instructions, their waits, barriers).
Kernel work needs no device time for this; the speed still does.

  python bench/sm90_aot.py mla_latent [BLOCK_N=32 num_warps=8 num_stages=3 ...] [--ptx out.ptx]
  python bench/sm90_aot.py few_rows
  python bench/sm90_aot.py segment_ws     # Gluon, TMA descriptors in its signature
The Triton wheel brings ptxas. Match the device's Triton (3.6: `pip install triton==3.6.0` in a side venv) where the
generated code matters. Pointers and strides are marked 16-divisible, as the JIT specializes them on the device
(without it no load is vectorized and the pipeliner leaves the loads synchronous).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compile_passes.kernels import few_rows, mla_latent, mla_latent_ws, segment_attention_ws  # noqa: E402

BF16 = "*bf16"


def tma_desc(rows: int, cols: int) -> str:
    """The signature type of a Gluon TMA descriptor for bf16 [1, rows, cols] blocks (its default shared layout)."""
    from triton.experimental.gluon import language as gl
    layout = gl.NVMMASharedLayout.get_default_for([1, rows, cols], gl.bfloat16)
    return f"tensordesc<bf16[1, {rows}, {cols}],{layout!r}>"


SEG = segment_attention_ws
KERNELS = {  # name -> (kernel, pointer types, 16-divisible int args, float args, default constexprs, warps, stages)
    "mla_latent": (mla_latent._mla_latent_kernel,
                   {**dict.fromkeys(["ql_ptr", "qp_ptr", "kv_ptr", "pe_ptr", "out_ptr", "o_ptr"], BF16),
                    "start_ptr": "*i64", "lens_ptr": "*i64", "rows_ptr": "*i64", "lse_ptr": "*fp32",
                   "active_ptr": "*i32"},
                   {"ql_b", "ql_t", "ql_h", "qp_b", "qp_t", "qp_h", "kv_b", "kv_s", "pe_b", "pe_s", "out_b", "out_t",
                    "out_h"}, {"scale"},
                   dict(C=512, R=64, BC=512, BR=64, BLOCK_H=64, BLOCK_N=64, MIN_SPAN=64, SINGLE=True,
                        MASK_WHOLE=False, PRECISION="tf32", HAS_ROWS=False, USE_PDL=True), 8, 2),
    "mla_ws": (mla_latent_ws._mla_ws_kernel,
               {**dict.fromkeys(["ql_ptr", "qp_ptr", "kv_ptr", "pe_ptr", "out_ptr", "o_ptr"], BF16),
                "start_ptr": "*i64", "lens_ptr": "*i64", "rows_ptr": "*i64", "lse_ptr": "*fp32",
                   "active_ptr": "*i32"},
               {"ql_b", "ql_t", "ql_h", "qp_b", "qp_t", "qp_h", "kv_b", "kv_s", "pe_b", "pe_s", "out_b", "out_t",
                "out_h"}, {"scale_log2"}, dict(SINGLE=True, HAS_ROWS=False, USE_PDL=True), 4, 1),
    "segment_ws": (SEG._segment_attention_kernel,
                   {"q_desc": tma_desc(SEG.BLOCK_M.value, 64), "k_desc": tma_desc(SEG.BLOCK_N.value, 64),
                    "v_desc": tma_desc(SEG.BLOCK_N.value, 64), "o_desc": tma_desc(SEG.BLOCK_M.value, 64)},
                   set(), {"scale_log2"}, {}, 4, 1),
    "few_rows": (few_rows._few_rows_kernel, dict.fromkeys(["x_ptr", "w_ptr", "b_ptr", "y_ptr"], BF16),
                 {"N", "K", "x_m", "w_n", "y_m"}, set(),
                 dict(HAS_BIAS=False, EVEN=True, BLOCK_M=16, BLOCK_N=32, BLOCK_K=256, PRECISION="tf32",
                      USE_PDL=True), 4, 4),
}


def compile_sm90(name, overrides):
    fn, ptrs, div16, floats, consts, warps, stages = KERNELS[name]
    consts = dict(consts)
    for item in overrides:
        key, value = item.split("=")
        if key == "num_warps":
            warps = int(value)
        elif key == "num_stages":
            stages = int(value)
        else:
            consts[key] = type(consts[key])(value) if not isinstance(consts[key], bool) else value == "True"
    fn = getattr(fn, "fn", fn) if not hasattr(fn, "arg_names") else fn
    sig = {a: "constexpr" if a in consts else ptrs.get(a, "fp32" if a in floats else "i32") for a in fn.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names)
             if (a in ptrs and ptrs[a].startswith("*")) or a in div16}
    source = ASTSource
    if type(fn).__name__.startswith("Gluon"):  # a Gluon kernel: its layouts need the module's warp count
        from triton.experimental.gluon._runtime import GluonASTSource as source
    src = source(fn, sig, constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()}, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    return kernel, consts, warps, stages


def resources(cubin: bytes) -> str:
    tool = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    m = re.search(r"REG:(\d+).*?STACK:(\d+).*?SHARED:(\d+)", out)
    return f"registers {m[1]}, spill stack {m[2]} B, static shared {m[3]} B" if m else out.strip()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kernel", choices=sorted(KERNELS))
    p.add_argument("overrides", nargs="*", help="CONSTEXPR=value, num_warps=, num_stages=")
    p.add_argument("--ptx", help="write the PTX here")
    args = p.parse_args()
    kernel, consts, warps, stages = compile_sm90(args.kernel, args.overrides)
    ptx = kernel.asm["ptx"]
    print(f"{args.kernel} {consts} warps {warps} stages {stages} (triton {triton.__version__}, sm90)")
    print(f"  {resources(kernel.asm['cubin'])}; dynamic shared {kernel.metadata.shared} B")
    waits = re.findall(r"wgmma.wait_group.sync.aligned (\d+)", ptx)
    print(f"  wgmma {ptx.count('wgmma.mma_async')}, waits {len(waits)} (pending counts {sorted(set(waits))}), "
          f"bar.sync {ptx.count('bar.sync')}, cp.async {ptx.count('cp.async.cg') + ptx.count('cp.async.ca')}, "
          f"mma.sync {ptx.count('mma.sync')}")
    if args.ptx:
        Path(args.ptx).write_text(ptx)


if __name__ == "__main__":
    main()
