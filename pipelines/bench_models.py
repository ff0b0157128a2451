"""The ``tfdata``, ``training``, ``models`` and ``serving`` bench entries: measurements on a lake with a finished run.

Each function runs inside one fresh bench child process (``pipelines.bench._child``) and reads
the lake only (the run's transform output, lookups, trained model, calibration and serving
export); whatever it writes goes to a scratch directory.

- :func:`measure_training`: CTR training examples/s through the trainer itself
  (``components.models.step.train_model`` into a scratch directory, no model saved, no
  predictions), from its step callbacks (``Throughput``), and the training FLOP/s that makes as
  a fraction of the float32 matmul peak measured in the same process before and after training
  (the better of the two), both from ``components.models.flops`` (matmul-class FLOPs the traced
  training step of the ranker the trainer built executes, averaged over batches as the trainer
  feeds them; ``matmul_peak_gflops``). ``fraction_of_matmul_peak`` counts the work executed (short
  sequences encoded at their bucket's width); ``nominal_fraction_of_matmul_peak`` counts the
  padded model's work (every sequence at full width) done at the same rate. Matmuls the count
  could not size (shapes unknown in the trace) are listed in ``flops_uncounted``: the fraction
  is then a lower bound. Then ``PROFILE_STEPS`` more steps of the same compiled train step on those
  batches run under TensorFlow's profiler (``components.models.op_profile``): ``op_time_shares``
  says where the step's op time goes (matmuls, optimizer, sparse lookups, random masks, the rest)
  and ``matmul_fraction_while_running`` = ``fraction_of_matmul_peak`` / the matmul share estimates
  the rate the matmuls themselves reach at their shapes, the most that removing all other work
  could give. ``matmul_replay_fraction`` measures that ceiling directly: the padded step's
  matmuls run alone on random operands of their shapes (``flops.replay_matmuls``), as a
  fraction of the same peak. Last, an A/B of what the encoders' length split buys: fresh copies
  of the ranker with and without it, train steps interleaved on the same batches
  (``length_split_speedup``; ``full_width_fraction_of_matmul_peak`` is the unsplit model's, whose
  executed work is the padded model's): skipping padded work raises examples/s but lowers the
  fraction of the peak, since what it skips are the largest attention matmuls.
- :func:`measure_tfdata`: records/s of the trainer's input pipeline
  (``components.models.input.make_dataset`` with the trainer's arguments: interleaved GZIP
  reads, shuffle, batch-then-parse, densify, prefetch) over a whole split, without training.
- :func:`measure_serving`: latency per request of ``candidates`` rows through the exported
  serving SavedModel (raw features -> TFT graph -> lookups -> model -> Platt), against the
  trained score model alone on the same candidates' already-transformed features.
- :func:`model_training_seconds`: the rankers' and the reference models' fit seconds of the run,
  read from its manifests (no training here).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time

MATMUL_N = 4096  # side of the square float32 matrices of the peak measurement (137 GFLOP a product)
MATMUL_REPEATS = 5
FLOP_BATCHES = 20  # training batches the executed FLOPs per example are averaged over
PROFILE_STEPS = 10  # train steps traced by the profiler for the op-time breakdown (after 2 untraced)
AB_WARMUP, AB_STEPS = 3, 20  # untimed, then timed train steps of each side of the length-split A/B


class _Built(list):
    """The rankers built, and ``calls``: the ``(args, kwargs)`` each was built with."""

    calls: list


@contextlib.contextmanager
def capture_ranker():
    """Within the block, ``components.models.ranker.build_ranker`` also appends what it builds to the
    yielded list (``train_model`` imports it at call time), so the ranker the trainer trained can be
    inspected afterwards; the list's ``calls`` holds the arguments of each build."""
    from components.models import ranker as ranker_module

    built, original = _Built(), ranker_module.build_ranker
    built.calls = []

    def recording(*args, **kwargs):
        built.append(original(*args, **kwargs))
        built.calls.append((args, kwargs))
        return built[-1]

    ranker_module.build_ranker = recording
    try:
        yield built
    finally:
        ranker_module.build_ranker = original


