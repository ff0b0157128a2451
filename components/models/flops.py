"""Floating-point work of a Keras model and the machine's float32 matmul peak (DESIGN §12), for
throughput figures stated as a fraction of what the CPU can do (model FLOPs utilization).

* :func:`matmul_peak_gflops`: the best GFLOP/s of a large float32 ``tf.linalg.matmul`` (``n x n`` by
  ``n x n``, ``2 n^3`` FLOPs per product) over a few repeats, measured in the calling process, so
  under the same thread settings and machine load as the training it is compared with.
* :func:`count_flops`: the matmul-class FLOPs of one call of a model on one batch, counted on the
  traced TensorFlow graph (nested function calls included) from the static shapes of each op:

  - ``MatMul``:              ``2 * prod(output shape) * k``, ``k`` the contracted dimension;
  - ``BatchMatMul{,V2,V3}``: the same per batch entry (``prod`` runs over the batch dims too);
  - ``Einsum`` (two operands, e.g. ``EinsumDense`` and the attention of ``MultiHeadAttention``):
    ``2 * prod(size of every distinct index)``;
  - ``Conv2D``:              ``2 * prod(output shape) * kh * kw * c_in``.

  Element-wise work (activations, softmax, layer norm, the optimizer update) and gathers are
  not counted: on this hardware they are memory-bound, and the peak they are compared with is a
  matmul's. With ``training=True`` the count covers the forward pass *and* the backward pass as
  ``tf.GradientTape`` traces it (the gradients of every trainable weight), which is the exact
  number the train step executes; the common estimate ``3 x forward`` over-counts a little,
  since no gradient flows into the inputs of the first layers.
* :func:`training_flops_per_example`: that training count divided by the batch size.
* :func:`executed_training_flops`: the count a train step outside XLA executes on a batch, where
  the ADPM's encoders skip the padded tail of short sequences (below).
* :func:`replay_matmuls`: those training matmuls run alone on random operands of their shapes:
  the GFLOP/s they reach by themselves, a ceiling for the fraction of the peak a train step can.

The graph is traced as XLA would compile it (``jit_compile=True``; it is not run), so layers with
a static-shape and a data-dependent formulation (:mod:`components.models.xla`) count the static
one: the *nominal* work of the model on padded inputs. Outside XLA the ADPM's encoder skips the
padded positions of short sequences (``component1.length_buckets``), so the work a train step
actually executes is smaller: :func:`executed_training_flops` replaces each encoder's full-width
share of the nominal count by its count at the width each row of the batch is encoded at. The
achieved fraction of the peak is honest only from that executed count; the nominal one says how
fast the model's padded work gets done, which is what a model without the split would execute.

A matmul whose shapes are not static in the traced graph cannot be counted; :class:`FlopCount`
lists such ops in ``unknown`` (e.g. inside a function traced for ``[None, None]`` inputs) so a
caller can tell an incomplete count from a complete one.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time

MATMUL_OPS = ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "Conv2D")


@dataclasses.dataclass
class FlopCount:
    """Matmul-class FLOPs of one traced call, per op type, and the ops whose shapes were unknown."""

    total: int
    by_op: dict[str, int]
    unknown: list[str]
    batch_size: int

    @property
    def per_example(self) -> float:
        return self.total / self.batch_size


def matmul_peak_gflops(n: int = 4096, repeats: int = 5, dtype: str = "float32") -> float:
    """Best GFLOP/s of ``repeats`` timed ``[n, n] @ [n, n]`` products (after one untimed warm-up)."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(0)
    a = rng.normal((n, n), dtype=dtype)
    b = rng.normal((n, n), dtype=dtype)

    @tf.function
    def product():
        return tf.reduce_sum(tf.linalg.matmul(a, b)[0, :1])  # a scalar out: no 64 MB copy to numpy

    product().numpy()
    best = math.inf
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _static(shape) -> list[int] | None:
    dims = shape.as_list() if shape.rank is not None else None
    return None if dims is None or any(d is None for d in dims) else dims


