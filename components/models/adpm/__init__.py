"""The adSformer diversifiable personalization module (ADPM) as Keras layers (paper 000 §2; DESIGN §8).

- :class:`ADPM`: ``u = concat(o1, o2, o3)`` from a dict of dense sequence features;
- :class:`AdsformerEncoder` (component 1) built from :class:`AdsformerBlock` and :class:`MaskedGlobalPooling`;
- :class:`PretrainedPool` (component 2, frozen lookup SavedModels);
- :class:`LearnedPool` (component 3, embeddings learned on the fly);
- :class:`AdpmConfig` (paper Table 1 options) and :func:`adpm_inputs` (the features an ADPM reads).

The layers are imported lazily, so ``from components.models.adpm.config import AdpmConfig`` (or
``from components.models.adpm import AdpmConfig``) does not import Keras or TensorFlow.
"""
from __future__ import annotations

import importlib

from components.models.adpm.config import (AdpmConfig, EncoderComponentConfig, LearnedComponentConfig,
                                           PretrainedComponentConfig, adpm_inputs, seq_ids_key, seq_idx_key,
                                           seq_rows_key)

_LAYERS = {"ADPM": "adpm", "AdsformerBlock": "adsformer_block", "AdsformerEncoder": "adsformer_encoder",
           "LearnedPool": "learned_pool", "MaskedGlobalPooling": "pooling", "PretrainedPool": "pretrained_pool"}

__all__ = ["AdpmConfig", "EncoderComponentConfig", "LearnedComponentConfig", "PretrainedComponentConfig",
           "adpm_inputs", "seq_ids_key", "seq_idx_key", "seq_rows_key", *_LAYERS]


def __getattr__(name: str):
    if name in _LAYERS:
        return getattr(importlib.import_module(f"{__name__}.{_LAYERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
