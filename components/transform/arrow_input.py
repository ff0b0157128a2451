"""Examples (Arrow) -> the record batches tensorflow-transform reads (TFXIO conventions).

TFXIO expects every column as a list array (tf.Example style): scalars become lists of
one, bools and timestamps become int64, floats float32. Done with pyarrow kernels on whole
batches; no per-row Python.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.examples import seq_column
from schemas.features import ENGINEERED_FEATURES

STRING_SCALARS = ("impression_id", "listing_id", "shop_id", "taxonomy_id", "query", "platform")
INT_SCALARS = ("ts", "position", "logged_in", "clicked", "purchased")
FLOAT_SCALARS = ("price", "sample_rate") + ENGINEERED_FEATURES


def _as_list(values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1, dtype=np.int32)), values)


def input_columns(pairs) -> list[str]:
    return list(STRING_SCALARS + INT_SCALARS + FLOAT_SCALARS) + [seq_column(e, a) for e, a in pairs]


def to_record_batch(table: pa.Table, pairs) -> pa.RecordBatch:
    """The TFXIO form of an examples table (its columns ``input_columns(pairs)``)."""
    arrays, names = [], []
    for name in STRING_SCALARS:
        arrays.append(_as_list(pc.fill_null(table.column(name), "").combine_chunks()))
        names.append(name)
    for name in INT_SCALARS:
        column = table.column(name)
        column = pc.cast(column, pa.int64()) if not pa.types.is_timestamp(column.type) else \
            pc.cast(column, pa.int64())
        arrays.append(_as_list(pc.fill_null(column, 0).combine_chunks()))
        names.append(name)
    for name in FLOAT_SCALARS:
        arrays.append(_as_list(pc.cast(pc.fill_null(table.column(name), 0.0), pa.float32()).combine_chunks()))
        names.append(name)
    for e, a in pairs:
        name = seq_column(e, a)
        arrays.append(table.column(name).combine_chunks())
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def tensor_adapter_config(pairs):
    """The TensorAdapterConfig matching :func:`to_record_batch` and ``features.input_feature_spec``."""
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from components.transform.features import input_feature_spec

    schema = schema_utils.schema_from_feature_spec(input_feature_spec(pairs))
    arrow_schema = to_record_batch(_empty_examples(pairs), pairs).schema
    representations = tensor_representation_util.InferTensorRepresentationsFromSchema(schema)
    return tensor_adapter.TensorAdapterConfig(arrow_schema, representations), schema


def _empty_examples(pairs) -> pa.Table:
    from schemas.examples import examples_schema

    return examples_schema(pairs).empty_table()