def _einsum_flops(equation: str, shapes: list[list[int]]) -> int | None:
    """``2 * prod(size of each distinct index)`` of a two-operand einsum; None for other einsums."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    if len(inputs) != 2:
        return None
    sizes: dict[str, int] = {}
    for term, shape in zip(inputs, shapes):
        if "..." in term:
            head, tail = term.split("...")
            ellipsis = len(shape) - len(head) - len(tail)
            term = head + "".join(f"<{i}>" for i in range(ellipsis)) + tail
        labels = re.findall(r"<\d+>|[A-Za-z]", term)
        if len(labels) != len(shape):
            return None
        for label, dim in zip(labels, shape):
            sizes[label] = max(sizes.get(label, 1), dim)  # broadcast dims of 1
    return 2 * math.prod(sizes.values())


def _op_flops(op) -> int | None:
    """FLOPs of one matmul-class graph op from its static shapes; None when a shape is unknown."""
    out = _static(op.outputs[0].shape)
    ins = [_static(t.shape) for t in op.inputs]
    if out is None or any(s is None for s in ins):
        return None
    kind = op.type
    if kind == "MatMul":
        k = ins[0][0] if op.get_attr("transpose_a") else ins[0][1]
        return 2 * math.prod(out) * k
    if kind.startswith("BatchMatMul"):
        k = ins[0][-2] if op.get_attr("adj_x") else ins[0][-1]
        return 2 * math.prod(out) * k
    if kind == "Einsum":
        return _einsum_flops(op.get_attr("equation").decode(), ins)
    if kind == "Conv2D":
        kh, kw, c_in, _ = ins[1]
        return 2 * math.prod(out) * kh * kw * c_in
    return None


def _matmul_ops(graph, seen: set):
    """Every matmul-class op of ``graph`` and of the functions it calls, nested calls included."""
    for op in graph.get_operations():
        if op.type in MATMUL_OPS:
            yield op
        for attr in ("f", "then_branch", "else_branch", "body", "cond"):  # nested function calls
            try:
                fn = op.get_attr(attr)
            except (ValueError, TypeError):
                continue
            name = getattr(fn, "name", None)
            if not name or name in seen:
                continue
            seen.add(name)
            nested = graph._get_function(name) if hasattr(graph, "_get_function") else None
            nested_graph = getattr(nested, "graph", None)
            if nested_graph is not None:
                yield from _matmul_ops(nested_graph, seen)


def _traced_graph(model, batch: dict, training: bool, loss=None):
    """The graph of ``model`` on ``batch``'s shapes (see :func:`count_flops`) and the batch size."""
    import tensorflow as tf

    specs = {k: tf.TensorSpec(tf.convert_to_tensor(v).shape, tf.convert_to_tensor(v).dtype) for k, v in batch.items()}
    sizes = {int(s.shape[0]) for s in specs.values() if s.shape.rank}
    if len(sizes) != 1:
        raise ValueError(f"count_flops needs one batch size across the inputs, got {sorted(sizes)}")

    def forward(x):
        return model(x, training=training)

    def train(x):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            value = loss(tf.zeros_like(out), out) if loss is not None else out
            value = tf.reduce_mean(tf.cast(value, tf.float32))
        return tape.gradient(value, model.trainable_variables)

    # Traced as for XLA (never run): the layers then pick their static-shape formulation (see
    # components.models.xla), whose every shape is known; the data-dependent one has no static count.
    concrete = tf.function(train if training else forward, jit_compile=True).get_concrete_function(specs)
    return concrete.graph, sizes.pop()


def count_flops(model, batch: dict, training: bool = False, loss=None) -> FlopCount:
    """Matmul-class FLOPs of ``model`` on ``batch`` (a dict of tensors or arrays, every one with the
    batch size as its first dimension), counted on the graph traced for exactly those shapes.
    ``training=True``: one training step's forward and backward pass (gradients of every trainable
    weight of the loss ``loss(labels, outputs)``; default: the mean of the outputs, which traces the
    same matmuls), without the optimizer's element-wise update."""
    graph, batch_size = _traced_graph(model, batch, training, loss)
    by_op, unknown = {}, []
    for op in _matmul_ops(graph, set()):
        flops = _op_flops(op)
        if flops is None:
            unknown.append(f"{op.type} {op.name}")
        else:
            by_op[op.type] = by_op.get(op.type, 0) + flops
    return FlopCount(sum(by_op.values()), by_op, unknown, batch_size)


def replay_matmuls(model, batch: dict, repeats: int = 15, warmup: int = 3) -> dict:
    """The matmul-class ops of one training step of ``model`` on ``batch`` (the graph
    :func:`count_flops` counts: forward + backward, padded static shapes) run alone, on random
    operands of their shapes with their transpose flags, all in one ``tf.function``: the median
    seconds of ``repeats`` calls and the GFLOP/s.

    A ceiling for the achieved fraction of the peak: a train step cannot run these FLOPs faster
    than its matmuls do with nothing else to run. Narrow matmuls (the CTR ranker's: batch x 32..256
    projections, 51 x 51 attention per head) reach a smaller share of the peak than the
    ``4096 x 4096`` product :func:`matmul_peak_gflops` times. The independent products may run
    concurrently, as the executor runs a train step's. ``MatMul`` and ``BatchMatMul*`` are
    replayed; other op types (``Einsum``, ``Conv2D``) are listed in ``not_replayed``. Outside XLA
    the ADPM encoder runs short rows at a smaller width (:func:`executed_training_flops`), so its
    matmuls are smaller still and this padded replay is an upper bound for them too."""
    import statistics

    import tensorflow as tf

    graph, batch_size = _traced_graph(model, batch, training=True)
    calls, skipped = [], []
    for op in _matmul_ops(graph, set()):
        shapes, flops = [_static(t.shape) for t in op.inputs], _op_flops(op)
        if op.type == "MatMul" and flops is not None:
            flags = {"transpose_a": op.get_attr("transpose_a"), "transpose_b": op.get_attr("transpose_b")}
        elif op.type.startswith("BatchMatMul") and flops is not None:
            flags = {"adjoint_a": op.get_attr("adj_x"), "adjoint_b": op.get_attr("adj_y")}
        else:
            skipped.append(f"{op.type} {op.name}")
            continue
        calls.append((tf.random.normal(shapes[0]), tf.random.normal(shapes[1]), flags, flops))
    if not calls:
        raise ValueError(f"replay_matmuls: the training graph has no MatMul/BatchMatMul to replay ({skipped})")

    @tf.function
    def replay():
        # The products are returned, not reduced: a reduction would add memory-bound work.
        return [tf.linalg.matmul(a, b, **flags) for a, b, flags, _ in calls]

    for _ in range(warmup):
        replay()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        replay()
        seconds.append(time.perf_counter() - start)
    total, median = sum(c[-1] for c in calls), statistics.median(seconds)
    return {"matmuls": len(calls), "flops": total, "flops_per_example": total / batch_size, "seconds": median,
            "gflops": total / median / 1e9, "not_replayed": skipped}


