"""The same CPU arithmetic on every x86 machine: torch's CPU kernels pinned to AVX2 in every stage process.

Why: torch picks its CPU kernels by instruction set (its own vectorised ops, oneDNN's), and AVX-512
kernels round differently from AVX2 ones. Training the toy world follows another
trajectory then: other weights, other vetting, steering and gate results, and a fresh clone's
``dvc repro`` no longer gives the committed dvc.lock (measured on an AVX-512 box: the trained-world
tests' gate fired on 0.5 of the harmful prompts instead of 0.75; pinned to AVX2, all of them pass and
the toy repro gives the committed outputs). So each stage process asks for AVX2 kernels before torch loads,
unless the variable is already set (yours wins) or ``TRAIT_INTERP_CPU_KERNELS=native``. GPU work is
untouched; on a CPU with AVX-512, CPU-bound stages lose some speed.

Standard library only: it runs at the start of every stage command, before anything imports torch.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping

CHOICE_VARIABLE = "TRAIT_INTERP_CPU_KERNELS"
"""``avx2`` (the default) or ``native`` (the machine's own kernels: faster on AVX-512, other rounding)."""

AVX2_KERNELS: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised CPU ops
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (mkldnn) kernels
}
"""MKL is left to itself: its conditional-reproducibility mode (``MKL_CBWR``) gives other vectors than
MKL's default does on AVX2 and on AVX-512 machines alike (measured on the toy extraction), while its
default already agreed between the two."""


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return any(line.startswith("flags") and " avx2" in line for line in cpuinfo)
    except OSError:
        return False


def pin_cpu_kernels(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set the AVX2 kernel variables that are not set yet (x86 with AVX2 only); returns those it set."""
    choice = environ.get(CHOICE_VARIABLE, "avx2")
    if choice not in ("avx2", "native"):
        raise SystemExit(f"error: {CHOICE_VARIABLE}={choice!r}: use avx2 (the default) or native")
    if choice == "native" or platform.machine().lower() not in ("x86_64", "amd64") or not _has_avx2():
        return {}
    added = {key: value for key, value in AVX2_KERNELS.items() if key not in environ}
    environ.update(added)
    return added
