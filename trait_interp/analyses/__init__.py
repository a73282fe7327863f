"""Analyses over projection tables and vectors: pure functions, no I/O (the stages read and write).

- ``stats``: group statistics (signed Cohen's d, bootstrap CI, Welch p-value).
- ``group_comparison``: per-response mean projections compared between two labelled groups.
- ``correlation``: trait-by-trait correlation of response means and of lagged token trajectories.
- ``decomposition``: share of responses in each quadrant of two traits' thresholds.
- ``pairing``: which layers two traits are compared at when they were projected at different layers.
- ``model_diff``: paired comparison of two model variants on the same tokens.
- ``cross_evaluation``: how each trait's vector separates every other trait's held-out data.
"""
