"""Corpora for the listing representations (paper 000 §3, A.2; DESIGN §7)."""
