"""The multitask dataset sampler (paper 000 §3.1.2, Figure 5; A.5.1).

Each classification task has its own dataset: the listings (or, for review photos, other
images) that carry its label. Seller-input attributes are sparse, so the datasets differ in
size and membership. The sampler builds every batch from ``batch_size // num_tasks``
examples of each dataset, carries each example's task id, and :func:`targets` turns a batch
into per-head labels plus a 0/1 sample weight per head, so that with Keras's
``sum_over_batch_size`` reduction the total loss is

    L = 1/B * sum_i CE(head_{t_i}(x_i), y_i)

— the mean over the batch of each example's own head's cross-entropy; the other heads get
no loss (and no gradient) from it. An epoch is ``samples_per_task`` draws per task: a fresh
seeded permutation of each dataset, cycled (so with replacement across cycles) when the
dataset is smaller than that.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class TaskData:
    """One task's dataset: image rows (indices into the image table), class codes, class names."""

    name: str
    rows: np.ndarray  # int64
    labels: np.ndarray  # int64 codes into classes
    classes: tuple[str, ...]

    def __post_init__(self):
        if len(self.rows) != len(self.labels):
            raise ValueError(f"task {self.name}: {len(self.rows)} rows for {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"task {self.name}: label codes outside 0..{len(self.classes) - 1}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def from_values(cls, name: str, rows, values) -> "TaskData":
        """The dataset of the rows whose label value is not None; classes sorted by name."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(values, dtype=object)
        keep = np.array([v is not None and v == v for v in values], dtype=bool)  # v == v drops NaN
        classes, codes = np.unique(values[keep].astype(str), return_inverse=True)
        return cls(name, rows[keep], codes.astype(np.int64), tuple(classes.tolist()))


@dataclasses.dataclass(frozen=True)
class Batch:
    rows: np.ndarray  # (B,) image rows
    task: np.ndarray  # (B,) task index of each example
    label: np.ndarray  # (B,) class code in its own task


class MultiTaskSampler:
    """Balanced multitask batches: ``per_task = batch_size // len(tasks)`` examples of every task in each batch."""

    def __init__(self, tasks: list[TaskData], batch_size: int, samples_per_task: int, seed: int):
        if not tasks:
            raise ValueError("the multitask sampler needs at least one task dataset")
        empty = [t.name for t in tasks if len(t.rows) == 0]
        if empty:
            raise ValueError(f"task datasets without examples: {empty}; drop them before sampling")
        if batch_size < len(tasks):
            raise ValueError(f"batch_size {batch_size} is smaller than the number of tasks ({len(tasks)}); "
                             "each batch needs at least one example per task")
        self.tasks = list(tasks)
        self.per_task = batch_size // len(tasks)
        self.batch_size = self.per_task * len(tasks)
        self.samples_per_task = int(samples_per_task)
        self.steps = math.ceil(self.samples_per_task / self.per_task)
        self.seed = int(seed)

    @property
    def examples_per_epoch(self) -> int:
        return self.steps * self.batch_size

    def _draws(self, task: TaskData, rng: np.random.Generator) -> np.ndarray:
        """Indices into the task's dataset for one epoch: permutations, cycled when the dataset is small."""
        need = self.steps * self.per_task
        n = len(task.rows)
        cycles = math.ceil(need / n)
        return np.concatenate([rng.permutation(n) for _ in range(cycles)])[:need]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of epoch ``epoch`` (deterministic given the seed and the epoch number)."""
        rng = np.random.default_rng([self.seed, epoch])
        draws = [self._draws(t, rng) for t in self.tasks]
        for step in range(self.steps):
            part = slice(step * self.per_task, (step + 1) * self.per_task)
            picked = [d[part] for d in draws]
            yield Batch(rows=np.concatenate([t.rows[p] for t, p in zip(self.tasks, picked)]),
                        task=np.repeat(np.arange(len(self.tasks), dtype=np.int64), self.per_task),
                        label=np.concatenate([t.labels[p] for t, p in zip(self.tasks, picked)]))


def targets(batch: Batch, task_names: list[str], ok: np.ndarray | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-head labels and 0/1 sample weights: head ``k`` is weighted 1 only for examples of task ``k``.

    Other examples get label 0 with weight 0 (no loss, no gradient). ``ok`` (optional) zeroes
    the weight of examples whose image could not be read.
    """
    y, w = {}, {}
    valid = np.ones(len(batch.rows), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    for k, name in enumerate(task_names):
        mine = (batch.task == k) & valid
        y[name] = np.where(mine, batch.label, 0).astype(np.int64)
        w[name] = mine.astype(np.float32)
    return y, w
