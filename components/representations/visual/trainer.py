"""Training loop and batch inference of the visual model (paper 000 A.5.1, A.5.2).

Training: phase 1 (backbone frozen) for ``phase1_epochs``, then phase 2 (last ``unfreeze_last``
backbone layers trainable, BatchNorm frozen) for ``phase2_epochs``; each epoch runs the
sampler's balanced batches through ``train_on_batch`` while the next batch's images decode
in the background. Throughput comes from the steps themselves, not from a wall clock that
includes graph tracing (DESIGN §12), and is reported per phase next to loss and per-head accuracy.

Inference: the frozen embedding model over every listing with an image, in fixed-size
batches (the last one padded so the graph is traced once).
"""
from __future__ import annotations

import time

import numpy as np

from components.representations.config import VisualConfig
from components.representations.visual.images import ImageLoader
from components.representations.visual.model import compile_model, set_phase
from components.representations.visual.sampler import MultiTaskSampler, targets
from components.step import StepError


def train(model, embedding_model, sampler: MultiTaskSampler, loader: ImageLoader, cfg: VisualConfig,
          progress=print) -> dict:
    """Train ``model`` (which wraps ``embedding_model``) in the two phases; returns per-phase metrics."""
    names = [t.name for t in sampler.tasks]
    report: dict = {"batch_size": sampler.batch_size, "per_task_in_batch": sampler.per_task,
                    "steps_per_epoch": sampler.steps, "examples_per_epoch": sampler.examples_per_epoch,
                    "phases": {}}
    epoch_number = 0
    unreadable = 0
    for phase, epochs in ((1, cfg.phase1_epochs), (2, cfg.phase2_epochs)):
        if epochs == 0:
            continue
        trainable = set_phase(embedding_model, phase, cfg.unfreeze_last)
        compile_model(model, names, cfg.learning_rate)
        started = time.perf_counter()
        timed_images, timed_seconds, history = 0, 0.0, []
        for epoch in range(epochs):
            batches = list(sampler.epoch(epoch_number))
            epoch_started = time.perf_counter()
            loss_sum, correct, seen = 0.0, np.zeros(len(names)), np.zeros(len(names))
            for step, (batch, (_, pixels, ok)) in enumerate(zip(batches, loader.batches(b.rows for b in batches))):
                unreadable += int((~ok).sum())
                y, w = targets(batch, names, ok)
                t = time.perf_counter()
                model.reset_metrics()  # the logs then hold this batch's loss and head accuracies
                logs = model.train_on_batch(pixels.astype(np.float32), y, sample_weight=w, return_dict=True)
                if step > 0 or epoch > 0:  # the phase's first step traces the graph
                    timed_seconds += time.perf_counter() - t
                    timed_images += len(batch.rows)
                loss_sum += float(logs["loss"])
                counts = np.array([w[n].sum() for n in names])
                correct += counts * np.array([float(logs[f"{n}_accuracy"]) for n in names])
                seen += counts
            loss = loss_sum / max(len(batches), 1)
            if not np.isfinite(loss):
                raise StepError(f"visual: training diverged in phase {phase}, epoch {epoch + 1} (loss {loss}); "
                                "lower representations.visual.learning_rate or check the images")
            accuracy = correct / np.maximum(seen, 1)
            entry = {"loss": round(loss, 4), "seconds": round(time.perf_counter() - epoch_started, 1),
                     **{f"{n}_accuracy": round(float(a), 4) for n, a in zip(names, accuracy)}}
            history.append(entry)
            progress(f"  visual phase {phase} epoch {epoch + 1}/{epochs}: loss {entry['loss']}, accuracy "
                     + ", ".join(f"{n} {entry[f'{n}_accuracy']}" for n in names) + f" ({entry['seconds']} s)")
            epoch_number += 1
        report["phases"][str(phase)] = {
            "epochs": epochs, "trainable_backbone_layers": len(trainable), "history": history,
            "loss": history[-1]["loss"], **{f"{n}_accuracy": history[-1][f"{n}_accuracy"] for n in names},
            "seconds": round(time.perf_counter() - started, 1),
            "images_per_second": round(timed_images / timed_seconds, 1) if timed_seconds > 0 else None,
        }
    report["unreadable_images_skipped"] = unreadable
    return report


def embed(embedding_model, loader: ImageLoader, rows: np.ndarray, batch_size: int,
          progress=print) -> tuple[np.ndarray, np.ndarray, dict]:
    """Representations of the images at ``rows``: (matrix (n, dim) float32, readable mask, timing)."""
    rows = np.asarray(rows, dtype=np.int64)
    dim = embedding_model.output_shape[-1]
    out = np.zeros((len(rows), dim), dtype=np.float32)
    ok_all = np.zeros(len(rows), dtype=bool)
    chunks = [np.arange(i, min(i + batch_size, len(rows))) for i in range(0, len(rows), batch_size)]
    started = time.perf_counter()
    report_every = max(1, len(chunks) // 5)
    for k, (positions, (_, pixels, ok)) in enumerate(zip(chunks, loader.batches(rows[c] for c in chunks))):
        x = pixels.astype(np.float32)
        if len(x) < batch_size:  # pad so the inference graph keeps one shape
            x = np.concatenate([x, np.zeros((batch_size - len(x),) + x.shape[1:], np.float32)])
        out[positions] = np.asarray(embedding_model.predict_on_batch(x))[: len(positions)]
        ok_all[positions] = ok
        if (k + 1) % report_every == 0 or k + 1 == len(chunks):
            progress(f"  visual inference: {positions[-1] + 1}/{len(rows)} images")
    seconds = time.perf_counter() - started
    return out, ok_all, {"seconds": round(seconds, 1),
                         "images_per_second": round(len(rows) / seconds, 1) if seconds > 0 else None}
