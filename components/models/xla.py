"""Whether the graph being traced will be compiled by XLA (``jit_compile=True``).

Some layers and the optimizer have two formulations of the same computation: one with
data-dependent shapes (only the valid entries of padded sequences are looked up and pooled, a
batch is split by sequence length, only the touched embedding rows are updated), which is the
fast one for TensorFlow's executor; and a static-shape one, which XLA requires (it cannot compile
``tf.where`` with one argument, ``tf.unique``, ``dynamic_partition`` and the like). They read
:func:`in_xla_context` while they are traced and pick the formulation; both compute the same
values (up to the order of floating-point sums).
"""
from __future__ import annotations


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (``tf.function(jit_compile=True)``, Keras'
    ``compile(jit_compile=True)``), including inside its nested functions and control flow."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
