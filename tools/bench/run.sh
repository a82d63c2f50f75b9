#!/usr/bin/env bash
# Sumi vs PyTorch and OpenVINO on the same work, in the same run, on this machine.
#
#   tools/bench/run.sh [NAME...]
#     NAME: unet-f32 vae-decode-f32 unet-bf16 vae-decode-bf16 img2img-512 fast-img2img-512
#           (default: these), unet-bf16-768 unet-bf16-1024 unet-f32-768 unet-f32-1024
#           unet-sdxl-f32 unet-sdxl-bf16 (only when named)
#
# unet-bf16 compares Sumi's bf16 path with PyTorch f32 (ratio=) and with PyTorch's model cast
# to bf16 (ratio-bf16=); vae-decode-bf16 compares Sumi bf16 with PyTorch f32. img2img-512 is
# end to end: `sumi img2img` (default precision, auto) against diffusers'
# StableDiffusionImg2ImgPipeline, 512x512, 20 steps, strength 0.75, DPM++ 2M Karras, CFG 7,
# each a whole process (load included) timed with /usr/bin/time, with its peak RSS.
# fast-img2img-512 is the fast path for CPU users, end to end in the same way: an LCM-LoRA-shaped
# file (tools/reference/make_lcm_lora.py: LCM-LoRA SD1.5's key layout and shapes, rank 64, random
# weights), the LCM sampler, 4 steps at strength 0.5, CFG 1 (the U-Net at batch 1), TAESD
# decode, 512x512 (issue 21's target: 10 s); diffusers: LCMScheduler, the same LoRA merged,
# AutoencoderTiny decode (tools/bench/torch_fast_img2img.py). The two do not run the same number
# of U-Net calls: Sumi follows A1111 (t_enc = int(0.5 · 4) = 2, sampling from the second of the
# schedule's sigmas: 3 calls), diffusers runs int(4 · 0.5) = 2. Its BENCH line adds Sumi's load
# time, its sampling pass (steps and seconds, from the CLI's `N steps in Xs` line) and its
# warning count.
#
# Sets up what it needs: the reference environment (tools/reference/setup_env.sh, ~2.5 GB
# download, once) and a full-size random-weight SD1.5 checkpoint (tools/reference/
# make_full_sd15.py, ~4 GB on disk under tools/bench/work, once). Each benchmark runs one
# warm-up and RUNS timed passes (default 3) per engine and prints
#   BENCH <name> sumi=<median s> pytorch=<median s> ratio=<sumi/pytorch>
# plus a detail line: load times, peak RSS, and the CPU time other processes used during the
# run (this machine is shared: a busy neighbour makes numbers meaningless; rerun then).
# The network lines (unet-*, vae-decode-*) also carry OpenVINO (tools/bench/openvino_forward.py:
# the diffusers module converted with ov.convert_model, compiled at the line's precision, 2
# threads, latency hint):  openvino=<median s> ratio-ov=<sumi/openvino> ov-precision=<what the
# compiled model reports it runs: bf16 on the bf16 lines, or the line says it fell back>.
#
# unet-bf16-768 and unet-bf16-1024 are unet-bf16 at latent 96 and 128 (768² and 1024², 9216
# and 16384 tokens in the first attention), same line format (unet-f32-768 and unet-f32-1024
# likewise for unet-f32, for CPUs without bf16 instructions, where the bf16 lines compare
# nothing); OpenVINO converts the U-Net at
# that size for the run (~3.4 GB of disk while it runs). unet-sdxl-f32/unet-sdxl-bf16: the
# SDXL base U-Net (full size, random weights: tools/reference/make_full_sdxl.py, ~5.2 GB on
# disk under tools/bench/work/sdxl, once), batch 2, 128x128 latent, 77 tokens of 2048 context,
# ADM vector 2816; Sumi against PyTorch f32 (pytorch=; measured once per run.sh invocation and
# shared by both lines) and, on the bf16 line, PyTorch bf16 (pytorch-bf16=, or pytorch-bf16>S
# when its first pass had not ended after S seconds: TORCH_BF16_LIMIT_S), with each
# engine's peak RSS and Sumi's against the U-Net file's size + 2 GiB. No OpenVINO there: the
# conversion of the f32 SDXL U-Net needs more memory than this machine has. SDXL_LATENT=32
# (say) runs the SDXL lines at a smaller latent for a quick check (the line then says latent=).
# Expect each SDXL line to take several minutes; never run two engines at once (f32 SDXL is
# 10.3 GB of weights in memory).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
WORK=tools/bench/work
VENV=tools/reference/.venv
PY=$VENV/bin/python
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(unet-f32 vae-decode-f32 unet-bf16 vae-decode-bf16 img2img-512 fast-img2img-512)