def trainer_batches(config, transform_dir: str, ranker, batch_size: int, count: int, label: str = "clicked"):
    """The first ``count`` full training batches as the trainer feeds them (``make_dataset`` shuffled
    with the config's seed, lookup rows): ``(model inputs, label)`` pairs of numpy arrays."""
    from components.models import input as model_input
    from components.models.adpm import ADPM

    ds = model_input.make_dataset(transform_dir, "train", batch_size, max_seq_len=config.models.max_seq_len,
                                  max_query_tokens=config.models.max_query_tokens, shuffle=True, seed=config.seed,
                                  include_strings=True, epochs=1)
    adpm = next((layer for layer in ranker.train.layers if isinstance(layer, ADPM)), None)
    for batch in ds.take(count + 1):
        if int(batch["clicked"].shape[0]) < batch_size:  # the split's last, partial batch
            continue
        if adpm is not None:
            batch = adpm.add_lookup_rows(batch)
        yield {k: batch[k].numpy() for k in ranker.input_names}, batch[label].numpy()


def measure_training(config, date, root: str, scratch: str, model: str = "ctr", peak_n: int = MATMUL_N,
                     peak_repeats: int = MATMUL_REPEATS) -> dict:
    """Training examples/s of ``model`` on the run of ``date`` in lake ``root`` and its fraction of the matmul peak."""
    from components.lake import Lake
    from components.models.step import MODELS, train_model, transform_dir

    lake = Lake(root)
    task = MODELS[model][0]
    task_cfg = getattr(config.models, task)
    batch_size = task_cfg.training.batch_size
    load = os.getloadavg()[0]
    from components.models import flops

    # The peak is measured before training and again after it, and the better one taken: measured only
    # after, it once came out at half its usual value (226 against ~430 GFLOP/s; the cause was not
    # found, e.g. the trainer's input pipeline still prefetching), which doubled the fraction.
    peak_before = float(flops.matmul_peak_gflops(n=peak_n, repeats=peak_repeats))
    with capture_ranker() as built:
        result = train_model(config, date, lake, model, progress=lambda *_: None, out_dir=scratch,
                             save_model=False, tensorboard=False, splits=())
    if not built:
        raise RuntimeError("training bench: train_model built no ranker through components.models.ranker.build_ranker "
                           "(it imports it at call time); update pipelines.bench_models.capture_ranker")
    ranker = built[-1]
    metrics = result.metrics
    rate = float(metrics["examples_per_second"])
    if not rate > 0:
        raise RuntimeError(f"training {model}: no throughput measured ({metrics['steps']} steps; the Throughput "
                           "callback skips the first 5 and needs 3 more)")
    out = {
        "model": model, "preset_batch_size": batch_size, "epochs": task_cfg.training.epochs,
        "training_rows": metrics["training_rows"], "steps": metrics["steps"], "parameters": metrics["parameters"],
        "lookups": metrics["lookups"], "examples_per_s": round(rate, 1), "load_before": round(load, 2),
    }
    from components.models.train import TASK_LABEL

    batches = list(trainer_batches(config, transform_dir(lake, date), ranker, batch_size, FLOP_BATCHES,
                                   label=TASK_LABEL[task]))
    nominal = flops.count_flops(ranker.train, batches[0][0], training=True)
    executed = statistics.fmean(flops.executed_training_flops(ranker, b, nominal).per_example for b, _ in batches)
    peak_after = float(flops.matmul_peak_gflops(n=peak_n, repeats=peak_repeats))
    peak = max(peak_before, peak_after)
    achieved, nominal_rate = rate * executed / 1e9, rate * nominal.per_example / 1e9
    out.update(flops_per_example=round(executed), nominal_flops_per_example=round(nominal.per_example),
               flop_batches=len(batches), achieved_gflops=round(achieved, 2),
               flops_source="components.models.flops.executed_training_flops (traced forward + backward, "
                            "matmul-class ops, each encoder row at the width it is encoded at)",
               flops_uncounted=list(nominal.unknown),
               matmul_peak_gflops=round(peak, 1), matmul_peak_before_gflops=round(peak_before, 1),
               matmul_peak_after_gflops=round(peak_after, 1), matmul_peak_n=peak_n, matmul_peak_repeats=peak_repeats,
               fraction_of_matmul_peak=round(achieved / peak, 4),
               nominal_fraction_of_matmul_peak=round(nominal_rate / peak, 4))
    out.update(_op_time(ranker, batches, out["fraction_of_matmul_peak"]))
    replay = flops.replay_matmuls(ranker.train, batches[0][0])
    out.update(matmul_replay_matmuls=replay["matmuls"], matmul_replay_gflops=round(replay["gflops"], 2),
               matmul_replay_fraction=round(replay["gflops"] / peak, 4), matmul_replay_not_replayed=replay["not_replayed"])
    out.update(_length_split_ab(config, model, built.calls[-1], batches, executed, nominal.per_example, peak))
    return out


