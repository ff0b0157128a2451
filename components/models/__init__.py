"""Keras models of the rankers and their personalization module (paper 000 §2, §4; DESIGN §8)."""
