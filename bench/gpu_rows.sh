#!/usr/bin/env bash
# Issue 9's GPU rows and the GPU tests, grouped so a device session spends its minutes on measuring, not on
# starting machines: each group fits one 10-minute device call and writes its logs and JSON under $OUT.
#
#   bash bench/gpu_rows.sh tests sweep      # ~4 min: GPU tests (kernels, passes, compiled vs zoo_ref), window sweep
#   bash bench/gpu_rows.sh long             # ~3 min: prefill 8192 / 30,000, decode at 8192 / 30,000 context
#   bash bench/gpu_rows.sh vision mla       # ~4 min: vision 448 / 1024 / 1792 / 8 images; MLA seed rows
#   bash bench/gpu_rows.sh mla_kernel       # ~2 min: the MLA latent kernel rows
#   bash bench/gpu_rows.sh profile          # ~2 min: kernel tables of the decode step, vision 448 / 1024, MLA
#   bash bench/gpu_rows.sh pdl              # ~1.5 min: the batch-1 decode step with ZOO_PDL=0, then 1 (A/B)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=. PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pyc}
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
for part in "$@"; do
  echo "== $part $(date -u +%T)"
  case $part in
    tests) ZOO_TEST_CUDA=1 timeout 200 python -m pytest -q -p no:randomly -n 8 --tb=short -W ignore \
             tests/compile_passes tests/zoo/test_compile_dense.py tests/zoo/test_compile_qwen3_vl.py \
             tests/zoo/test_compile_mla.py tests/zoo/test_runtime.py tests/zoo_ref/test_sampling.py ;;
    sweep) timeout 120 python bench/window_sweep.py --out "$OUT" && cat "$OUT/window_sweep.txt" ;;
    long) timeout 280 python bench/long_context.py --parts long --out "$OUT" ;;
    vision) timeout 200 python bench/qwen3_vl.py --parts vision --skip hf_static,zoo_ref --out "$OUT" ;;
    mla) timeout 150 python bench/mla.py --scenarios "prefill task,prefill batched,decode task,decode batched" \
           --methods "zoo absorb,HF DeepseekV3Attention" --out "$OUT" ;;
    mla_kernel) timeout 200 python bench/mla_kernel.py --out "$OUT" ;;
    profile) timeout 200 python bench/profile_gpu.py --what qwen,vision,mla --rows 40 --sizes 448,1024 \
               > "$OUT/profile.txt" 2>&1; tail -5 "$OUT/profile.txt" ;;
    pdl) for p in 0 1; do
           ZOO_PDL=$p timeout 100 python bench/profile_gpu.py --what qwen --rows 8 > "$OUT/profile_pdl$p.txt" 2>&1
           echo "ZOO_PDL=$p: $(grep -E 'replay wall' "$OUT/profile_pdl$p.txt")"
         done ;;
    *) echo "unknown part: $part (tests, sweep, long, vision, mla, mla_kernel, profile, pdl)"; exit 2 ;;
  esac 2>&1 | tee "$OUT/$part.log"
done
