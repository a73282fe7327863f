"""Shared by the bad-input tests: barely trained toy models (seconds) and a params file pointing at them."""

from __future__ import annotations

from pathlib import Path

from tests.pipeline.test_stages import build_args, invoke, make_params


def toy_models(tmp: Path, **overrides) -> Path:
    """Build base, instruct and judge toy models under ``tmp/models``; return a params file for them."""
    params = make_params(tmp, **overrides)
    result = invoke(*build_args(params, tmp / "models", tmp / "training"))
    assert result.exit_code == 0, result.output
    return params
