"""The ``validate`` step: raw partitions checked against the data contracts (DESIGN §4)."""
