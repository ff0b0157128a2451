"""Data gates: the day's volume, click rate and dead-letter share against the days before (DESIGN §4)."""
