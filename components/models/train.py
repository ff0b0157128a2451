"""Training of one ranker on the transform output (paper 000 §4, A.2-A.4; DESIGN §8).

Adam (``training.optimizer``: Keras' Adam or its lazy variant for the embedding tables) with cosine
decay, binary cross-entropy on logits, batch size and epochs from config, optionally compiled with
XLA (``training.jit_compile``), under the configured tf.distribute strategy. Throughput is measured from per-batch callbacks
(``fit`` can return long after its last step, DESIGN §12). A non-finite loss stops training
and fails the step with the epoch and batch where it happened. After training, the main logit
(no debias tower) is written for every row of the validation and test splits, for
calibration and next-day evaluation.
"""
from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np
import pyarrow as pa

from components.models.lazy_adam import make_optimizer
from components.step import StepError

TASK_LABEL = {"ctr": "clicked", "pccvr": "purchased"}
"""CTR learns clicks on every impression; PCCVR learns purchases on clicked impressions (post-click)."""
PREDICTION_COLUMNS = ("impression_id", "logit", "clicked", "purchased", "sample_rate")


@dataclasses.dataclass
class TrainOutcome:
    history: dict
    examples_per_second: float | None
    steps: int
    seconds: float


class Throughput(keras.callbacks.Callback):
    """Examples/s from batch end times, skipping the first ``warmup`` batches (tracing); also stops
    training at the first non-finite loss."""

    def __init__(self, batch_size: int, warmup: int = 5):
        super().__init__()
        self.batch_size, self.warmup = batch_size, warmup
        self.times, self.nonfinite = [], None

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.nonfinite is None:
            self.nonfinite = (len(self.times), float(loss))
            self.model.stop_training = True

    @property
    def examples_per_second(self) -> float | None:
        t = self.times[self.warmup:]
        return self.batch_size * (len(t) - 1) / (t[-1] - t[0]) if len(t) > 2 else None


class EpochProgress(keras.callbacks.Callback):
    def __init__(self, progress, steps_per_epoch: int):
        super().__init__()
        self.progress, self.steps = progress, steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        val = f", validation auc {logs['val_auc']:.4f}" if "val_auc" in logs else ""
        self.progress(f"    epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.4f}, "
                      f"auc {logs.get('auc', float('nan')):.4f}{val} ({time.perf_counter() - self.t0:.1f} s, "
                      f"{self.steps} steps)")


class ScoreValidation(keras.callbacks.Callback):
    """At each epoch's end, ROC-AUC of the *score* model (main logit, no debias tower) on the validation
    batches, written into the epoch's logs as ``val_auc`` for ``EarlyStopping`` (placed before it).

    ``fit``'s own validation pass evaluates the model it trains, which for a ranker with the debias
    tower adds the position and platform logit (paper 000 §5.3): its ROC-AUC then credits the logged
    position, which serving never sees, and the epoch it picks need not be the best for the score
    that is calibrated, evaluated and served."""

    def __init__(self, score_model, validation_ds, validation_steps: int | None):
        super().__init__()
        self.score_model, self.validation_ds, self.validation_steps = score_model, validation_ds, validation_steps

    def on_epoch_end(self, epoch, logs=None):
        results = self.score_model.evaluate(self.validation_ds, steps=self.validation_steps, verbose=0,
                                            return_dict=True)
        if logs is not None:
            logs["val_auc"], logs["val_loss"] = float(results["auc"]), float(results["loss"])


def task_batches(dataset, task: str, input_names: list[str]):
    """(inputs, label) batches for ``fit``. For PCCVR, pass its clicked rows (``input.clicked_rows``)."""
    import tensorflow as tf

    label = TASK_LABEL[task]
    return dataset.map(lambda b: ({k: b[k] for k in input_names}, b[label]), num_parallel_calls=tf.data.AUTOTUNE)


