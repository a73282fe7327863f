"""trait-interp: read and steer behavioural traits inside language models.

The library knows nothing of DVC or the folder layout: stages (in ``stages/``) pass it objects
and paths. It is grouped by pipeline phase (core, extraction, steering, monitoring, toy, judge,
analyses, dashboard): see docs/conventions.md, "Library map".
"""

__version__ = "0.1.0"
