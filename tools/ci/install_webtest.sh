#!/usr/bin/env bash
# Installs what the web page test needs: Debian's Chromium (only when /usr/bin/chromium is
# missing), a CJK font for the 中文 screenshots (fonts-wqy-microhei, only when fontconfig knows
# no Chinese font; the test passes without it, the screenshots then show boxes) and the pinned
# playwright-core from tools/webtest/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    else
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium
fi

if command -v fc-list >/dev/null 2>&1 && [ -z "$(fc-list :lang=zh 2>/dev/null)" ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    # optional: without it the test still passes (it reads text, not pixels)
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends fonts-wqy-microhei ||
        "${SUDO[@]}" sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends fonts-wqy-microhei' ||
        echo "install_webtest: no CJK font installed; the 中文 screenshots will show boxes" >&2
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "install_webtest: npm is not installed (needed for tools/webtest)" >&2
    exit 1
fi

cd tools/webtest
# playwright-core downloads no browsers; keep any install hook away from the network anyway.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
