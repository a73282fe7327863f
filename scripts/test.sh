#!/usr/bin/env bash
# Set up the environment (idempotent; incl. headless Chromium when root) and run the whole test suite. `.ci/run` calls exactly this.
# The suite runs as two pytest processes side by side (`--shard 0/2` and `--shard 1/2`, see tests/conftest.py),
# one per core, their lines prefixed; both must pass. Arguments (a test, a folder, -k ...) run one process instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/install-browser.sh  # chromium + chromium-driver for the dashboard test, if missing
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
shared=$(mktemp -d -t trait-interp-tests-XXXXXX)
trap 'rm -rf "$shared"' EXIT
export TRAIT_INTERP_TEST_SHARED="$shared/shared"  # the reduced toy project, built once for both
mkdir -p "$TRAIT_INTERP_TEST_SHARED"
# one thread each (torch, OpenMP, BLAS), for the shards and the stage processes they start: two processes
# on two cores; with two threads each, tiny models spend their time in thread barriers (measured: a
# module of stage tests, two copies side by side, 73 s each with 2 threads, 49 s with 1)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
pids=()
for shard in 0 1; do
  ( set -o pipefail
    # one line per test (-v): a dots line would reach the prefixing sed only once it is full
    PYTHONUNBUFFERED=1 .venv/bin/python -m pytest -v --durations=12 -p no:cacheprovider --shard "$shard/2" --basetemp "$shared/shard$shard" 2>&1 |
      sed -u "s/^/[shard $shard] /" ) &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
[ "$status" -eq 0 ] && echo "tests: both shards passed" || echo "tests: a shard failed (see its [shard K] lines above)"
exit "$status"
