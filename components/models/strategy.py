"""tf.distribute strategy from config (DESIGN §8): one device, MirroredStrategy over the GPUs
(or logical CPUs) of a worker, or MultiWorkerMirroredStrategy over the workers in TF_CONFIG."""
from __future__ import annotations

import json
import os


def make_strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):  # unset or empty (an empty one would train as a lone worker)
            raise ValueError("training.strategy=multi_worker needs TF_CONFIG (cluster and task) in the environment; "
                             "see docker/README.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown training.strategy {name!r}; use default, mirrored or multi_worker")


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (only the chief writes artifacts)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")  # unset or empty: a single process
    task = tf_config.get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    return kind in (None, "chief") or (kind == "worker" and index == 0 and "chief" not in tf_config.get("cluster", {}))


def use_mixed_precision(enabled: bool) -> str | None:
    """Set the Keras policy: mixed_float16 when asked and a GPU exists, float32 otherwise; returns why
    not when asked but impossible (None when on or not asked)."""
    import keras
    import tensorflow as tf

    if not enabled or not tf.config.list_physical_devices("GPU"):
        # The policy is process-global: reset it, or one task's mixed precision would leak into the next.
        keras.mixed_precision.set_global_policy("float32")
        return "mixed precision requested but no GPU is visible: training in float32" if enabled else None
    keras.mixed_precision.set_global_policy("mixed_float16")
    return None
