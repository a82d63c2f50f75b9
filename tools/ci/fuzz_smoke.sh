#!/usr/bin/env bash
# Fuzz smoke run (issue 14): builds fuzz/ (cargo-fuzz, AddressSanitizer, debug assertions and
# overflow checks) and runs every target for SUMI_FUZZ_SECONDS seconds (default 60) from its
# committed corpus fuzz/corpus/<target>/; a crash, a leak, an input slower than 10 s or one
# that takes more than 2 GiB fails the run, and its input is left in fuzz/artifacts/<target>/.
# Without a nightly toolchain or cargo-fuzz it prints "fuzz smoke skipped: <reason>" and exits 0.
#
# Environment: SUMI_FUZZ_SECONDS (per target), SUMI_FUZZ_TARGETS (space-separated subset),
# SUMI_FUZZ_WORK (folder that receives the new inputs found, one folder per target; default a
# temporary folder removed at the end, so the committed corpora are never changed).
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    echo "fuzz smoke skipped: $*"
    exit 0
}
cargo +nightly --version >/dev/null 2>&1 || skip "no nightly toolchain (rustup toolchain install nightly)"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    skip "cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"

secs="${SUMI_FUZZ_SECONDS:-60}"
[ "$secs" = 0 ] && skip "SUMI_FUZZ_SECONDS=0"
# the same flags for build and run, so that run does not rebuild
flags=(--debug-assertions --codegen-units 16)
targets="${SUMI_FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
work="${SUMI_FUZZ_WORK:-}"
if [ -z "$work" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi

# longest input per target: the formats' useful sizes (a 64 KiB prompt is the server's limit)
max_len() {
    case "$1" in
    yaml_config | infotext) echo 16384 ;;
    *) echo 65536 ;;
    esac
}

# per-target libFuzzer options beyond the common ones
extra() {
    case "$1" in
    # image-webp allocates an EXIF chunk's declared size (up to 4 GiB, lazily zeroed) when
    # `load_image` asks for the orientation: fuzz/findings/webp_exif_chunk_4gib.webp; single
    # allocations up to 8 GiB pass until that is fixed (the 2 GiB RSS limit still holds)
    image) echo -malloc_limit_mb=8192 ;;
    esac
}

start=$SECONDS
cargo +nightly fuzz build "${flags[@]}"
echo "fuzz smoke: built in $((SECONDS - start)) s"
failed=()
for t in $targets; do
    mkdir -p "$work/$t" "fuzz/corpus/$t"
    log="$work/$t.log"
    if cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
        -print_final_stats=1 $(extra "$t") >"$log" 2>&1; then
        runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)"
        echo "fuzz smoke: $t ok, ${runs:-?} executions in ${secs} s"
    else
        tail -n 40 "$log"
        echo "fuzz smoke: $t FAILED (input in fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
done
echo "fuzz smoke: $((SECONDS - start)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke: failing targets: ${failed[*]}"
    exit 1
fi