def _length_split_ab(config, model: str, build_call, batches, executed: float, nominal: float, peak: float) -> dict:
    """The trainer's ranker against the same ranker without the encoders' length split
    (``component1.length_buckets = []``: every row at full width, all the padded model's work
    executed): two fresh copies built as the trainer built its ranker, compiled as it compiles
    (``train.compile_ranker``; a constant learning rate instead of the decay schedule), their train
    steps interleaved on the same batches (:data:`AB_STEPS` timed each, the order alternating), so
    both see the same machine load. Empty when there is nothing to compare (no encoder splits, or
    the step is XLA-compiled, where no encoder splits)."""
    import inspect

    import keras

    from components.models.adpm import ADPM
    from components.models.ranker import build_ranker
    from components.models.step import MODELS
    from components.models.train import compile_ranker

    training = getattr(config.models, MODELS[model][0]).training
    bound = inspect.signature(build_ranker).bind(*build_call[0], **build_call[1])
    adpm = bound.arguments.get("personalization")
    if not isinstance(adpm, ADPM) or training.jit_compile or not adpm.cfg.component1.length_buckets:
        return {}

    def copy(length_buckets):
        layer = adpm.get_config()
        layer["config"]["component1"]["length_buckets"] = list(length_buckets)
        keras.utils.set_random_seed(config.seed)
        bound.arguments["personalization"] = ADPM.from_config(layer)
        ranker = build_ranker(*bound.args, **bound.kwargs)
        compile_ranker(ranker, training, training.learning_rate)
        return ranker

    sides = {"split": copy(adpm.cfg.component1.length_buckets), "full": copy([])}
    seconds = {name: [] for name in sides}
    for i in range(AB_WARMUP + AB_STEPS):
        x, y = batches[i % len(batches)]
        for name in (("split", "full") if i % 2 == 0 else ("full", "split")):
            t0 = time.perf_counter()
            sides[name].train.train_on_batch(x, y)
            if i >= AB_WARMUP:
                seconds[name].append(time.perf_counter() - t0)
    split, full = (statistics.median(seconds[name]) for name in ("split", "full"))
    batch = len(batches[0][1])
    return {"ab_steps": AB_STEPS, "ab_split_step_ms": round(split * 1e3, 2),
            "ab_split_fraction_of_matmul_peak": round(batch / split * executed / 1e9 / peak, 4),
            "full_width_step_ms": round(full * 1e3, 2), "full_width_examples_per_s": round(batch / full, 1),
            "full_width_fraction_of_matmul_peak": round(batch / full * nominal / 1e9 / peak, 4),
            "length_split_speedup": round(full / split, 3)}


def _op_time(ranker, batches, fraction: float) -> dict:
    """The op-time breakdown of :data:`PROFILE_STEPS` train steps of the trained ranker (module doc)."""
    from components.models import op_profile

    def steps(first, count):
        for i in range(first, first + count):
            x, y = batches[i % len(batches)]
            ranker.train.train_on_batch(x, y)

    steps(0, 2)  # outside the trace: the first call may build the function train_on_batch runs
    profile = op_profile.trace_op_time(lambda: steps(2, PROFILE_STEPS), optimizer_scope=ranker.train.optimizer.name)
    shares = {k: round(v, 4) for k, v in profile["shares"].items()}
    return {"profile_steps": PROFILE_STEPS, "op_time_shares": shares,
            "op_seconds_per_step": round(profile["op_seconds"] / PROFILE_STEPS, 4),
            "matmul_fraction_while_running": round(fraction / shares["matmul"], 4) if shares["matmul"] > 0 else None}


