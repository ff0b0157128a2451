"""Point-in-time session sequences and labels for ad impressions (paper 000 §2.1, §2.7.1; DESIGN §5)."""
