#!/usr/bin/env bash
# A 4x RRDBNet upscale (RealESRGAN_x4plus's sizes: 64 features, 23 blocks, random weights) of
# a SIZE² image (default 512) in A1111's tiles (192, overlap 8): Sumi against spandrel/PyTorch
# f32 on the CPU, in the same run (issue 16, acceptance 4).
#
#   tools/bench/upscale.sh     SIZE=512 RUNS=1 (timed runs after one warm-up each)
#
# Prints  BENCH upscale-rrdb-x4-<SIZE> sumi=<s> pytorch=<s> ratio=<sumi/pytorch>
# The PyTorch side runs first then Sumi, each with every core; a busy machine disturbs both.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE=${SIZE:-512}
RUNS=${RUNS:-1}
WORK=tools/bench/work/upscale
PY=tools/reference/.venv/bin/python
[ -x "$PY" ] || bash tools/reference/setup_env.sh tools/reference/.venv >&2
# the A1111 restatement imported from make_upscaler_fixtures.py wants A1111's Pillow 9.5.0
export PIL95=${PIL95:-tools/reference/.pil95}
[ -d "$PIL95" ] || "$PY" -m pip install --no-deps --target "$PIL95" pillow==9.5.0 >&2
[ -f "$WORK/rrdb_x4.pth" ] && [ "$(cat "$WORK/size" 2>/dev/null)" = "$SIZE" ] || {
  "$PY" tools/bench/upscale.py make "$WORK" "$SIZE" && echo "$SIZE" > "$WORK/size"; }
cargo build --release -p sumi-pipeline --example upscale_bench >&2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-);" \
     "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r _ pt psize < <("$PY" tools/bench/upscale.py torch "$WORK" "$RUNS")
read -r _ st ssize < <(UPSCALE_BENCH_OUT=$WORK/sumi.png "${CARGO_TARGET_DIR:-target}/release/examples/upscale_bench" \
  "$WORK/rrdb_x4.pth" "$WORK/in.png" "$RUNS")
[ "$psize" = "$ssize" ] || { echo "sizes differ: pytorch $psize, sumi $ssize" >&2; exit 1; }
echo "BENCH upscale-rrdb-x4-$SIZE sumi=$st pytorch=$pt ratio=$(echo "scale=3; $st / $pt" | bc)"
"$PY" - "$WORK/torch.png" "$WORK/sumi.png" <<'PYEOF'
import sys
import numpy as np
from PIL import Image
a, b = (np.asarray(Image.open(p)).astype(int) for p in sys.argv[1:3])
d = np.abs(a - b)
print(f"outputs: max {d.max()} levels apart, {np.count_nonzero(d)} of {d.size} values differ")
PYEOF
