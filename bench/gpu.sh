#!/usr/bin/env bash
# The GPU checks of issue #13 in ONE call of the device tool (≈ 7 min on an H100/H200):
# the GPU test tier, the decode benchmark at the issue's four shapes (transformers in fp32 only:
# its bf16 is 3.5x slower there and not the baseline), a stage breakdown, and kernels per step.
#
#   device run: bash bench/gpu.sh          (from the repository root; results land in $OUT
#                                           and are copied to bench/results/gpu/ here after)
#
# The device image has torch + CUDA, transformers, pandas, scipy; the package runs from the
# checkout (PYTHONPATH=.). Each part runs even if an earlier one failed, so one bad test
# does not cost the benchmark; the exit status is the first failure's.
set -u
export PYTHONPATH=. PYTHONUNBUFFERED=1
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
status=0
# step LOG CMD...: run CMD, its output to the screen and LOG; remember the first failure
step() { local log=$1; shift; echo "== $*"; "$@" 2>&1 | tee "$log"; local rc=${PIPESTATUS[0]}
         [ "$rc" -eq 0 ] || { echo "!! $1 exited $rc"; [ $status -ne 0 ] || status=$rc; }; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__)"; } | tee "$out/machine.txt"

# 1. GPU tests: CUDA-graph steps (buckets, pooling) and the counter sampler on the GPU
step "$out/tests.txt" python -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_fusion.py \
     tests/test_sampling.py -k "cuda or gpu or counter or pool or bucket or fixed_shape"

# 2. the benchmark: batch x seconds as in the issue, fp32 and bf16, transformers vs native
step "$out/decode.log" python bench/decode.py --configs 1x10 8x10 32x10 1x30 --precisions float32 bfloat16 \
     --impls transformers native --reference-precisions float32 --out "$out"

# 3. where a bf16 step goes on the GPU (labels of the generator's own loop; graphs replayed)
step "$out/breakdown.txt" python - <<'PY'
import musicgen_edu as mg
gen = mg.MusicGenerator("random-small", dtype="bfloat16", progress=False)
df = mg.breakdown(gen, "80s synth pop", duration=2.0, warmup=1)
print(df[["stage", "seconds", "share"]].to_string(index=False))
print({k: df.attrs[k] for k in ("wall_s", "steps", "device", "backend")})
plain = min(gen.generate("80s synth pop", duration=2.0, seed=0).timings["total_s"] for _ in range(3))
print("labelled stages / profiled wall:", round(df[df.stage != "other"].seconds.sum() / df.attrs["wall_s"], 3),
      "| profiled wall / unprofiled run:", round(df.attrs["wall_s"] / plain, 3), "(targets: within 10 %)")
out = gen.generate("80s synth pop", duration=10, seed=0)
again = gen.generate("80s synth pop", duration=10, seed=0)
print("capture_s first", out.timings["capture_s"], "second", again.timings["capture_s"],
      "steps/s", round(again.timings["steps_per_s"], 1), "total_s", round(again.timings["total_s"], 3))
PY
# 4. kernels and ms per step: graph vs eager vs Inductor inside the graph (compile ≈ 30 s)
step "$out/profile.log" timeout 300 python bench/gpu_profile.py --out "$out"
exit $status
