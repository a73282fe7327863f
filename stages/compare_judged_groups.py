"""Stage compare_judged_groups: compare_groups with labels from a judge verdict (label_responses)."""

from stages.compare_groups import PARAMS, main  # noqa: F401  (one implementation, two DVC stages)
