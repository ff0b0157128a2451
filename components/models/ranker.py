"""The CTR and PCCVR rankers: wide input + ADPM -> DCN-v2 cross layers -> deep tower -> logit
(paper 000 §4.2, Figure 7, Tables 5 and 9; DESIGN §8).

    x0    = concat(wide, ADPM(u))           (the baseline drops the ADPM)
    x_c   = Cross_L(...Cross_1(x0, x0)...)  (DCN-v2, stacked)
    h     = deep tower on x_c: Dense -> BatchNorm -> ReLU -> Dropout, per layer
    logit = w·h + b  (+ v·e, a linear term of the standardized engineered features e)
            (+ debias(position, platform) in training only)

The optional debias tower (paper 000 §5.3, paper 002 §3.4) is a shallow MLP on the ad position
and platform whose logit is added while training, so position effects do not leak into the
main logit, and which is dropped at serving: :func:`build_ranker` returns two models sharing
every layer, ``train`` (with the bias) and ``score`` (main logit only).
"""
from __future__ import annotations

import dataclasses

import keras

from components.models.config import RankerConfig, WideConfig
from components.models.cross import Cross
from components.models.wide import ID_DROPOUT, WIDE_INPUTS, IdDropout, engineered_values, position_embedding, wide_features


@dataclasses.dataclass
class Ranker:
    train: keras.Model  # logit with the debias tower (what the loss sees)
    score: keras.Model  # main logit only (evaluation, calibration, serving)
    input_names: list[str]


def build_ranker(cfg: RankerConfig, wide: WideConfig, vocab: dict[str, int],
                 personalization: keras.layers.Layer | None = None,
                 personalization_inputs: dict[str, tuple[str, tuple]] | None = None, name: str = "ranker",
                 engineered: tuple[str, ...] = (), engineered_buckets: int = 0,
                 num_oov: dict[str, int] | None = None) -> Ranker:
    """Build the ranker; ``personalization`` (the ADPM layer) takes a dict of ``personalization_inputs``
    (feature -> (dtype, shape without batch)) and returns the user vector ``u``; ``engineered``: the
    engineered features the wide input reads: standardized ``eng_*`` (``float32``) and quantile buckets
    ``engb_*`` (``int64`` in ``[0, engineered_buckets)``); ``num_oov``: each vocabulary's hashed OOV
    buckets (the last rows of its ``vocab`` size), which ``wide.id_dropout`` needs."""
    specs = dict(WIDE_INPUTS)
    specs.update({f: ("int64" if f.startswith("engb_") else "float32", ()) for f in engineered})
    if cfg.personalized:
        if personalization is None:
            raise ValueError("a personalized ranker needs the ADPM layer; set personalized=false for the baseline")
        specs.update(personalization_inputs or {})
    inputs = {k: keras.Input(shape=shape, dtype=dtype, name=k) for k, (dtype, shape) in specs.items()}
    x_in = dict(inputs)  # what the layers read: the ids after IdDropout
    if wide.id_dropout:
        if num_oov is None:
            raise ValueError("wide.id_dropout needs the vocabularies' OOV buckets (num_oov)")
        for entity, column in ID_DROPOUT.items():
            x_in[column] = IdDropout(wide.id_dropout, vocab[entity] - num_oov[entity], num_oov[entity],
                                     name=f"{entity}_id_dropout")(inputs[column])
    x0 = wide_features(x_in, vocab, wide, with_position=not cfg.debias, engineered=tuple(engineered),
                       engineered_buckets=engineered_buckets)
    if cfg.personalized:
        u = personalization({k: x_in[k] for k in personalization_inputs})
        x0 = keras.layers.Concatenate(name="wide_and_user")([x0, u])
    x = x0
    for i in range(cfg.cross_layers):
        x = Cross(rank=cfg.cross_rank, name=f"cross_{i}")([x0, x])
    for i, units in enumerate(cfg.deep):
        x = keras.layers.Dense(units, use_bias=False, name=f"deep_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"deep_{i}_bn")(x)
        x = keras.layers.ReLU(name=f"deep_{i}_relu")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"deep_{i}_dropout")(x)
    main = keras.layers.Dense(1, name="logit", dtype="float32")(x)  # float32 logits under mixed precision
    values = engineered_values(inputs, tuple(engineered))
    if cfg.engineered_linear and values is not None:
        main = keras.layers.Add(name="wide_and_deep_logit")([main, keras.layers.Dense(1, name="engineered_linear",
                                                                                       dtype="float32")(values)])
    main = keras.layers.Reshape((), name="main_logit")(main)
    score = keras.Model(inputs, main, name=f"{name}_score")
    if not cfg.debias:
        return Ranker(score, score, list(specs))
    b = keras.layers.Concatenate(name="debias_input")([
        position_embedding(inputs["position"], wide, "debias_position"),
        keras.layers.Embedding(vocab["platform"], wide.platform, name="debias_platform")(inputs["platform_idx"])])
    for i, units in enumerate(cfg.debias_hidden):
        b = keras.layers.Dense(units, activation="relu", name=f"debias_{i}")(b)
    bias = keras.layers.Reshape((), name="debias_logit")(keras.layers.Dense(1, name="debias_out", dtype="float32")(b))
    total = keras.layers.Add(name="train_logit")([main, bias])
    return Ranker(keras.Model(inputs, total, name=f"{name}_train"), score, list(specs))
