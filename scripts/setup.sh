#!/usr/bin/env bash
# Create .venv and install trait-interp with its test extras, pinned by requirements/constraints.txt
# (one pip resolve: dvc, dvc-s3, pandera and moto together, so botocore stays within aiobotocore's pin).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e '.[test]'
echo "setup: .venv ready ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
