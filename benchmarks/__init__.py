"""Speed measurements, run by hand (not in CI): ``python -m benchmarks`` prints every ratio as a table and JSON."""
