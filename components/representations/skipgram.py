"""The ``skipgram`` step: listing vectors from session lines (paper 000 §3.3, A.8; DESIGN §7).

fastText skipgram with hierarchical softmax and no subwords (``minn = maxn = 0``, so a
listing id is one opaque token), dim 64, window 5, on ``runs/D/corpora/corpus/skipgram.txt``
(one line per one-hour session, purchase sessions upsampled 5:1 by the corpora step).
Only listings seen in the corpus get a vector; the lookup tables map the rest to zeros.
"""
from __future__ import annotations

import datetime as dt
import os
import time

from components.lake import Lake, fs
from components.representations import fasttext_train
from components.representations.driver import Representation, run_representation
from components.representations.store import Vectors
from components.step import StepError, StepResult


def corpus_file(lake: Lake, date, name: str) -> str:
    return fs.join(lake.run_dir(date, "corpora"), "corpus", name)


class SkipgramRepresentation(Representation):
    name = "skipgram"

    def prepare(self, config, date: dt.date, lake: Lake, progress) -> str | None:
        self.cfg = config.representations.skipgram
        self.corpus = corpus_file(lake, date, "skipgram.txt")
        if not fs.exists(self.corpus):
            raise StepError(f"skipgram: {self.corpus} is missing; run the corpora step first")
        return None

    def train(self, model_dir: str, progress) -> dict:
        cfg = self.cfg
        with fs.local_dir(os.path.dirname(self.corpus), "r") as local:
            path = os.path.join(local, os.path.basename(self.corpus))
            lines = sum(1 for _ in open(path, "rb"))
            progress(f"  fastText skipgram on {lines:,} session lines (dim {cfg.dim}, {cfg.epochs} epochs, "
                     f"{cfg.loss}, {cfg.threads} thread(s))")
            t0 = time.perf_counter()
            model = fasttext_train.train(path, model_dir, model="skipgram", loss=cfg.loss, dim=cfg.dim, ws=cfg.window,
                                         epoch=cfg.epochs, lr=cfg.learning_rate, minCount=cfg.min_count,
                                         minn=0, maxn=0, thread=cfg.threads)
        seconds = time.perf_counter() - t0
        return {"corpus_lines": lines, "listings": len(fasttext_train.vocabulary(model)), "seconds": round(seconds, 2),
                "lines_per_second": round(lines * cfg.epochs / seconds) if seconds else None}

    def infer(self, model_dir: str, progress) -> Vectors:
        model = fasttext_train.load(model_dir)
        ids = fasttext_train.vocabulary(model)
        return Vectors(ids, fasttext_train.word_vectors(model, ids))

    def describe(self) -> dict:
        return {"corpus": self.corpus, "coverage": "listings in the session corpus only (others map to zeros)"}


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    return run_representation(config, date, lake, SkipgramRepresentation(), progress)
