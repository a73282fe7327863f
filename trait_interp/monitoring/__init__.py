"""Monitoring: per-token projections on trait vectors, their dynamics, massive-dim calibration, raw capture."""
