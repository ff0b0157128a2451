"""Blessing and publishing: ``models/<task>/blessed.json`` moves only to a model no worse than the incumbent (DESIGN §8)."""
