#!/usr/bin/env bash
# Set up the environment (idempotent; incl. headless Chromium when root) and run the whole test suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-browser.sh  # chromium + chromium-driver for the dashboard test, if missing
exec .venv/bin/python -m pytest -q "$@"
