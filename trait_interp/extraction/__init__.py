"""Extraction: vet the generated responses, capture pooled activations, fit one vector per layer, score held-out data."""