@keras.saving.register_keras_serializable(package="adsformer")
class RowBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy from logits, one value per example, for the rankers' rank-1 logits and labels ``[B]``.

    ``keras.losses.BinaryCrossentropy`` averages over the last axis, which for ``[B]`` logits is the batch
    axis: it returns a scalar, and Keras leaves a scalar loss unscaled by 1/replicas (it only scales
    per-example losses it reduces itself). Under a strategy with N replicas the all-reduced gradients
    were then N times the global-batch gradient and the logged loss N times the true loss. Per-example
    values let Keras reduce and scale them (sum / global batch).
    """

    def __init__(self, name: str = "binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        from keras import ops

        return keras.losses.binary_crossentropy(ops.reshape(y_true, (-1, 1)), ops.reshape(y_pred, (-1, 1)),
                                                from_logits=True)


def _adapt_for_multi_worker(model, element_spec) -> None:
    """Work around two places where Keras 3's ``fit`` (TF backend, checked with Keras 3.15 / TF 2.21)
    fails under MultiWorkerMirroredStrategy with more than one worker
    (https://github.com/keras-team/keras/issues/20585, /20329); a no-op otherwise.

    1. ``fit`` starts with a symbolic build of the compiled metrics, loss and optimizer from one
       distributed batch that it first averages with ``strategy.reduce("MEAN", batch)``; across
       workers that is a collective op on one tensor, not on a ``(features dict, label)`` batch
       ("Attempt to convert a value ({... PerReplica ...}) with an unsupported type (<class 'dict'>)
       to a Tensor"). The build only needs shapes and dtypes: it is done here from the dataset's
       element spec, and Keras' own pass is skipped for this model.
    2. Each step's per-replica logs (scalar metric results) are averaged with
       ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode, which rejects scalars ("Invalid
       reduction dimension 0 for input with 0 dimensions"): the train step returns them as
       1-element vectors, which that reduce turns back into the scalar mean over the replicas.
    """
    import tensorflow as tf
    from keras import ops

    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
            strategy.num_replicas_in_sync == len(strategy.extended.worker_devices)):
        return  # not multi-worker mode: every replica is on this worker
    if not (hasattr(model, "_symbolic_build") and hasattr(model, "_maybe_symbolic_build")):
        raise StepError(f"this Keras ({keras.__version__}) lacks the internals the MultiWorkerMirroredStrategy "
                        "workaround in components/models/train.py uses; check whether its fit works under "
                        "multi_worker now and update the workaround")
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)  # TensorSpecs have the .shape and .dtype it reads
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    train_step = model.train_step

    def train_step_with_vector_logs(data):
        return {k: ops.reshape(v, (1,)) for k, v in train_step(data).items()}

    model.train_step = train_step_with_vector_logs
    test_step = model.test_step  # validation logs (early stopping) are reduced the same way

    def test_step_with_vector_logs(data):
        return {k: ops.reshape(v, (1,)) for k, v in test_step(data).items()}

    model.test_step = test_step_with_vector_logs


def _auc():
    """The ROC-AUC metric of training and of early stopping (``val_auc``)."""
    return keras.metrics.AUC(from_logits=True, name="auc")


def compile_ranker(ranker, cfg, learning_rate, steps_per_execution: int = 1) -> None:
    """Compile ``ranker.train`` as the trainer does: ``cfg.optimizer`` (a ``TrainingConfig``) at
    ``learning_rate`` (a float or a schedule), the row-wise binary cross-entropy on logits, ROC-AUC,
    XLA as ``cfg.jit_compile`` says."""
    ranker.train.compile(optimizer=make_optimizer(cfg.optimizer, learning_rate), loss=RowBinaryCrossentropy(),
                         metrics=[_auc()], steps_per_execution=steps_per_execution, jit_compile=cfg.jit_compile)


def fit(ranker, train_ds, steps_per_epoch: int, cfg, log_dir: str | None, progress,
        validation_ds=None, validation_steps: int | None = None) -> TrainOutcome:
    """Compile and fit ``ranker.train`` (already built under the strategy's scope). With
    ``cfg.early_stopping_patience`` and a finite ``validation_ds``, each epoch ends with a pass over
    it (``validation_steps`` batches of a repeated dataset, or until a finite one ends), and training
    keeps the weights of the epoch with the best validation ROC-AUC."""
    total = max(steps_per_epoch * cfg.epochs, 1)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total, alpha=cfg.cosine_decay_alpha)
    strategy = ranker.train.distribute_strategy
    steps_per_execution = cfg.steps_per_execution
    if steps_per_execution > 1 and strategy.num_replicas_in_sync > 1:
        progress(f"    training.steps_per_execution {steps_per_execution} -> 1: Keras {keras.__version__} cannot run "
                 "several steps per execution under a strategy with more than one replica (\"You must feed a value "
                 "for placeholder tensor 'while/cond/Placeholder'\")")
        steps_per_execution = 1
    # The optimizer and the metrics create variables and bind to the strategy current at their
    # construction: make them under the strategy the model was built with (a model built under
    # MirroredStrategy but compiled outside its scope fails in fit with "Mixing different
    # tf.distribute.Strategy objects").
    early = cfg.early_stopping_patience is not None and validation_ds is not None and cfg.epochs > 1
    monitor_score = early and ranker.score is not ranker.train  # the debias tower: validate the score model
    with strategy.scope():
        compile_ranker(ranker, cfg, schedule, steps_per_execution)
        if monitor_score:
            ranker.score.compile(loss=RowBinaryCrossentropy(), metrics=[_auc()], jit_compile=cfg.jit_compile)
    _adapt_for_multi_worker(ranker.train, train_ds.element_spec)
    meter = Throughput(cfg.batch_size)
    callbacks = [meter]
    if monitor_score:
        _adapt_for_multi_worker(ranker.score, validation_ds.element_spec)
        callbacks.append(ScoreValidation(ranker.score, validation_ds, validation_steps))
    callbacks.append(EpochProgress(progress, steps_per_epoch))
    stopping = None
    if early:
        stopping = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=cfg.early_stopping_patience,
                                                 restore_best_weights=True)
        callbacks.append(stopping)
    if not early or monitor_score:  # fit's own validation pass is wanted only when it scores the served model
        validation_ds = None
    if log_dir:
        profile = tuple(cfg.profile_batches) if cfg.profile_batches else 0
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, update_freq=max(steps_per_epoch // 10, 1),
                                                     profile_batch=profile))
    t0 = time.perf_counter()
    history = ranker.train.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                               validation_data=validation_ds, validation_steps=validation_steps,
                               shuffle=False, verbose=0)  # tf.data shuffles
    if meter.nonfinite is not None:
        step, loss = meter.nonfinite
        raise StepError(f"training stopped: the loss became {loss} at step {step} (epoch {step // steps_per_epoch + 1}); "
                        "lower training.learning_rate or check the input features for extreme values")
    hist = {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()}
    if stopping is not None and "val_auc" in hist:
        best = int(np.argmax(hist["val_auc"]))
        hist["best_epoch"] = best + 1
        progress(f"    kept epoch {best + 1} of {len(hist['val_auc'])} (validation ROC-AUC {hist['val_auc'][best]:.4f})")
    return TrainOutcome(hist, meter.examples_per_second, len(meter.times), time.perf_counter() - t0)


def predict_logits(score_model, dataset, task: str, input_names: list[str]) -> pa.Table:
    """Main logits of every row of ``dataset`` (in order) with ids and labels."""
    import tensorflow as tf

    from components.models.input import clicked_only

    @tf.function(reduce_retracing=True)  # PCCVR batches shrink to their clicked rows: shapes vary
    def step(batch):
        return score_model({k: batch[k] for k in input_names}, training=False)

    columns = {c: [] for c in PREDICTION_COLUMNS}
    for batch in dataset:
        if task == "pccvr":
            batch = clicked_only(batch)
        columns["logit"].append(step(batch).numpy().astype(np.float32))
        for c in ("impression_id", "clicked", "purchased", "sample_rate"):
            columns[c].append(batch[c].numpy())
    out = {c: np.concatenate(v) if v else np.array([]) for c, v in columns.items()}
    return pa.table({
        "impression_id": pa.array([s.decode() for s in out["impression_id"]], pa.string()),
        "logit": pa.array(out["logit"], pa.float32()),
        "clicked": pa.array(out["clicked"].astype(bool)),
        "purchased": pa.array(out["purchased"].astype(bool)),
        "sample_rate": pa.array(out["sample_rate"].astype(np.float64)),
    })
