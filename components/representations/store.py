"""Vector tables and the catalog the representation steps share (DESIGN §7).

A vector table is ``runs/D/<step>/vectors.parquet``: ``listing_id`` (string) and ``vector``
(fixed-size list of float32), sorted by listing id, every value finite. Steps that skip
(modality missing or disabled by config) write no table; readers get ``None``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.lake import Lake, fs, parquet
from components.step import StepError
from components.validate.step import validated_files

VECTORS_FILE = "vectors.parquet"
MODEL_DIR = "model"
STEP_OF = {"skipgram": "skipgram", "text": "text_vectors", "visual": "visual", "air": "air"}
"""Representation name -> the DAG step that produces it."""


@dataclasses.dataclass
class Vectors:
    """Listing ids (sorted, unique) and their float32 vectors, row-aligned."""

    ids: np.ndarray  # object array of str
    matrix: np.ndarray  # (n, dim) float32

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=object)
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2 or len(self.ids) != len(self.matrix):
            raise ValueError(f"{len(self.ids)} ids for a matrix of shape {self.matrix.shape}")

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def sorted(self) -> "Vectors":
        order = np.argsort(self.ids.astype(str), kind="stable")
        return Vectors(self.ids[order], self.matrix[order])

    def rows(self, ids) -> np.ndarray:
        """Row of each id in ``ids``, -1 where unknown."""
        index = {k: i for i, k in enumerate(self.ids)}
        return np.array([index.get(k, -1) for k in ids], dtype=np.int64)

    def take(self, ids, default: float = 0.0) -> np.ndarray:
        """Vectors of ``ids`` (``default`` rows for unknown ids)."""
        rows = self.rows(ids)
        out = np.full((len(rows), self.dim), default, dtype=np.float32)
        known = rows >= 0
        out[known] = self.matrix[rows[known]]
        return out


def normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32 C-contiguous as FAISS wants."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, np.finfo(np.float32).tiny), dtype=np.float32)


def vectors_path(lake: Lake, date, representation: str) -> str:
    return fs.join(lake.run_dir(date, STEP_OF[representation]), VECTORS_FILE)


def write_vectors(path: str, vectors: Vectors) -> None:
    """Write a vector table (sorted by id); refuses non-finite values and duplicate ids."""
    vectors = vectors.sorted()
    if not np.isfinite(vectors.matrix).all():
        bad = int((~np.isfinite(vectors.matrix).all(axis=1)).sum())
        raise StepError(f"{bad} of {len(vectors)} vectors have NaN or infinite values; the trainer diverged "
                        f"(lower the learning rate or check the input); nothing written to {path}")
    if len(set(vectors.ids)) != len(vectors):
        raise StepError(f"duplicate listing ids in the vectors for {path}")
    flat = pa.array(vectors.matrix.reshape(-1), pa.float32())
    table = pa.table({"listing_id": pa.array(vectors.ids.tolist(), pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.dim)})
    parquet.write_table(table, path)


def read_vectors(path: str) -> Vectors | None:
    """The vector table at ``path``, or None when the step wrote none (skipped)."""
    if not fs.exists(path):
        return None
    table = parquet.read_file(path)
    column = table.column("vector").combine_chunks()
    dim = column.type.list_size
    matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    return Vectors(np.array(table.column("listing_id").to_pylist(), dtype=object), matrix)


def load_representation(lake: Lake, date, representation: str) -> Vectors | None:
    return read_vectors(vectors_path(lake, date, representation))


def catalog(lake: Lake, date) -> pa.Table | None:
    """The validated catalog snapshot of ``date`` sorted by listing id, or None (events-only logs)."""
    files = validated_files(lake, "listings", date)
    if not files:
        return None
    table = pa.concat_tables([parquet.read_file(f) for f in files]).sort_by("listing_id")
    top = pc.list_element(pc.split_pattern(table.column("taxonomy_path"), "."), 0)
    return table.append_column("top_taxonomy", top)


FIELDS_FILE = "fields.parquet"
TEXT_FIELDS = ("title", "tags", "taxonomy")
"""Per-field average-pooled text vectors of the text_vectors step (AIR's text input, paper 000 §3.2.2)."""


def fields_path(lake: Lake, date) -> str:
    return fs.join(lake.run_dir(date, STEP_OF["text"]), FIELDS_FILE)


def write_fields(path: str, ids, fields: dict[str, np.ndarray]) -> None:
    """One row per listing: a float32 vector per text field (zeros when the field has no known token)."""
    ids = np.asarray(ids, dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    columns = {"listing_id": pa.array(ids[order].tolist(), pa.string())}
    for name in TEXT_FIELDS:
        matrix = np.ascontiguousarray(fields[name][order], dtype=np.float32)
        columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), matrix.shape[1])
    parquet.write_table(pa.table(columns), path)


def read_fields(path: str) -> dict[str, Vectors] | None:
    """Field name -> Vectors (same id order for every field), or None when the text step wrote none."""
    if not fs.exists(path):
        return None
    table = parquet.read_file(path)
    ids = np.array(table.column("listing_id").to_pylist(), dtype=object)
    out = {}
    for name in TEXT_FIELDS:
        column = table.column(name).combine_chunks()
        out[name] = Vectors(ids, column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size))
    return out
