"""fastText training shared by the skip-gram and text representations (paper 000 A.7, A.8).

fastText (the ``fasttext-wheel`` 0.9.2 build: the 0.9.3 source build and ``fasttext-numpy2``
give NaN or exploding vectors on this stack) trains on a local text file. With one thread
it is deterministic; more threads are Hogwild and vary from run to run.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from components.lake import fs
from components.step import StepError

MODEL_FILE = "fasttext.bin"
EOS = "</s>"


@contextlib.contextmanager
def _quiet_stderr():
    """fastText's C++ prints a deprecation warning on stderr at load; keep the user's terminal clean."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    saved = os.dup(fd)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def train(corpus: str, model_dir: str, **params):
    """Train ``fasttext.train_unsupervised(corpus, **params)`` and save it to ``model_dir``; return the model."""
    import fasttext

    if not os.path.getsize(corpus):
        raise StepError(f"the fastText corpus {corpus} is empty")
    model = fasttext.train_unsupervised(corpus, verbose=0, **params)
    check_finite(model, corpus)
    with fs.local_dir(model_dir, "w") as local:
        model.save_model(os.path.join(local, MODEL_FILE))
    return model


def load(model_dir: str):
    import fasttext

    with fs.local_dir(model_dir, "r") as local, _quiet_stderr():
        return fasttext.load_model(os.path.join(local, MODEL_FILE))


def check_finite(model, corpus: str) -> None:
    matrix = model.get_input_matrix()
    if not np.isfinite(matrix).all():
        raise StepError(f"fastText produced NaN/infinite vectors training on {corpus}; this happens with the "
                        "fasttext 0.9.3 source build or fasttext-numpy2 — install fasttext-wheel==0.9.2 from "
                        "requirements.lock, or lower the learning rate")


def word_vectors(model, words: list[str]) -> np.ndarray:
    """(len(words), dim) float32 vectors (subword-composed when the model has subwords)."""
    if not words:
        return np.zeros((0, model.get_dimension()), dtype=np.float32)
    return np.stack([model.get_word_vector(w) for w in words]).astype(np.float32)


def vocabulary(model) -> list[str]:
    return [w for w in model.words if w != EOS]