def training_flops_per_example(model, batch: dict, loss=None) -> float:
    """Matmul FLOPs of one training step (forward + backward, :func:`count_flops` with
    ``training=True``) per example of ``batch``. ``model`` is a Keras model or a
    :class:`components.models.ranker.Ranker` (its ``train`` model, the one the loss sees)."""
    model = getattr(model, "train", model)
    names = [t.name for t in model.inputs] if getattr(model, "inputs", None) else None
    if names and isinstance(batch, dict):
        batch = {k: batch[k] for k in names if k in batch}
    return count_flops(model, batch, training=True, loss=loss).per_example


def _encoder_row_flops(encoder, width: int, cache: dict) -> int:
    """Training FLOPs (forward + backward) of ``encoder`` on one row of ``width`` tokens (target included)."""
    import numpy as np

    key = (id(encoder), width)
    if key not in cache:
        class Call:  # count_flops' model protocol: call(x, training) and trainable_variables
            trainable_variables = encoder.trainable_variables

            def __call__(self, x, training=None):
                return encoder(x["target"], x["sequence"], training=training)

        row = {"target": np.zeros(1, np.int64), "sequence": np.zeros((1, width - 1), np.int64)}
        cache[key] = count_flops(Call(), row, training=True).total
    return cache[key]


def executed_training_flops(model, batch: dict, nominal: FlopCount | None = None) -> FlopCount:
    """The matmul FLOPs one train step outside XLA executes on ``batch``: :func:`count_flops` with
    ``training=True`` (``nominal``, counted when not given), where each ADPM encoder with
    ``length_buckets`` counts every row at the width it is encoded at (the smallest bucket that
    holds the row's last valid position, else the full width; ``AdsformerEncoder._encode_by_length``)
    instead of the full width. Matmul FLOPs are linear in the rows, so an encoder's share is the
    sum over rows of its one-row count at the row's width."""
    import numpy as np

    from components.models.adpm import ADPM
    from components.models.adpm.config import seq_idx_key

    model = getattr(model, "train", model)
    nominal = nominal or count_flops(model, batch, training=True)
    adpm = next((layer for layer in model.layers if isinstance(layer, ADPM)), None)
    if adpm is None:
        return nominal
    inputs = adpm._last_k(batch)
    total, cache = nominal.total, {}
    for (entity, action), encoder in zip(adpm.cfg.component1.pairs, adpm.encoders):
        if not encoder.length_buckets:
            continue
        sequence = np.asarray(inputs[seq_idx_key(entity, action)])[:, : encoder.max_len]
        full = sequence.shape[1] + 1
        valid = np.concatenate([np.ones((len(sequence), 1), bool), sequence >= 0], axis=1)
        last = (valid * np.arange(1, full + 1)).max(axis=1)
        buckets = np.asarray(encoder.length_buckets)
        at = np.searchsorted(buckets, last, side="left")
        widths = np.where(at < len(buckets), np.minimum(buckets[np.minimum(at, len(buckets) - 1)], full), full)
        executed = sum(_encoder_row_flops(encoder, int(w), cache) * int(n) for w, n in zip(*np.unique(widths, return_counts=True)))
        total += executed - len(sequence) * _encoder_row_flops(encoder, full, cache)
    return FlopCount(int(total), {**nominal.by_op, "executed_adjustment": int(total - nominal.total)},
                     nominal.unknown, nominal.batch_size)


def utilization(examples_per_second: float, flops_per_example: float, peak_gflops: float) -> float:
    """Achieved fraction of the matmul peak: ``examples/s * FLOPs/example / peak``."""
    return examples_per_second * flops_per_example / (peak_gflops * 1e9)
