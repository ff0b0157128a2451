"""The embedded synthetic marketplace (DESIGN §10): deterministic raw logs with a known click model.

``generate(config, root, start, days, seed)`` writes raw/events, raw/impressions, raw/listings,
raw/images and oracle/impressions; see GENERATIVE_MODEL.md for the model and what is planted.
"""
from components.marketplace.config import MarketplaceConfig
from components.marketplace.generator import generate

__all__ = ["MarketplaceConfig", "generate"]
