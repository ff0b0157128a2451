"""Serving export: one SavedModel per task, raw features -> calibrated probability (DESIGN §8)."""
