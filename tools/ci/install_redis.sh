#!/usr/bin/env bash
# Installs Debian's redis-server for the several-machines tests (crates/sumi-cli/tests/broker.rs
# starts its own on a free loopback port and skips with a reason without it). Nothing is left
# running as a service.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # a policy-rc.d of ours keeps the package from starting the service it installs
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null || true
    if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
redis-server --version || echo "redis-server unavailable: the broker tests will skip"
