#!/usr/bin/env bash
# What applying and switching LoRAs costs, on the full-size random SD1.5 (issue 15, point 3).
#
#   tools/bench/lora_switch.sh    PRECISION=auto|f32|bf16 (default auto, the CLI's default);
#                                 SUMI=<binary> skips the build
#
# Sets up (once, under the gitignored tools/bench/work, shared with run.sh) the random
# checkpoint and two rank-32 kohya LoRA/LoCon files over every U-Net attention linear, resnet
# conv and text-encoder linear (tools/bench/lora_switch.py make-loras), then through `sumi serve`'s
# HTTP API: (a) one 20-step 512x512 job without LoRA (the reference), 1-step jobs (b) with A
# (first apply), (c) A again, (d) B (switch), (d2) B again, (e) none (restore), (e2) none again;
# and `sumi txt2img`, 1 step, whole processes, without and with A. Prints
#   BENCH lora-apply|lora-switch|lora-restore <s> ratio=<s / (a)>   (limit of issue 15: 0.10)
#   BENCH lora-rss vmhwm-after-a=<MiB> vmhwm-after-e2=<MiB> ratio=<e2/a>   (limit: < 1.10)
#   BENCH lora-cli plain=<s> lora=<s> apply=<s>
# where a cost is the job's time less the same job without a rebuild: apply b-c, switch d-c,
# restore e-e2 (also d-d2 as a second switch figure). Each job's line has the CPU other
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
# a copy, so that another build replacing target/release/sumi mid-run changes nothing
if [ -z "${SUMI:-}" ]; then
  cargo build --release -p sumi-cli >&2
  cp target/release/sumi "$WORK/sumi"
  SUMI=$WORK/sumi
fi

echo "sumi: $SUMI, tree at $(git rev-parse --short HEAD), uncommitted in crates/:" \
     "$(git status --short crates | wc -l) file(s)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
     "avx512_bf16: $(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no); precision $PRECISION;" \
     "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
s=$("$PY" tools/bench/lora_switch.py serve "$SUMI" "$CKPT" "$LORAS" "$PRECISION")
c=$("$PY" tools/bench/lora_switch.py cli "$SUMI" "$CKPT" "$LORAS" "$PRECISION" "$WORK")
"$PY" - "$s" "$c" <<'EOF'
import json, sys
s, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
w = {k: v["wall_s"] for k, v in s.items()}
ref = w["a"]
for k in "a b c d d2 e e2".split():
    j = s[k]
    print(f"  job {k}: {j['steps']} step(s) lora={j['lora']} {j['wall_s']:.2f} s, other processes "
          f"{j['other_pct']}% of a core, VmHWM {j['vmhwm_kib'] >> 10} MiB, warnings {j['warnings']}")
for name, cost in (("lora-apply", w["b"] - w["c"]), ("lora-switch", w["d"] - w["c"]),
                   ("lora-switch-vs-d2", w["d"] - w["d2"]), ("lora-restore", w["e"] - w["e2"])):
    print(f"BENCH {name} {cost:.2f} s ratio={cost / ref:.3f} (of the 20-step job, {ref:.1f} s; limit 0.10)")
a, e = s["a"]["vmhwm_kib"], s["e2"]["vmhwm_kib"]
print(f"BENCH lora-rss vmhwm-after-a={a >> 10} MiB vmhwm-after-e2={e >> 10} MiB ratio={e / a:.3f} (limit < 1.10)")
for k, v in c.items():
    print(f"  {k}: {v['wall_s']:.2f} s, peak RSS {v['peak_rss_kib'] >> 10} MiB, other processes {v['other_pct']}% of a core")
plain = min(c["cli_plain"]["wall_s"], c["cli_plain2"]["wall_s"])
lora = min(c["cli_lora"]["wall_s"], c["cli_lora2"]["wall_s"])
print(f"BENCH lora-cli plain={plain:.2f} s lora={lora:.2f} s apply={lora - plain:.2f} s (best of 2 each)")
EOF
