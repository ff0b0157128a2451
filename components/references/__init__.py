"""Reference models: what an ads team ships today, measured beside the rankers in every run (DESIGN §8)."""
