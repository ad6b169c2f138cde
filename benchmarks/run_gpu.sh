#!/usr/bin/env bash
# The CUDA checks and benchmarks in one prepared run (< 8 minutes on one GPU).
#
#   bash benchmarks/run_gpu.sh            # from the repository root, on a machine with CUDA
#
# 1. the CUDA tests (tests/test_cuda.py: sweep and log P on the GPU vs the CPU);
# 2. bench_mps.py --quick on cuda in float64 and float32 (start loop, max bond 30/100
#    half-sweeps, full-batch loop at bond 100, log P / 1000 samples at bond 100), each
#    written to benchmarks/results/gpu_<card>_<dtype>.json with the card's name inside;
# 3. the same quick benchmark on the CPU in this run (results/gpu_host_cpu.json), so the
#    GPU figures have a same-machine baseline.
# Every step has its own time limit; a failed step does not stop the others.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MPLBACKEND=Agg
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "run_gpu.sh: CUDA is not available on this machine" >&2
    exit 2
fi
CARD=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_').replace('/', '_'))")
OUT=${OUT:-benchmarks/results}
echo "[gpu] card: $CARD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
status=0
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py || status=1
for dt in float64 float32; do
    timeout 150 $PY benchmarks/bench_mps.py --quick --device cuda --dtype "$dt" --only train fullbatch logp \
        --out "$OUT/gpu_${CARD}_${dt}.json" || status=1
done
timeout 120 $PY benchmarks/bench_mps.py --quick --device cpu --dtype float64 --only fullbatch logp \
    --out "$OUT/gpu_host_cpu.json" || status=1
ls -l "$OUT"/gpu_* 2>/dev/null
exit $status