def measure_tfdata(config, date, root: str, split: str = "train", model: str = "ctr", passes: int = 1) -> dict:
    """Records/s of ``make_dataset`` over the whole ``split`` with the arguments the ``model``'s trainer
    passes (its batch size, shuffled with the default buffer, GZIP, batch-then-parse, densify,
    prefetch, strings included; one epoch), best of ``passes`` passes, each through a new dataset;
    nothing else runs in the process. The trainer's own maps after it (lookup rows, features/label
    split) are not included."""
    from components.lake import Lake
    from components.models import input as model_input
    from components.models.step import MODELS, transform_dir

    tdir = transform_dir(Lake(root), date)
    training = getattr(config.models, MODELS[model][0]).training
    expected = model_input.split_rows(tdir, split)
    load = os.getloadavg()[0]
    seconds = []
    for k in range(passes):
        ds = model_input.make_dataset(tdir, split, training.batch_size, max_seq_len=config.models.max_seq_len,
                                      max_query_tokens=config.models.max_query_tokens, shuffle=True,
                                      seed=config.seed + k, epochs=1, include_strings=True)
        records = 0
        t = time.perf_counter()
        for batch in ds:
            records += int(batch["clicked"].shape[0])
        seconds.append(time.perf_counter() - t)
        if expected is not None and records != expected:
            raise RuntimeError(f"tfdata: one pass over {split} gave {records:,} records, stats.json says {expected:,}")
    best = min(seconds)
    return {"split": split, "records": records, "files": len(model_input.split_files(tdir, split)),
            "batch_size": training.batch_size, "passes": passes,
            "seconds": round(best, 3), "seconds_all": [round(s, 3) for s in seconds],
            "records_per_s": round(records / best, 1), "load_before": round(load, 2)}