[ -x "$PY" ] || bash tools/reference/setup_env.sh "$VENV" >&2
[ -f "$WORK/sd15/sd15_random.safetensors" ] || "$PY" tools/reference/make_full_sd15.py "$WORK/sd15" >&2
cargo build --release -p sumi-pipeline --benches >&2
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/forward-* | grep -v '\.d$' | head -n 1)
CKPT=$WORK/sd15/sd15_random.safetensors

# busy jiffies of the whole machine, and CPU jiffies of this script's finished children
machine_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
children_cpu() { awk '{print $16+$17}' /proc/$$/stat; }
median() { "$PY" -c 'import json,sys,statistics; print("%.3f" % statistics.median(json.loads(sys.argv[1])["runs_s"]))' "$1"; }
field() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# RUNS whole-process runs of a command: {"runs_s": [wall...], "peak_rss_kib": max}
timed_runs() {
  local walls=() rss=0 w m
  for _ in $(seq "$RUNS"); do
    [ -n "${CLEAN:-}" ] && rm -f "$CLEAN"
    /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" \
      || { cat "$WORK/stderr.txt" >&2; return 1; }
    read -r w m < <(tail -n 1 "$WORK/time.txt")
    walls+=("$w"); [ "$m" -gt "$rss" ] && rss=$m
  done
  echo "{\"runs_s\": [$(IFS=,; echo "${walls[*]}")], \"load_s\": 0, \"peak_rss_kib\": $rss}"
}

SDXL=$WORK/sdxl/diffusers
SDXL_LATENT=${SDXL_LATENT:-128}
declare -A torch_done

# PyTorch's JSON for WHAT DIR LATENT in `tl`, measured once per invocation of this script.
# PyTorch's bf16 gets TORCH_BF16_LIMIT_S seconds (default 900, load included): on a CPU without
# bf16 instructions it runs at a few GFLOP/s, and a run past the limit stops with `"runs_s": []`
# and the time its first pass had taken (see torch_forward.py).
torch_line() {
  local key="$1 $2 $3" limit=0
  [ "${1%-bf16}" != "$1" ] && limit=${TORCH_BF16_LIMIT_S:-900}
  if [ -z "${torch_done[$key]:-}" ]; then
    torch_done[$key]=$(BENCH_THREADS=2 BENCH_LIMIT_S=$limit "$PY" -W ignore tools/bench/torch_forward.py "$1" "$2" "$RUNS" "$3" 2>/dev/null | tail -n 1)
  else
    echo "  raw $name: pytorch $1 (latent $3) as measured for an earlier line of this run" >&2
  fi
  tl=${torch_done[$key]}
}

# a U-Net line at latent LATENT: Sumi NET-PREC against PyTorch NET-f32 and (bf16) NET-bf16;
# sets s, p, pb and extra
unet_vs_torch() {  # NET PREC CHECKPOINT DIFFUSERS_DIR LATENT
  s=$("$BIN" "$1-$2" "$3" "$RUNS" "$5")
  torch_line "$1-f32" "$4" "$5"; p=$tl
  pb=""
  if [ "$2" = bf16 ]; then
    torch_line "$1-bf16" "$4" "$5"; pb=$tl
    echo "  raw $name: pytorch-bf16 $pb" >&2
    if [ "$(field "$pb" runs_s)" = "[]" ]; then
      # stopped at the limit: its first pass took longer than stopped_after_s
      mb=$("$PY" -c "print('%.3f' % $(field "$pb" stopped_after_s))")
      extra=" pytorch-bf16>$mb ratio-bf16<$("$PY" -c "print(f'{$(median "$s")/$mb:.2f}')")"
    else
      mb=$(median "$pb")
      extra=" pytorch-bf16=$mb ratio-bf16=$("$PY" -c "print(f'{$(median "$s")/$mb:.2f}')")"
    fi
  fi
}

