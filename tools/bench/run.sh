#!/usr/bin/env bash
# Sumi vs PyTorch on the same work, in the same run, on this machine.
#
#   tools/bench/run.sh [NAME...]     NAME: unet-f32 vae-decode-f32 (default: all)
#
# Sets up what it needs: the reference environment (tools/reference/setup_env.sh, ~2.5 GB
# download, once) and a full-size random-weight SD1.5 checkpoint (tools/reference/
# make_full_sd15.py, ~4 GB on disk under tools/bench/work, once). Each benchmark runs one
# warm-up and RUNS timed passes (default 3) per engine and prints
#   BENCH <name> sumi=<median s> pytorch=<median s> ratio=<sumi/pytorch>
# plus a detail line: load times, peak RSS, and the CPU time other processes used during the
# run (this machine is shared: a busy neighbour makes numbers meaningless; rerun then).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
WORK=tools/bench/work
VENV=tools/reference/.venv
PY=$VENV/bin/python
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(unet-f32 vae-decode-f32)

[ -x "$PY" ] || bash tools/reference/setup_env.sh "$VENV" >&2
[ -f "$WORK/sd15/sd15_random.safetensors" ] || "$PY" tools/reference/make_full_sd15.py "$WORK/sd15" >&2
cargo build --release -p sumi-pipeline --benches >&2
BIN=$(ls -t target/release/deps/forward-* | grep -v '\.d$' | head -n 1)

# busy jiffies of the whole machine, and CPU jiffies of this script's finished children
machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
children_cpu() { awk '{print $16+$17}' /proc/$$/stat; }
median() { "$PY" -c 'import json,sys,statistics; print("%.3f" % statistics.median(json.loads(sys.argv[1])["runs_s"]))' "$1"; }
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

for name in "${names[@]}"; do
  busy0=$(machine_busy); kids0=$(children_cpu); t0=$(date +%s)
  s=$("$BIN" "$name" "$WORK/sd15/sd15_random.safetensors" "$RUNS")
  p=$(BENCH_THREADS=2 "$PY" -W ignore tools/bench/torch_forward.py "$name" "$WORK/sd15/diffusers" "$RUNS" 2>/dev/null | tail -n 1)
  echo "  raw $name: sumi $s" >&2; echo "  raw $name: pytorch $p" >&2
  busy1=$(machine_busy); kids1=$(children_cpu); t1=$(date +%s)
  hz=$(getconf CLK_TCK)
  other=$(( ( (busy1 - busy0) - (kids1 - kids0) ) * 100 / hz / ( t1 - t0 > 0 ? t1 - t0 : 1 ) ))
  ms=$(median "$s"); mp=$(median "$p")
  ratio=$("$PY" -c "print(f'{$ms/$mp:.2f}')")
  echo "BENCH $name sumi=$ms pytorch=$mp ratio=$ratio"
  echo "  detail $name: sumi runs $(field "$s" runs_s) load $(field "$s" load_s)s peak RSS $(( $(field "$s" peak_rss_kib) / 1024 )) MiB;" \
       "pytorch runs $(field "$p" runs_s) load $(field "$p" load_s)s peak RSS $(( $(field "$p" peak_rss_kib) / 1024 )) MiB;" \
       "other processes used ${other}% of one core on average"
done