def _percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def measure_serving(config, date, root: str, task: str = "ctr", candidates: int = 500, requests: int = 300,
                    warmup: int = 20) -> dict:
    """Latency per request of ``candidates`` rows of the test day through the exported serving model,
    and through the trained score model alone on the same rows' transformed features (reference).

    Requests are consecutive slices of the test day's examples (wrapping around when the day has
    fewer than ``requests x candidates`` rows), each served as one request (one ``request_id``) with
    its rows' raw session events. Their tensors are built before timing, so each timed
    call is the model call and its result's transfer to numpy; ``warmup`` calls precede the
    ``requests`` timed ones. The reference features are the ones the serving graph itself feeds its
    model (captured from ``ServingModel`` on each request), and its logits are checked against the
    serving model's.
    """
    import numpy as np
    import pyarrow as pa
    import tensorflow as tf

    from components.calibrate.step import load_platt
    from components.lake import Lake, parquet
    from components.models.step import load_score_model, transform_dir
    import datetime as dt

    from components.serving.model import ServingModel, load_serving, raw_features
    from components.serving.step import serving_dir, serving_features, session_events_of
    from components.sessionize.step import session_spec
    from components.sessionize.step import examples_dir

    lake = Lake(root)
    path = serving_dir(lake, date, task)
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"serving bench: no serving model at {path}; run the DAG for {date} on {root} "
                                "through export_serving first")
    test_day = config.window.test_date(date)
    table = parquet.read_partition(examples_dir(lake, test_day))
    n = table.num_rows
    distinct = max(1, min(requests, n // candidates if n >= candidates else 1))
    pairs = config.sessionize.pairs
    events = session_events_of(lake, test_day, table)
    window_ms = session_spec(config.sessionize).window_ms
    raw = []
    for r in range(distinct):
        rows = table.take(pa.array((np.arange(candidates) + r * candidates) % n))
        features = raw_features(rows, pairs, events, window_ms)
        features["request_id"] = np.full(candidates, f"bench-{r}", dtype=object)
        raw.append(features)
    del table, events

    fn = load_serving(path)
    raw = [{k: tf.constant(r[k], spec.dtype) for k, spec in fn.structured_input_signature[1].items()} for r in raw]

    # Reference inputs: what the serving code feeds its model (raw -> TFT -> densify -> lookup rows), taken
    # by running ServingModel's own _serve eagerly once per request with its model replaced by a recorder.
    score_model = load_score_model(lake, date, task)
    module = ServingModel(transform_dir(lake, date), score_model, load_platt(lake, date, task), pairs,
                          config.models.max_seq_len, config.models.max_query_tokens,
                          serving_features(config, date, lake, date + dt.timedelta(days=1)))
    captured = []

    def capture(inputs, training=False):
        captured.append(inputs)
        return tf.zeros([candidates])

    module.model = capture
    for request in raw:
        module._serve(**request)
    inputs = captured
    model_fn = tf.function(lambda x: score_model(x, training=False))

    def timed(call, args, first, count):
        out = []
        for i in range(first, first + count):
            t = time.perf_counter()
            call(args[i % len(args)])
            out.append(time.perf_counter() - t)
        return out

    serve_call = lambda request: {k: v.numpy() for k, v in fn(**request).items()}  # noqa: E731
    model_call = lambda x: model_fn(x).numpy()  # noqa: E731
    load = os.getloadavg()[0]
    timed(serve_call, raw, 0, warmup)
    timed(model_call, inputs, 0, warmup)
    # Interleaved in blocks, so a change in the machine's load hits both.
    serve_s, model_s, block = [], [], 10
    for first in range(0, requests, block):
        count = min(block, requests - first)
        serve_s += timed(serve_call, raw, first, count)
        model_s += timed(model_call, inputs, first, count)
    diff = max(float(np.abs(fn(**raw[i])["logit"].numpy() - model_fn(inputs[i]).numpy()).max())
               for i in range(min(distinct, 5)))

    def summary(seconds):
        p50, p99 = _percentile(seconds, 50), _percentile(seconds, 99)
        return {"p50_ms": round(p50 * 1e3, 3), "p99_ms": round(p99 * 1e3, 3),
                "mean_ms": round(statistics.fmean(seconds) * 1e3, 3),
                "candidates_per_s": round(candidates / statistics.fmean(seconds), 1)}

    serving, model = summary(serve_s), summary(model_s)
    return {"task": task, "test_day": test_day.isoformat(), "test_day_rows": n, "candidates": candidates,
            "requests": requests, "distinct_requests": distinct, "warmup": warmup, "serving": serving,
            "model_only": model, "p50_ratio": round(serving["p50_ms"] / model["p50_ms"], 3),
            "max_abs_diff_logit": diff, "load_before": round(load, 2)}



def model_training_seconds(root: str, date: str) -> dict:
    """Fit seconds of the rankers and of the reference models of the run of ``date`` in the lake at
    ``root``, from the manifests of its ``train_<model>`` steps and ``train_references``'
    ``references.json``; per task, ``ranker_over_reference``: the ranker with the ADPM's seconds over
    those of the reference ``evaluate`` compared it with (``metrics.json``: chosen on validation)."""
    import datetime as dt
    import json

    from components.evaluate.step import metrics_path
    from components.lake import Lake, fs
    from components.models.step import MODELS
    from components.references.step import references_path

    lake, day = Lake(root), dt.date.fromisoformat(date)
    references = json.loads(fs.read_text(references_path(lake, day)))["tasks"]
    evaluated = json.loads(fs.read_text(metrics_path(lake, day)))
    tasks = {}
    for task, refs in references.items():
        rankers = {}
        for model, (model_task, _) in MODELS.items():
            manifest = fs.join(lake.run_dir(day, f"train_{model}"), "manifest.json")
            metrics = json.loads(fs.read_text(manifest)).get("metrics", {}) if fs.exists(manifest) else {}
            if model_task == task and "seconds" in metrics:  # a skipped task has no fit
                rankers[model] = metrics["seconds"]
        chosen = evaluated.get(task, {}).get("reference")
        if task not in rankers or chosen is None:  # no ranker with the ADPM, or no reference to set it against
            continue
        seconds = {name: r["train_seconds"] for name, r in refs.items()}
        tasks[task] = {"rankers": rankers, "references": seconds,
                       "references_total": round(sum(seconds.values()), 2), "reference": chosen,
                       "ranker_over_reference": round(rankers[task] / max(seconds[chosen], 1e-9), 1)}
    return {"date": date, "tasks": tasks}
