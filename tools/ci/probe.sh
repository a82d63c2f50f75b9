#!/usr/bin/env bash
# Issue 14's probe script against the release binary that `cargo test --workspace --release`
# built (nothing is built here): one line per probe, a summary, exit 1 when a probe fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/sumi
if [ ! -x "$bin" ]; then
    echo "probe: $bin is missing (run cargo test --workspace --release first)" >&2
    exit 1
fi
timeout 300 python3 tools/probe/probe.py "$bin"
