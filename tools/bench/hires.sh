#!/usr/bin/env bash
# A 512x512 -> 1024x1024 hires fix on the full-size random SD1.5 (issue 16, acceptance 4):
# `sumi txt2img --hr-scale 2 --hr-upscaler Latent` against the same work in diffusers
# (tools/bench/torch_hires.py: first pass, A1111's "Latent" upscale, second pass, decode), in
# the same run, each a whole process timed with /usr/bin/time (load included) with its peak RSS.
# Sumi runs twice: --precision f32 (the same arithmetic as PyTorch's f32) and bf16 (only where
# the CPU has AVX-512 BF16; elsewhere Sumi's bf16 is a portable fallback, not a fast path).
#
#   tools/bench/hires.sh     STEPS=4 HR_STEPS=4 (Euler, CFG 7, batch 1, denoising 0.5)
#
# Prints  BENCH hires-1024 sumi=<s> sumi-bf16=<s> pytorch=<s> ratio=<sumi/pytorch>
#         ratio-bf16=<sumi-bf16/pytorch>
# and a detail line with peak RSS, the load times and the CPU time other processes used during
# the run (this machine is shared: a busy neighbour makes numbers meaningless; rerun then).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-4}
HR_STEPS=${HR_STEPS:-4}
WORK=tools/bench/work
PY=tools/reference/.venv/bin/python
CKPT=$WORK/sd15/sd15_random.safetensors
[ -x "$PY" ] || bash tools/reference/setup_env.sh tools/reference/.venv >&2
[ -f "$CKPT" ] || "$PY" tools/reference/make_full_sd15.py "$WORK/sd15" >&2
[ -f "$WORK/tokenizer/vocab.json" ] || "$PY" tools/reference/make_clip_tokenizer.py \
  crates/sumi-prompt/data/bpe_simple_vocab_16e6.txt.gz "$WORK/tokenizer" --pad sd1 >&2
cargo build --release -p sumi-cli >&2
SUMI=${CARGO_TARGET_DIR:-target}/release/sumi

machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
children_cpu() { awk '{print $16+$17}' /proc/$$/stat; }
# one whole-process run: prints "<wall s> <peak RSS MiB>"
timed() {
  /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$@" >"$WORK/hires_stdout.txt" 2>"$WORK/hires_stderr.txt" \
    || { cat "$WORK/hires_stderr.txt" >&2; return 1; }
  read -r w m < <(tail -n 1 "$WORK/time.txt"); echo "$w $(( m / 1024 ))"
}
sumi_run() {
  rm -f "$WORK/hires_sumi.png"
  timed "$SUMI" txt2img --model "$CKPT" --prompt "an anime portrait" --negative-prompt blurry \
    --steps "$STEPS" --sampler Euler --cfg-scale 7 --seed 1 --width 512 --height 512 \
    --hr-scale 2 --hr-upscaler Latent --hr-second-pass-steps "$HR_STEPS" --hr-denoising-strength 0.5 \
    --precision "$1" --output "$WORK/hires_sumi.png"
  grep -E "loaded|steps in" "$WORK/hires_stderr.txt" | sed "s/^/  sumi $1: /" >&2
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-);" \
     "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
busy0=$(machine_busy); kids0=$(children_cpu); t0=$(date +%s)
read -r s32 r32 < <(sumi_run f32)
if grep -q avx512_bf16 /proc/cpuinfo; then read -r s16 r16 < <(sumi_run bf16)
else s16=n/a r16=n/a; echo "  sumi bf16: not run, the CPU has no avx512_bf16 (auto precision is f32 here)" >&2; fi
read -r pw pr < <(timed "$PY" -W ignore tools/bench/torch_hires.py "$WORK/sd15/diffusers" "$WORK/tokenizer" "$STEPS" "$HR_STEPS")
pj=$(cat "$WORK/hires_stdout.txt")
busy1=$(machine_busy); kids1=$(children_cpu); t1=$(date +%s)
other=$(( ( (busy1 - busy0) - (kids1 - kids0) ) * 100 / $(getconf CLK_TCK) / ( t1 - t0 > 0 ? t1 - t0 : 1 ) ))
file "$WORK/hires_sumi.png" | grep -q "1024 x 1024" || { echo "sumi's image is not 1024x1024" >&2; exit 1; }
echo "BENCH hires-1024 sumi=$s32 sumi-bf16=$s16 pytorch=$pw ratio=$(echo "scale=2; $s32 / $pw" | bc)" \
     "ratio-bf16=$([ "$s16" = n/a ] && echo n/a || echo "scale=2; $s16 / $pw" | bc)"
echo "  detail hires-1024: steps $STEPS + hires $HR_STEPS; peak RSS sumi f32 $r32 MiB, bf16 $r16 MiB, pytorch $pr MiB;" \
     "pytorch in-process $pj; other processes used ${other}% of one core on average"
