"""Training loop and offline recall of the AIR pseudo-two-tower (paper 000 §3.2.2, A.6.1).

Pairs are row indices into a per-listing feature matrix (``features.build_matrix``); a batch
gathers its source and candidate rows inside the compiled step, runs the shared tower on
both and minimizes the in-batch softmax (``loss.py``) with Adam(lr, 0.9, 0.999, 1e-7).
"""
from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from components.representations.air.loss import in_batch_softmax_loss
from components.representations.air.tower import AirTower, pseudo_two_tower
from components.representations.config import AirConfig
from components.step import StepError

RECALL_K = 10
EMBED_BATCH = 8192
PROGRESS_SECONDS = 60.0
"""A line within an epoch at most this often (epochs on the paper's 30M pairs take long)."""


def embed(tower: AirTower | keras.Model, features: np.ndarray) -> np.ndarray:
    """Tower outputs of every feature row (float32, unit norm)."""
    if len(features) == 0:
        raise ValueError("no listing to embed")
    return np.concatenate([np.asarray(tower(tf.constant(features[i:i + EMBED_BATCH])), dtype=np.float32)
                           for i in range(0, len(features), EMBED_BATCH)])


def in_batch_recall(vectors: np.ndarray, source: np.ndarray, candidate: np.ndarray, batch: int,
                    k: int = RECALL_K) -> dict:
    """Share of held-out sources whose true candidate ranks in the top ``k`` among the
    candidates of its batch (same duplicate masking as the loss), over consecutive batches
    of ``batch`` pairs (a shorter remainder is left out), and that share for random scores."""
    n = len(source)
    batch = min(batch, n)
    if batch < 2:
        return {"recall": None, "chance": None, "pairs": 0, "batch": batch}
    hits = chance = rows = 0.0
    for start in range(0, n - batch + 1, batch):
        s, c = source[start:start + batch], candidate[start:start + batch]
        scores = vectors[s] @ vectors[c].T
        masked = (c[None, :] == c[:, None]) | (c[None, :] == s[:, None])
        np.fill_diagonal(masked, False)
        positive = np.diag(scores)
        better = ((scores > positive[:, None]) & ~masked).sum(axis=1)
        valid = (~masked).sum(axis=1)
        hits += float((better < k).sum())
        chance += float((np.minimum(k, valid) / valid).sum())
        rows += batch
    return {"recall": round(hits / rows, 4), "chance": round(chance / rows, 4), "pairs": int(rows), "batch": batch}


def fit(tower: AirTower, features: np.ndarray, source: np.ndarray, candidate: np.ndarray, cfg: AirConfig,
        seed: int, progress=print) -> dict:
    """Train ``tower`` (built for ``features.shape[1]``) on the directed pairs ``source[i] -> candidate[i]``
    (row indices into ``features``) for ``cfg.epochs`` epochs; per-epoch mean loss and throughput."""
    n = len(source)
    if n < 2:
        raise ValueError(f"AIR training needs at least 2 directed pairs, got {n}")
    model = pseudo_two_tower(tower, features.shape[1])
    optimizer = keras.optimizers.Adam(learning_rate=cfg.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    optimizer.build(model.trainable_variables)
    table = tf.constant(features)
    generator = tf.random.Generator.from_seed(seed)
    temperature, sampled = float(cfg.temperature), int(cfg.sampled_negatives)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] * 2, reduce_retracing=True)
    def step(s, c):
        with tf.GradientTape() as tape:
            src, cand = model([tf.gather(table, s), tf.gather(table, c)], training=True)
            loss = in_batch_softmax_loss(src, cand, s, c, temperature, sampled, generator)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    source = np.asarray(source, np.int32)
    candidate = np.asarray(candidate, np.int32)
    rng = np.random.default_rng(seed)
    losses, t0 = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        t_epoch = last_report = time.perf_counter()
        order = rng.permutation(n)
        total = weight = 0.0
        for start in range(0, n, cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            if len(rows) < 2:  # a single left-over pair has no in-batch negative
                continue
            loss = step(tf.constant(source[rows]), tf.constant(candidate[rows]))
            total += float(loss) * len(rows)
            weight += len(rows)
            if time.perf_counter() - last_report > PROGRESS_SECONDS:
                last_report = time.perf_counter()
                progress(f"    epoch {epoch + 1}/{cfg.epochs}: {weight / n:.0%} (loss so far {total / weight:.4f})")
        mean = total / weight
        if not np.isfinite(mean):
            raise StepError(f"air: the loss became {mean} in epoch {epoch + 1}; lower "
                                     f"representations.air.learning_rate (now {cfg.learning_rate})")
        losses.append(round(mean, 4))
        seconds = time.perf_counter() - t_epoch
        progress(f"    epoch {epoch + 1}/{cfg.epochs}: loss {mean:.4f}  {seconds:.1f}s  "
                 f"{weight / seconds:,.0f} pairs/s")
    seconds = time.perf_counter() - t0
    return {"epochs": cfg.epochs, "loss_per_epoch": losses, "train_seconds": round(seconds, 2),
            "pairs_per_second": round(n * cfg.epochs / seconds) if seconds else None,
            "batch_size": cfg.batch_size, "negatives_per_row": int(min(sampled, min(cfg.batch_size, n) - 1))}
