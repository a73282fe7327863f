#!/usr/bin/env bash
# Headless Chromium for the dashboard test (Debian's chromium + chromium-driver), installed only if missing.
# Needs root and apt-get (CI); elsewhere it says what to install and leaves the test to skip.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-browser: installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
else
  echo "install-browser: chromium/chromedriver missing; install Debian's chromium and chromium-driver (as root) for the dashboard test" >&2
fi
