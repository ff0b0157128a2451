"""A short training of the CTR ranker (wide input + ADPM components 1 and 3 + debias tower) under one
tf.distribute strategy, on a deterministic synthetic dataset; used by ``tests/test_distributed_training.py``.

    python tests/distributed_train_worker.py --strategy default|mirrored|multi_worker --out result.json [--seed 0]

``mirrored`` splits the first physical CPU into two logical devices before TensorFlow initializes
its devices; ``multi_worker`` reads the cluster from ``TF_CONFIG`` (set by the caller). Every
strategy sees the same global batches (``GLOBAL_BATCH`` rows, in the same order), so the runs agree
in expectation. The model is built with the project's code (``make_strategy``, ``ADPM``,
``build_ranker``, ``task_batches``, ``fit``). The chief writes a JSON result::

    {"strategy", "replicas", "is_chief", "task", "steps", "weights_fingerprint",
     "history": {"loss": [...], "auc": [...]},
     "first_batches_loss": [...], "initial_eval_loss", "eval_loss", "eval_auc",
     "eval_train_loss", "eval_train_auc", "bayes_eval_loss", "bayes_eval_auc", "seconds", "timings"}

a non-chief worker writes only ``{"is_chief": false, "replicas", "task", "steps", "weights_fingerprint"}``
(the fingerprint of the trainable weights, the same on every worker when the replicas stay in sync).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

GLOBAL_BATCH = 64
STEPS_PER_EPOCH = 64
EPOCHS = 3
SEQ_LEN = 10
TRAIN_ROWS = GLOBAL_BATCH * STEPS_PER_EPOCH * EPOCHS  # each row is seen once (the epoch loss is not memorization)
EVAL_ROWS = 4096
VOCAB = {"listing": 40, "shop": 10, "taxonomy": 8, "query": 20, "query_token": 30, "platform": 3}
PAIRS_3 = [("listing", "view"), ("listing", "favorite"), ("shop", "view"), ("taxonomy", "view"),
           ("query", "search")]


def synthetic(rows: int, seed: int):
    """``(features, clicked, true logit)`` as numpy arrays: the wide inputs and the ADPM sequences of
    components 1 and 3. The click log-odds depend on the target listing (a fixed per-listing
    effect), the ad position (which the debias tower takes), and whether the target listing is in the
    viewed-listings sequence."""
    import numpy as np

    rng = np.random.default_rng(seed)
    effect = np.random.default_rng(12345).normal(0.0, 1.0, VOCAB["listing"])  # the same in every split
    listing = rng.integers(0, VOCAB["listing"], rows)
    position = rng.integers(0, 16, rows)

    def sequence(vocab: int, min_len: int = 0):
        lengths = rng.integers(min_len, SEQ_LEN + 1, rows)
        valid = np.arange(SEQ_LEN)[None, :] < lengths[:, None]
        return np.where(valid, rng.integers(0, vocab, (rows, SEQ_LEN)), -1).astype(np.int64)

    views = sequence(VOCAB["listing"])
    seen = rng.random(rows) < 0.4  # put the target listing at a random valid slot of 40% of the sequences
    lengths = (views >= 0).sum(1)
    seen &= lengths > 0
    slot = (rng.random(rows) * np.maximum(lengths, 1)).astype(np.int64)
    views[seen, slot[seen]] = listing[seen]
    in_views = (views == listing[:, None]).any(1)
    logit = -1.0 + 1.2 * effect[listing] - 0.15 * position + 1.5 * in_views
    clicked = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    tokens = sequence(VOCAB["query_token"], min_len=1)[:, :4]
    features = {
        "listing_id_idx": listing.astype(np.int64),
        "shop_id_idx": (listing % VOCAB["shop"]).astype(np.int64),
        "taxonomy_id_idx": (listing % VOCAB["taxonomy"]).astype(np.int64),
        "query_idx": rng.integers(0, VOCAB["query"], rows).astype(np.int64),
        "query_tokens_idx": tokens,
        "platform_idx": rng.integers(0, VOCAB["platform"], rows).astype(np.int64),
        "hour_of_day": rng.integers(0, 24, rows).astype(np.int64),
        "day_of_week": rng.integers(0, 7, rows).astype(np.int64),
        "position": position.astype(np.int64),
        "price_log_z": rng.normal(0.0, 1.0, rows).astype(np.float32),
        "logged_in": rng.integers(0, 2, rows).astype(np.int64),
        "seq_listing_view_idx": views,
        "seq_listing_favorite_idx": sequence(VOCAB["listing"]),
        "seq_shop_view_idx": np.where(views >= 0, views % VOCAB["shop"], -1).astype(np.int64),
        "seq_taxonomy_view_idx": np.where(views >= 0, views % VOCAB["taxonomy"], -1).astype(np.int64),
        "seq_query_search_idx": sequence(VOCAB["query"]),
    }
    return features, clicked, logit


def roc_auc(labels, scores) -> float:
    """Mann-Whitney ROC-AUC (ties count one half)."""
    import numpy as np
    from scipy.stats import rankdata

    labels = np.asarray(labels) > 0
    ranks = rankdata(scores)
    pos, neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def bce_from_logits(labels, logits) -> float:
    import numpy as np

    logits = np.asarray(logits, np.float64)
    return float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"], required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0, help="model initialization and training-data order")
    parser.add_argument("--steps-per-execution", type=int, default=1, help="training.steps_per_execution")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    import tensorflow as tf

    if args.strategy == "mirrored":  # before anything initializes the devices
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np

    from components.models.adpm import ADPM, AdpmConfig
    from components.models.config import RankerConfig, TrainingConfig, WideConfig
    from components.models.ranker import build_ranker
    from components.models.strategy import is_chief, make_strategy
    from components.models.train import fit, task_batches

    timings = {"imports": time.perf_counter() - t0}
    strategy = make_strategy(args.strategy)
    replicas = strategy.num_replicas_in_sync
    chief = is_chief()
    keras.utils.set_random_seed(args.seed)

    adpm_cfg = AdpmConfig.model_validate({
        "component1": {"pairs": [("listing", "view")], "embedding_dim": 16, "heads": 2, "ff_dim": 32,
                       "max_len": SEQ_LEN},
        "component2": {"enabled": False},
        "component3": {"pairs": PAIRS_3, "dims": {"listing": 8, "shop": 4, "taxonomy": 4, "query": 4}},
    })
    ranker_cfg = RankerConfig(cross_layers=1, cross_rank=16, deep=[32], dropout=0.0, debias=True, debias_hidden=[8])
    wide_cfg = WideConfig(listing=8, shop=4, taxonomy=4, query=4, query_token=4, platform=2, hour_of_day=2,
                          day_of_week=2, position=4, max_position=16)
    train_cfg = TrainingConfig(batch_size=GLOBAL_BATCH, epochs=EPOCHS, learning_rate=5e-3, strategy=args.strategy,
                               steps_per_execution=args.steps_per_execution)
    with strategy.scope():
        adpm = ADPM(adpm_cfg, VOCAB)
        ranker = build_ranker(ranker_cfg, wide_cfg, VOCAB, adpm, adpm.input_specs, name="ctr")
    features, clicked, _ = synthetic(TRAIN_ROWS, seed=1)
    assert set(features) == set(ranker.input_names), (sorted(features), sorted(ranker.input_names))
    rows = tf.data.Dataset.from_tensor_slices({**features, "clicked": clicked})
    # the same shuffled global batches on every worker and under every strategy; not reshuffled per
    # iterator, since Keras' fit under a strategy opens one iterator more than without (its symbolic build)
    batches = rows.shuffle(TRAIN_ROWS, seed=args.seed, reshuffle_each_iteration=False).batch(
        GLOBAL_BATCH, drop_remainder=True).repeat()
    train_ds = task_batches(batches, "ctr", ranker.input_names)

    eval_x, eval_y, eval_logit = synthetic(EVAL_ROWS, seed=2)
    eval_x = {k: eval_x[k] for k in ranker.input_names}

    def logits(model):  # a direct call: no collective op, so only the chief runs it
        return np.concatenate([model({k: v[i:i + 1024] for k, v in eval_x.items()}, training=False).numpy()
                               for i in range(0, EVAL_ROWS, 1024)])

    initial_eval_loss = bce_from_logits(eval_y, logits(ranker.score)) if chief else None

    class FirstBatches(keras.callbacks.Callback):
        def __init__(self, n=5):
            super().__init__()
            self.n, self.losses = n, []

        def on_train_batch_end(self, batch, logs=None):
            if len(self.losses) < self.n:  # the running mean of the first epoch's losses so far
                self.losses.append(float((logs or {})["loss"]))

    timings["build"] = time.perf_counter() - t0 - sum(timings.values())
    first = FirstBatches()
    model_fit = ranker.train.fit

    def fit_with_first_batches(*a, callbacks=(), **kw):
        return model_fit(*a, callbacks=[*callbacks, first], **kw)

    ranker.train.fit = fit_with_first_batches  # fit() builds its own callbacks; add ours to them
    outcome = fit(ranker, train_ds, STEPS_PER_EPOCH, train_cfg, None, lambda msg: print(msg, file=sys.stderr))

    timings["fit"] = time.perf_counter() - t0 - sum(timings.values())
    weights = [np.asarray(w.numpy(), np.float64) for w in ranker.train.trainable_weights]
    result = {"strategy": args.strategy, "replicas": int(replicas), "is_chief": chief,
              "task": json.loads(os.environ.get("TF_CONFIG") or "{}").get("task"), "steps": outcome.steps,
              # equal on every worker when the gradients are all-reduced (the replicas stay in sync)
              "weights_fingerprint": [float(sum(np.abs(w).sum() for w in weights)),
                                      float(sum(np.square(w).sum() for w in weights))]}
    if chief:
        score_logits, train_logits = logits(ranker.score), logits(ranker.train)
        result.update({
            "history": outcome.history, "first_batches_loss": first.losses,
            "initial_eval_loss": initial_eval_loss,
            "eval_loss": bce_from_logits(eval_y, score_logits),  # the main logit (ranker.score)
            "eval_auc": roc_auc(eval_y, score_logits),
            "eval_train_loss": bce_from_logits(eval_y, train_logits),  # with the debias tower (ranker.train)
            "eval_train_auc": roc_auc(eval_y, train_logits),
            "bayes_eval_loss": bce_from_logits(eval_y, eval_logit),  # the true click probabilities
            "bayes_eval_auc": roc_auc(eval_y, eval_logit),
            "seconds": round(time.perf_counter() - t0, 1),
            "timings": {k: round(v, 1) for k, v in timings.items()},
        })
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
