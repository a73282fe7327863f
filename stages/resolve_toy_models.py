"""Stage resolve_toy_models: resolve_models in the toy world, after the toy models are built.

The same command as ``resolve_models``; in dvc.yaml this stage depends on the toy model folders (so
it runs after ``build_toy_models`` and ``build_toy_lora`` and again when they change) and is not
re-run on every repro, since the toy world has no hub reference that could move.
"""

from stages.resolve_models import PARAMS, main  # noqa: F401  (one implementation, two DVC stages)
