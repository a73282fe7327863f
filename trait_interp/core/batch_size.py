"""The ``batch_size`` param type, light (no torch): stage modules declare settings with it at import.

``core.batching`` re-exports it with the machinery that resolves ``auto`` from free CUDA memory.
"""

from __future__ import annotations

from typing import Literal

BatchSize = int | Literal["auto"]  # a batch_size param: a fixed size, or auto (from free CUDA memory)
