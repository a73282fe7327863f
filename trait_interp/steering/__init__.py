"""Steering: interventions inside a ``with`` block, the coefficient search, and the judged evaluation of a trait."""
