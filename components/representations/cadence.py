"""Retrain cadence: which trained model a representation step reuses (issue 4, DESIGN §7).

A step that trains writes ``model_origin = D`` in its manifest's metrics; a step that
reuses writes the origin it reused. On day D with ``retrain_every_days = n`` the step
reuses the model of the latest earlier run whose origin is within ``(D - n, D)``;
otherwise it trains. Only finished runs (``_SUCCESS``) count.
"""
from __future__ import annotations

import datetime as dt
import json

from components.lake import Lake, fs
from components.representations.store import MODEL_DIR


def reusable_model(lake: Lake, date: dt.date, step: str, every_days: int) -> tuple[dt.date, str] | None:
    """(origin date, model dir) of a model trained within the cadence before ``date``, or None."""
    for back in range(1, every_days):
        day = date - dt.timedelta(days=back)
        run_dir = lake.run_dir(day, step)
        if not lake.complete(run_dir):
            continue
        try:
            manifest = json.loads(fs.read_text(fs.join(run_dir, "manifest.json")))
            origin = dt.date.fromisoformat(manifest["metrics"]["model_origin"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        model_dir = fs.join(lake.run_dir(origin, step), MODEL_DIR)
        if (date - origin).days < every_days and fs.exists(model_dir):
            return origin, model_dir
    return None
