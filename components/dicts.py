"""Small helpers on plain dicts shared by the config layers."""
from __future__ import annotations


def deep_merge(base: dict, override: dict) -> dict:
    """``base`` with ``override`` laid over it; nested dicts merge key by key, other values replace."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
