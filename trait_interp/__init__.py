"""trait-interp: read and steer behavioural traits inside language models.

The library knows nothing of DVC or the folder layout: stages (in ``stages/``) pass it
objects and paths. One concept per module: see the README's "Library map".
"""

__version__ = "0.1.0"
