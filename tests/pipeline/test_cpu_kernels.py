"""Stage processes compute with AVX2 kernels on every x86 machine that has them (stages/_cpu_kernels.py).

The truth is torch's own report of the kernels it dispatched to, in a fresh process started as DVC
starts a stage (``python -m stages``) and in this test process (conftest pins them before torch loads).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from stages._cpu_kernels import (
    AVX2_KERNELS,
    CHOICE_VARIABLE,
    _has_avx2,
    pin_cpu_kernels,
)
from tests.conftest import REPO

needs_avx2 = pytest.mark.skipif(not _has_avx2(), reason="this CPU has no AVX2: nothing is pinned")


def capability_in_a_stage_process(**env: str) -> str:
    """The kernels torch uses in ``python -m stages`` started with ``env`` on top of a clean environment."""
    base = {key: value for key, value in os.environ.items() if key not in AVX2_KERNELS and key != CHOICE_VARIABLE}
    script = ("from stages._cpu_kernels import pin_cpu_kernels; pin_cpu_kernels(); "
              "import torch; print(torch.backends.cpu.get_cpu_capability())")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**base, **env}, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


@needs_avx2
def test_a_stage_process_and_this_one_use_avx2_kernels():
    assert capability_in_a_stage_process() == "AVX2"
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    # the entry point DVC runs does the same, before it imports anything else
    main = (REPO / "stages/__main__.py").read_text()
    assert main.index("pin_cpu_kernels()") < main.index("import run_on_server")


@needs_avx2
def test_native_or_a_variable_set_by_hand_wins():
    plain = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           capture_output=True, text=True, timeout=120, check=True,
                           env={k: v for k, v in os.environ.items() if k not in AVX2_KERNELS}).stdout.strip()
    assert capability_in_a_stage_process(**{CHOICE_VARIABLE: "native"}) == plain
    assert capability_in_a_stage_process(ATEN_CPU_CAPABILITY="default") == "DEFAULT"
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}
    assert pin_cpu_kernels(environ) == {"ATEN_CPU_CAPABILITY": "avx2"} and environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"


def test_an_unknown_choice_is_a_one_line_error():
    with pytest.raises(SystemExit, match=rf"^error: {CHOICE_VARIABLE}='fast': use avx2 \(the default\) or native$"):
        pin_cpu_kernels({CHOICE_VARIABLE: "fast"})
