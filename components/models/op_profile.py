"""Where a traced training step's time goes, by kind of op (DESIGN §12; issue 7's matmul-peak target).

:func:`trace_op_time` runs a function under TensorFlow's profiler and sums, per op category, the
wall time of every TensorFlow op the executor ran (the ``name:Type`` events of the host plane of
the trace, read with TensorFlow's own XPlane protobuf; no profiler plugin needed). Ops that only
call other functions (``PartitionedCall``, ``While``, ...) are skipped: their callees are counted.
The executor runs independent ops concurrently (inter-op threads), so the sum can exceed the wall
time; the shares are of the summed op time.

Categories (:data:`CATEGORIES`, first match wins): ``matmul`` (the matmul-class ops the FLOP count
of :mod:`components.models.flops` covers, oneDNN's fused ones included), ``optimizer`` (ops under the
optimizer's name scope, e.g. ``adam/``), ``sparse`` (gathers, segment sums, scatters,
partition/stitch: embedding lookups and their gradients, the length split), ``random`` (dropout
masks), ``other`` (element-wise ops, reductions, softmax, layer norms, transposes, casts, ...).

Why it matters: ``fraction_of_matmul_peak`` = matmul FLOP/s over the peak. If the other ops took no
time at all, the step would run at ``fraction / matmul_share`` of the peak, the rate its matmuls
reach at the shapes they have (``matmul_fraction_while_running``): an upper bound of what fusing
or removing the non-matmul work alone could give.
"""
from __future__ import annotations

import glob
import os
import re
import tempfile

MATMUL_TYPES = re.compile(r"^(_Mkl)?(Native)?(Fused)?(Batch)?MatMul(V2|V3)?$|^(_Mkl)?Einsum$|^(_Mkl)?(Fused)?Conv")
SPARSE_TYPES = re.compile(r"Gather|Scatter|Segment|DynamicPartition|DynamicStitch|^Unique|^Where$|SparseSoftmax")
RANDOM_TYPES = re.compile(r"Random|Multinomial")
OP_TYPE = re.compile(r"^_?[A-Z][A-Za-z0-9_]*$")  # TensorFlow op types: MatMul, _MklMatMul, ...
CALL_TYPES = re.compile(r"PartitionedCall$|^While$|^StatelessWhile$|^If$|^StatelessIf$|^Case$")
CATEGORIES = ("matmul", "optimizer", "sparse", "random", "other")


def categorize(name: str, op_type: str, optimizer_scope: str | None = None) -> str:
    """The category of the op ``name`` of type ``op_type`` (see the module doc)."""
    if MATMUL_TYPES.search(op_type):
        return "matmul"
    if optimizer_scope and name.split("/", 1)[0] == optimizer_scope:
        return "optimizer"
    if SPARSE_TYPES.search(op_type):
        return "sparse"
    if RANDOM_TYPES.search(op_type):
        return "random"
    return "other"


def op_seconds(xplane_path: str, optimizer_scope: str | None = None) -> dict[str, float]:
    """Summed wall seconds of the TensorFlow ops in one ``*.xplane.pb`` trace, per category."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                name, _, op_type = plane.event_metadata[event.metadata_id].name.rpartition(":")
                # an op event is "name:Type"; not "ThreadpoolListener::StartRegion" (its name ends in
                # ":") nor the Python thread's "...: __inference_one_step_on_data_1" (the whole call)
                if not name or name.endswith(":") or not OP_TYPE.match(op_type) or CALL_TYPES.search(op_type):
                    continue
                totals[categorize(name, op_type, optimizer_scope)] += event.duration_ps * 1e-12
    return totals


def trace_op_time(run, optimizer_scope: str | None = None, log_dir: str | None = None) -> dict:
    """Run ``run()`` under the profiler and return ``{"seconds": {category: s}, "shares": {category: f},
    "op_seconds": total}``. The trace goes to ``log_dir`` (default: a temporary directory, removed)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        out = log_dir or tmp
        tf.profiler.experimental.start(out)
        try:
            run()
        finally:
            tf.profiler.experimental.stop()
        traces = sorted(glob.glob(os.path.join(out, "plugins", "profile", "*", "*.xplane.pb")))
        if not traces:
            raise RuntimeError(f"the profiler wrote no *.xplane.pb under {out}")
        seconds = op_seconds(traces[-1], optimizer_scope)
    total = sum(seconds.values())
    if not total > 0:
        raise RuntimeError("the trace holds no TensorFlow op events (did run() execute any TensorFlow ops?)")
    return {"seconds": seconds, "shares": {k: v / total for k, v in seconds.items()}, "op_seconds": total}
