"""The per-listing input row of the AIR tower (paper 000 §3.2.2; DESIGN §7).

    x = [visual | has_visual | title | tags | taxonomy | has_title has_tags has_taxonomy
         | z(log1p price) z(log1p age)]

- ``visual``: the listing's multitask visual vector (paper §3.1), L2-normalized; zeros and
  ``has_visual = 0`` when the listing has none (no image, or the visual step skipped today);
- ``title | tags | taxonomy``: the average-pooled fastText vectors of each text field
  (``store.read_fields``), each L2-normalized; a field with no known token is all zeros in
  the fields table and gets ``has_<field> = 0``;
- numeric: ``log1p(price)`` and ``log1p(listing age in days at the end of day D)``, z-scored
  with the mean and standard deviation of the catalog the model was trained on.

A modality absent on the training day (its step wrote no table) has no columns at all; the
:class:`FeatureSpec` saved next to the model records the layout and the numeric statistics,
so inference on a later day (cadence reuse) builds the same columns with the same scaling.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pyarrow as pa

from components.representations.store import TEXT_FIELDS, Vectors
from components.step import StepError

NUMERIC = ("log_price", "log_age_days")
SPEC_FILE = "features.json"
_MS_PER_DAY = 86_400_000


@dataclasses.dataclass
class FeatureSpec:
    """Column layout and normalization statistics of the AIR input (saved with the model)."""

    visual_dim: int | None  # None: trained without visual vectors
    text_dim: int | None  # None: trained without text vectors
    numeric: dict[str, tuple[float, float]]  # feature -> (mean, std) of the training catalog

    @property
    def blocks(self) -> list[tuple[str, int]]:
        """(name, width) of each column block, in input order."""
        out = []
        if self.visual_dim:
            out += [("visual", self.visual_dim), ("has_visual", 1)]
        if self.text_dim:
            out += [(field, self.text_dim) for field in TEXT_FIELDS]
            out += [(f"has_{field}", 1) for field in TEXT_FIELDS]
        out += [(name, 1) for name in NUMERIC]
        return out

    @property
    def input_dim(self) -> int:
        return sum(width for _, width in self.blocks)

    @property
    def modalities(self) -> list[str]:
        return [m for m, d in (("visual", self.visual_dim), ("text", self.text_dim)) if d] + ["numeric"]

    def to_json(self) -> str:
        return json.dumps({"visual_dim": self.visual_dim, "text_dim": self.text_dim,
                           "numeric": {k: list(v) for k, v in self.numeric.items()},
                           "blocks": self.blocks, "input_dim": self.input_dim}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "FeatureSpec":
        data = json.loads(text)
        numeric = {k: (float(m), float(s)) for k, (m, s) in data["numeric"].items()}
        spec = cls(data["visual_dim"], data["text_dim"], numeric)
        if set(spec.numeric) != set(NUMERIC):
            raise StepError(f"air: the saved feature spec has numeric features {sorted(spec.numeric)}, this code "
                            f"expects {list(NUMERIC)}; retrain the model (run the air step with --force)")
        return spec


def numeric_raw(catalog: pa.Table, date: dt.date) -> dict[str, np.ndarray]:
    """Unscaled numeric features of each catalog row (NaN where the catalog has no value)."""
    price = np.array(catalog.column("price").to_pylist(), dtype=np.float64)
    created = catalog.column("created_ts").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    created = np.array(created.to_pylist(), dtype=np.float64)  # None -> nan
    end_of_day = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc)
    age_days = (end_of_day.timestamp() * 1000.0 - created) / _MS_PER_DAY
    with np.errstate(invalid="ignore"):
        return {"log_price": np.log1p(np.clip(price, 0, None)), "log_age_days": np.log1p(np.clip(age_days, 0, None))}


def fit_spec(catalog: pa.Table, date: dt.date, visual: Vectors | None,
             fields: dict[str, Vectors] | None) -> FeatureSpec:
    """The layout for the modalities present and the z-score statistics of ``catalog``."""
    if catalog.num_rows == 0:
        raise StepError("air: the catalog is empty; nothing to normalize the numeric features with")
    stats = {}
    for name, values in numeric_raw(catalog, date).items():
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if len(finite) else 0.0
        std = float(finite.std()) if len(finite) else 1.0
        stats[name] = (mean, std if std > 1e-6 else 1.0)
    text_dim = fields[TEXT_FIELDS[0]].dim if fields else None
    return FeatureSpec(visual.dim if visual is not None else None, text_dim, stats)


def _unit_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to unit L2 norm, and whether each row was non-zero (all-zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1)
    present = norms > 0
    out = np.zeros_like(matrix, dtype=np.float32)
    out[present] = matrix[present] / norms[present, None]
    return out, present


def build_matrix(spec: FeatureSpec, catalog: pa.Table, date: dt.date, visual: Vectors | None,
                 fields: dict[str, Vectors] | None) -> tuple[np.ndarray, dict]:
    """The (n_listings, spec.input_dim) float32 input of the catalog's listings in catalog row order,
    and coverage counts (listings with a vector per modality) for the manifest."""
    ids = catalog.column("listing_id").to_pylist()
    parts: list[np.ndarray] = []
    coverage: dict = {"listings": len(ids)}
    if spec.visual_dim:
        if visual is not None and visual.dim != spec.visual_dim:
            raise StepError(f"air: the model was trained on {spec.visual_dim}-d visual vectors but today's are "
                            f"{visual.dim}-d (representations.visual.embedding_dim changed?); retrain the air model "
                            "(--force)")
        raw = visual.take(ids) if visual is not None else np.zeros((len(ids), spec.visual_dim), np.float32)
        unit, present = _unit_rows(raw)
        parts += [unit, present[:, None].astype(np.float32)]
        coverage["with_visual"] = int(present.sum())
    if spec.text_dim:
        if fields is not None and fields[TEXT_FIELDS[0]].dim != spec.text_dim:
            raise StepError(f"air: the model was trained on {spec.text_dim}-d text vectors but today's are "
                            f"{fields[TEXT_FIELDS[0]].dim}-d (representations.text.dim changed?); retrain the air "
                            "model (--force)")
        flags = []
        for field in TEXT_FIELDS:
            raw = fields[field].take(ids) if fields is not None else np.zeros((len(ids), spec.text_dim), np.float32)
            unit, present = _unit_rows(raw)
            parts.append(unit)
            flags.append(present)
            coverage[f"with_{field}"] = int(present.sum())
        parts.append(np.stack(flags, axis=1).astype(np.float32))
    raw_numeric = numeric_raw(catalog, date)
    for name in NUMERIC:
        mean, std = spec.numeric[name]
        values = raw_numeric[name]
        z = np.where(np.isfinite(values), (values - mean) / std, 0.0)  # missing -> the training mean
        parts.append(z[:, None].astype(np.float32))
    matrix = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)
    assert matrix.shape[1] == spec.input_dim, (matrix.shape, spec.blocks)
    return matrix, coverage
