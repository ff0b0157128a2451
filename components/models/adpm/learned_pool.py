"""ADPM component 3: per-(entity, action) embeddings learned on the fly, average-pooled (paper 000 §2.5; eqs. 10-11).

One table per (entity, action) by default, each sequence in its own vector space (§2.5).
"""
from __future__ import annotations

import keras
from keras import ops

from components.models.adpm.config import seq_idx_key
from components.models.adpm.pooling import masked_mean_lookup


@keras.saving.register_keras_serializable(package="adsformer")
class LearnedPool(keras.layers.Layer):
    """Masked mean of learned embeddings of each index sequence, concatenated over the pairs.

    Input: a dict holding ``seq_<entity>_<action>_idx`` int64 ``[B, M]`` (vocabulary indices,
    padding -1) for every pair. For the pairs ``S_1..S_z`` in the order of ``pairs``::

        m_i      = s_i >= 0
        E_{S_i}  = sum_l m_i[l] T_{a_i e_i}[s_i[l] + 1] / max(sum_l m_i[l], 1)   (eq. 10; zeros if empty)
        o_3      = Concat(E_{S_1}, ..., E_{S_z})                                 (eq. 11)

    ``T_{ae}`` has ``vocabulary_sizes[e] + 1`` rows of size ``dims[e]`` (row 0 = padding, never
    counted). Paper 000 §2.5 embeds "each entity e_i in the action space a_i", each sequence "in its
    own vector space": so by default every (entity, action) pair has its own table. With
    ``share_tables=True`` the pairs of one entity share a single table ``T_e`` (fewer parameters;
    not what the paper describes).

    The masked mean is :func:`.pooling.masked_mean_lookup`: outside XLA only the valid entries are
    looked up, so a table's gradient holds the rows of the batch's real ids, not of its padding.
    """

    def __init__(self, pairs, vocabulary_sizes: dict[str, int], dims: dict[str, int], share_tables: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.pairs = [(str(e), str(a)) for e, a in pairs]
        if not self.pairs:
            raise ValueError("LearnedPool needs at least one (entity, action) pair")
        missing = sorted({e for e, _ in self.pairs} - set(vocabulary_sizes))
        if missing:
            raise ValueError(f"LearnedPool: no vocabulary size for {missing} (vocabulary_sizes has "
                             f"{sorted(vocabulary_sizes)})")
        missing = sorted({e for e, _ in self.pairs} - set(dims))
        if missing:
            raise ValueError(f"LearnedPool: no embedding size for {missing} (dims has {sorted(dims)})")
        self.vocabulary_sizes = {e: int(vocabulary_sizes[e]) for e, _ in self.pairs}
        self.dims = {e: int(dims[e]) for e, _ in self.pairs}
        self.share_tables = bool(share_tables)

    @property
    def output_dim(self) -> int:
        return sum(self.dims[e] for e, _ in self.pairs)

    def _table_name(self, entity: str, action: str) -> str:
        return f"{entity}_embedding" if self.share_tables else f"{entity}_{action}_embedding"

    def build(self, input_shape=None):
        self.tables = {}
        for entity, action in self.pairs:
            name = self._table_name(entity, action)
            if name not in self.tables:
                table = keras.layers.Embedding(self.vocabulary_sizes[entity] + 1, self.dims[entity], name=name)
                table.build((None, None))
                self.tables[name] = table
        self.built = True

    def call(self, inputs):
        parts = []
        for entity, action in self.pairs:
            ids = ops.cast(inputs[seq_idx_key(entity, action)], "int64")
            valid = ops.greater_equal(ids, 0)
            table = self.tables[self._table_name(entity, action)]
            parts.append(masked_mean_lookup(table, ops.where(valid, ids + 1, ops.zeros_like(ids)), valid))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        batch = next(iter(input_shape.values()))[0] if isinstance(input_shape, dict) else None
        return (batch, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "pairs": [list(p) for p in self.pairs],
                "vocabulary_sizes": dict(self.vocabulary_sizes), "dims": dict(self.dims),
                "share_tables": self.share_tables}
