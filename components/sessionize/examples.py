"""Assemble example rows for one bucket of user keys (DESIGN §5)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.sessionize import features
from components.sessionize.kernel import SessionSpec, purchased, sequences
from schemas.examples import CARRIED_FROM_IMPRESSIONS, examples_schema
from schemas.raw import user_key


@dataclasses.dataclass(frozen=True)
class FeatureContext:
    """What the engineered features read besides the bucket's own rows: the day's catalog text
    (``listing_id``, ``title``, ``tags``, ``taxonomy_path``; None when the log has no catalog) and
    the impression counts of the ``prior_days`` days before the example's day."""

    catalog: pa.Table | None = None
    prior_counts: dict = dataclasses.field(default_factory=dict)
    prior_days: int = 0
    prior_strength: float = 20.0


def build_examples(events: pa.Table, impressions: pa.Table, spec: SessionSpec, negative_rate: float,
                   context: FeatureContext = FeatureContext()) -> pa.Table:
    """One example per impression: carried impression columns, key, labels, ``sample_rate``,
    sequences and the engineered features (``schemas.features``).

    ``sample_rate`` is the probability that the row is kept when a CTR training day is
    down-sampled (1 for clicks, ``negative_rate`` for non-clicks, DESIGN §5); the rows
    themselves are all written, since the same day is a training, validation or test day
    depending on the run.
    """
    seqs = sequences(events, impressions, spec)
    clicked = pc.fill_null(impressions.column("clicked"), False).to_numpy(zero_copy_only=False)
    columns = {name: impressions.column(name) for name in CARRIED_FROM_IMPRESSIONS}
    columns["user_key"] = user_key(impressions)
    columns["logged_in"] = pc.is_valid(impressions.column("user_id"))
    columns["purchased"] = pa.array(purchased(events, impressions, spec))
    columns["sample_rate"] = pa.array(np.where(clicked, 1.0, negative_rate))
    columns.update(seqs)
    columns.update(features.request_context(impressions))
    columns.update(features.relevance(impressions, context.catalog))
    columns.update(features.priors(impressions, context.prior_counts, context.prior_days, context.prior_strength))
    columns.update(features.target_session(events, impressions, spec.window_ms))
    schema = examples_schema(spec.pairs)
    return pa.table({f.name: columns[f.name] for f in schema}).cast(schema)