img2img_setup() {
  [ -f "$WORK/tokenizer/vocab.json" ] || "$PY" tools/reference/make_clip_tokenizer.py \
    crates/sumi-prompt/data/bpe_simple_vocab_16e6.txt.gz "$WORK/tokenizer" --pad sd1 >&2
  [ -f "$WORK/init512.png" ] || "$PY" -c 'import sys, numpy as np; from PIL import Image
y, x = np.mgrid[0:512, 0:512]; r = np.random.default_rng(0).integers(0, 40, (512, 512, 3))
a = np.stack([x // 2, y // 2, (x + y) // 4], -1) + r
Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(sys.argv[1])' "$WORK/init512.png"
  cargo build --release -p sumi-cli >&2
  SUMI=${CARGO_TARGET_DIR:-target}/release/sumi
}

for name in "${names[@]}"; do
  busy0=$(machine_busy); kids0=$(children_cpu); t0=$(date +%s)
  extra=""
  case "$name" in
    img2img-512)
      img2img_setup
      s=$(CLEAN="$WORK/img2img_sumi.png" timed_runs "$SUMI" img2img --model "$CKPT" \
            --init-image "$WORK/init512.png" --prompt "an anime portrait" --negative-prompt blurry \
            --steps 20 --denoising-strength 0.75 --sampler "DPM++ 2M" --scheduler karras \
            --cfg-scale 7 --seed 1 --width 512 --height 512 --quiet --output "$WORK/img2img_sumi.png")
      p=$(timed_runs "$PY" -W ignore tools/bench/torch_img2img.py "$WORK/sd15/diffusers" \
            "$WORK/init512.png" "$WORK/tokenizer")
      ;;
    fast-img2img-512)
      img2img_setup
      LCM=$WORK/lcm/lcm_lora_sd15.safetensors
      [ -f "$LCM" ] || "$PY" tools/reference/make_lcm_lora.py \
        "$WORK/sd15/diffusers/unet/diffusion_pytorch_model.safetensors" "$LCM" >&2
      TAESD=../shared/data/taesd
      s=$(CLEAN="$WORK/fast_sumi.png" timed_runs "$SUMI" img2img --model "$CKPT" \
            --lora-dir "$WORK/lcm" --init-image "$WORK/init512.png" \
            --prompt "an anime portrait <lora:lcm_lora_sd15:1>" --negative-prompt blurry \
            --steps 4 --denoising-strength 0.5 --sampler LCM --cfg-scale 1 --seed 1 \
            --width 512 --height 512 --taesd-decoder "$TAESD/taesd_decoder.safetensors" \
            --output "$WORK/fast_sumi.png")
      # the load time and the sampling pass (the CLI's `N steps in Xs` line), from the last
      # run's stderr
      s=$("$PY" -c 'import json, re, sys
d = json.loads(sys.argv[1]); e = open(sys.argv[2]).read()
m = re.search(r"loaded .* in ([0-9.]+)s", e); d["load_s"] = float(m.group(1)) if m else 0
m = re.search(r"([0-9]+) steps in ([0-9.]+)s", e)
d["steps"], d["steps_s"] = (int(m.group(1)), float(m.group(2))) if m else (0, 0)
d["warnings"] = e.count("warning:"); print(json.dumps(d))' "$s" "$WORK/stderr.txt")
      grep "warning:" "$WORK/stderr.txt" >&2 || true
      p=$(timed_runs "$PY" -W ignore tools/bench/torch_fast_img2img.py "$WORK/sd15/diffusers" \
            "$WORK/init512.png" "$WORK/tokenizer" "$LCM" "$TAESD/taesd_decoder.safetensors")
      extra=" target-10s=$("$PY" -c "print('met' if $(median "$s") <= 10 else 'OVER')")"
      extra="$extra sumi-load=$(field "$s" load_s) sumi-steps=$(field "$s" steps)"
      extra="$extra sumi-steps-s=$(field "$s" steps_s)"
      extra="$extra sumi-warnings=$(field "$s" warnings)"
      ;;
    unet-bf16)
      unet_vs_torch unet bf16 "$CKPT" "$WORK/sd15/diffusers" 64
      ;;
    unet-bf16-768 | unet-bf16-1024 | unet-f32-768 | unet-f32-1024)
      prec=${name#unet-}
      unet_vs_torch unet "${prec%-*}" "$CKPT" "$WORK/sd15/diffusers" $(( ${name##*-} / 8 ))
      ;;
    unet-sdxl-f32 | unet-sdxl-bf16)
      [ -f "$SDXL/unet/diffusion_pytorch_model.safetensors" ] || "$PY" tools/reference/make_full_sdxl.py "$WORK/sdxl" >&2
      unet_vs_torch unet-sdxl "${name##*-}" "$SDXL" "$SDXL" "$SDXL_LATENT"
      [ "$SDXL_LATENT" = 128 ] || extra="$extra latent=$SDXL_LATENT"
      ;;
    *-bf16)
      s=$("$BIN" "$name" "$CKPT" "$RUNS")
      p=$(BENCH_THREADS=2 "$PY" -W ignore tools/bench/torch_forward.py "${name%-bf16}-f32" "$WORK/sd15/diffusers" "$RUNS" 2>/dev/null | tail -n 1)
      ;;
    *)
      s=$("$BIN" "$name" "$CKPT" "$RUNS")
      p=$(BENCH_THREADS=2 "$PY" -W ignore tools/bench/torch_forward.py "$name" "$WORK/sd15/diffusers" "$RUNS" 2>/dev/null | tail -n 1)
      ;;
  esac
  case "$name" in
    unet-sdxl-*) ;;
    unet-* | vae-decode-*)
      o=$(BENCH_THREADS=2 "$PY" -W ignore tools/bench/openvino_forward.py "$name" "$WORK/sd15/diffusers" "$RUNS" 2>/dev/null | tail -n 1)
      echo "  raw $name: openvino $o" >&2
      mo=$(median "$o")
      extra="$extra openvino=$mo ratio-ov=$("$PY" -c "print(f'{$(median "$s")/$mo:.2f}')") ov-precision=$(field "$o" precision)"
      ;;
  esac
  echo "  raw $name: sumi $s" >&2; echo "  raw $name: pytorch $p" >&2
  busy1=$(machine_busy); kids1=$(children_cpu); t1=$(date +%s)
  hz=$(getconf CLK_TCK)
  other=$(( ( (busy1 - busy0) - (kids1 - kids0) ) * 100 / hz / ( t1 - t0 > 0 ? t1 - t0 : 1 ) ))
  ms=$(median "$s"); mp=$(median "$p")
  ratio=$("$PY" -c "print(f'{$ms/$mp:.2f}')")
  echo "BENCH $name sumi=$ms pytorch=$mp ratio=$ratio$extra"
  echo "  detail $name: sumi runs $(field "$s" runs_s) load $(field "$s" load_s)s peak RSS $(( $(field "$s" peak_rss_kib) / 1024 )) MiB;" \
       "pytorch runs $(field "$p" runs_s) load $(field "$p" load_s)s peak RSS $(( $(field "$p" peak_rss_kib) / 1024 )) MiB;" \
       "other processes used ${other}% of one core on average"
  if [ "${name#unet-sdxl-}" != "$name" ]; then
    size=$(stat -c %s "$SDXL/unet/diffusion_pytorch_model.safetensors"); rss=$(( $(field "$s" peak_rss_kib) * 1024 ))
    echo "  detail $name: sumi peak RSS $(( rss >> 20 )) MiB vs U-Net file + 2 GiB = $(( (size >> 20) + 2048 )) MiB" \
         "($([ "$rss" -le $(( size + (2 << 30) )) ] && echo within || echo OVER))$([ -n "$pb" ] &&
         echo "; pytorch-bf16 peak RSS $(( $(field "$pb" peak_rss_kib) / 1024 )) MiB")"
  fi
  if [ "$name" = img2img-512 ]; then
    size=$(stat -c %s "$CKPT"); rss=$(( $(field "$s" peak_rss_kib) * 1024 ))
    echo "  detail $name: sumi peak RSS $(( rss >> 20 )) MiB vs checkpoint + 1.5 GiB = $(( (size >> 20) + 1536 )) MiB" \
         "($([ "$rss" -le $(( size + (3 << 29) )) ] && echo within || echo OVER))"
  fi
done
