"""Data loading: tabular CSV encoding (and later images, audio, interactions)."""
