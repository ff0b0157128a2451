"""Data contracts of the adsformer lake (DESIGN §3-§5): Arrow schemas, validation rules, manifests."""
