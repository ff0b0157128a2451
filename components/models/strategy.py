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
        if "TF_CONFIG" not in os.environ:
            raise ValueError("training.strategy=multi_worker needs TF_CONFIG (cluster and task) in the environment; "
                             "see docker/README.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown training.strategy {name!r}; use default, mirrored or multi_worker")


def is_chief() -> bool:
    """True unless TF_CONFIG names this process a non-chief worker (only the chief writes artifacts)."""
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    kind, index = task.get("type"), task.get("index", 0)
    return kind in (None, "chief") or (kind == "worker" and index == 0 and
                                       "chief" not in json.loads(os.environ["TF_CONFIG"]).get("cluster", {}))


def use_mixed_precision(enabled: bool) -> str | None:
    """Turn on mixed_float16 when asked and a GPU exists; returns why not otherwise (None when on or not asked)."""
    import keras
    import tensorflow as tf

    if not enabled:
        return None
    if not tf.config.list_physical_devices("GPU"):
        return "mixed precision requested but no GPU is visible: training in float32"
    keras.mixed_precision.set_global_policy("mixed_float16")
    return None
