#!/usr/bin/env bash
# Creates tools/apitest/.venv with the pinned `webuiapi` client from PyPI, for the
# `sumi serve` client test (crates/sumi-cli/tests/serve_webuiapi.rs skips without it).
set -euo pipefail
cd "$(dirname "$0")/../apitest"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -c 'import webuiapi, importlib.metadata as m; print("webuiapi", m.version("webuiapi"))'
