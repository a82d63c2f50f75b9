#!/usr/bin/env bash
# What applying and switching LoRAs costs, on the full-size random SD1.5 (issue 15, point 3).
#
#   tools/bench/lora_switch.sh    PRECISION=auto|f32|bf16 (default auto, the CLI's default);
#                                 SUMI=<binary> skips the build; REF_STEPS=<n> runs the
#                                 reference job with n steps instead of 20 while iterating
#                                 (the RSS lines hold, the ratios are not the issue's)
#
# Sets up (once, under the gitignored tools/bench/work, shared with run.sh) the random
# checkpoint and two rank-32 kohya LoRA/LoCon files over every U-Net attention linear, resnet
# conv and text-encoder linear (tools/bench/lora_switch.py make-loras), then through `sumi serve`'s
# HTTP API: (a) one 20-step 512x512 job without LoRA (the reference), 1-step jobs (b) with A
# (first apply), (c) A again, (d) B (switch), (d2) B again, (e) none (restore), (e2) none again;
# and `sumi txt2img`, 1 step, whole processes, without and with A. Prints
#   BENCH lora-{apply,switch,restore}-{wall,cpu} <s> ratio=<s / (a)>   (limit of issue 15: 0.10)
#   BENCH lora-rss vmhwm-after-a=<MiB> vmhwm-after-e2=<MiB> ratio=<e2/a>   (limit: < 1.10)
#   BENCH lora-cli-{wall,cpu} plain=<s> lora=<s> apply=<s>
# where a cost is the job's time less the same job without a rebuild: apply b-c, switch d-c,
# restore e-e2 (also d-d2 as a second switch figure), in wall seconds and in the server's (the
# CLI's) CPU seconds, which a busy machine disturbs less. Each job's line has the CPU other
# processes used meanwhile (% of one core); a number taken beside a busy neighbour means little.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRECISION=${PRECISION:-auto}
WORK=tools/bench/work
PY=tools/reference/.venv/bin/python
CKPT=$WORK/sd15/sd15_random.safetensors
LORAS=$WORK/loras

[ -x "$PY" ] || bash tools/reference/setup_env.sh tools/reference/.venv >&2
[ -f "$CKPT" ] || "$PY" tools/reference/make_full_sd15.py "$WORK/sd15" >&2
"$PY" tools/bench/lora_switch.py make-loras "$WORK/sd15" "$LORAS"
# a copy, so that another build replacing the sumi binary mid-run changes nothing
if [ -z "${SUMI:-}" ]; then
  cargo build --release -p sumi-cli >&2
  cp "${CARGO_TARGET_DIR:-target}/release/sumi" "$WORK/sumi"
  SUMI=$WORK/sumi
fi

echo "sumi: $SUMI, tree at $(git rev-parse --short HEAD), uncommitted in crates/:" \
     "$(git status --short crates | wc -l) file(s)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
     "avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no); precision $PRECISION;" \
     "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
s=$("$PY" tools/bench/lora_switch.py serve "$SUMI" "$CKPT" "$LORAS" "$PRECISION")
c=$("$PY" tools/bench/lora_switch.py cli "$SUMI" "$CKPT" "$LORAS" "$PRECISION" "$WORK")
"$PY" tools/bench/lora_switch.py report "$s" "$c"
