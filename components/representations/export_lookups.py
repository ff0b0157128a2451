"""The ``export_lookups`` step: frozen lookup SavedModels of the representations (paper 000 §2.7.2; DESIGN §7).

For each name in ``representations.lookups.representations`` whose step wrote vectors, the
vectors go to ``runs/D/export_lookups/<name>/`` as a lookup SavedModel (see :mod:`lookup`:
raw listing id -> vector, zeros for unknown ids and padding, masked average pooling). Each
export is loaded back at once and must return exactly the trained vectors for every id and
zeros for an unknown id, else the step fails. A representation without vectors (its step was
skipped: disabled, no images, no titles) is skipped with a note.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np

from components.lake import Lake, fs
from components.representations import lookup as lookup_lib
from components.representations.store import STEP_OF, load_representation, vectors_path
from components.step import StepError, StepResult

STEP = "export_lookups"
VERIFY_BATCH = 65_536


def lookup_dir(lake: Lake, date, representation: str) -> str:
    """Where the lookup SavedModel of ``representation`` for ``date`` lives."""
    return fs.join(lake.run_dir(date, STEP), representation)


def run(config, date: dt.date, lake: Lake, progress=print) -> StepResult:
    """Export and verify one lookup SavedModel per representation with vectors. ``config``: the
    pipeline config (reads ``.representations.lookups``)."""
    names = config.representations.lookups.representations
    unknown = [n for n in names if n not in STEP_OF]
    if unknown:
        raise StepError(f"export_lookups: unknown representation(s) {unknown} in representations.lookups."
                        f"representations; known: {sorted(STEP_OF)}")
    import tensorflow  # noqa: F401 - imported once up front so the per-table export seconds exclude it

    result = StepResult()
    exported, skipped = {}, {}
    for name in names:
        source = vectors_path(lake, date, name)
        vectors = load_representation(lake, date, name)
        if vectors is None:
            reason = missing_reason(lake, date, name)
            result.notes.append(f"skipped {name}: {reason}")
            skipped[name] = reason
            progress(f"  {name}: no vectors, skipped ({reason})")
            continue
        result.inputs.append(source)
        try:
            rows = lookup_lib.table_rows(vectors)
        except ValueError as err:
            raise StepError(f"export_lookups: cannot export the {name} vectors of {source}: {err}") from err
        if len(rows) != len(vectors):
            result.notes.append(f'{name}: the padding id "" had a vector; it is left out (padding maps to zeros)')
        target = lookup_dir(lake, date, name)
        progress(f"  {name}: exporting {len(rows):,} x {rows.dim} vectors to {target}")
        t0 = time.perf_counter()
        info = lookup_lib.export_lookup(rows, target, name)
        seconds_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        _verify(target, rows, name)
        info.update(export_seconds=round(seconds_export, 3), verify_seconds=round(time.perf_counter() - t0, 3),
                    bytes=sum(_size(f) for f in fs.list_tree(target)))
        exported[name] = info
        result.outputs[name] = target
        result.row_counts[name] = info["rows"]
        progress(f"  {name}: verified ({info['bytes'] / 1e6:.1f} MB, {seconds_export:.1f} s)")
    result.metrics = {"lookups": exported, "skipped": skipped, "mask_dtype": "bool"}
    return result


def _verify(path: str, rows, name: str) -> None:
    """Load the export back: every id must give exactly its vector, an unknown id and ``""`` zeros."""
    import tensorflow as tf

    module = lookup_lib.load_lookup(path)
    dim, size = int(module.dim.numpy()), int(module.size.numpy())
    if (dim, size) != (rows.dim, len(rows)):
        raise StepError(f"export_lookups: {name} lookup at {path} reports {size} x {dim}, "
                        f"expected {len(rows)} x {rows.dim}; the export is broken, rerun with --force")
    for start in range(0, len(rows), VERIFY_BATCH):
        ids = rows.ids[start:start + VERIFY_BATCH]
        got = module.lookup(tf.constant(ids.tolist(), tf.string)).numpy()
        if not np.array_equal(got, rows.matrix[start:start + VERIFY_BATCH]):
            bad = int((got != rows.matrix[start:start + VERIFY_BATCH]).any(axis=1).sum())
            raise StepError(f"export_lookups: the {name} lookup at {path} returns different vectors than the trained "
                            f"ones for {bad} of ids {start}..{start + len(ids) - 1}; the export is broken "
                            "(a duplicate or mangled id in the vocabulary?); rerun with --force")
    known = set(rows.ids)
    unknown = "__unknown_listing__"
    while unknown in known:
        unknown += "_"
    zeros = module.lookup(tf.constant([unknown, lookup_lib.PADDING])).numpy()
    if zeros.shape != (2, rows.dim) or np.any(zeros != 0):
        raise StepError(f"export_lookups: the {name} lookup at {path} does not map unknown ids and padding to zeros")


def missing_reason(lake: Lake, date, name: str) -> str:
    """Why ``name`` has no vectors for ``date``: the producing step's own skip reason when its manifest has one."""
    step = STEP_OF[name]
    manifest = fs.join(lake.run_dir(date, step), "manifest.json")
    base = f"no vectors at {vectors_path(lake, date, name)}"
    try:
        skipped = json.loads(fs.read_text(manifest)).get("metrics", {}).get("skipped")
    except (OSError, ValueError):
        return f"{base} (step {step} has no manifest for {date}: not run or failed)"
    return f"{base} (step {step} skipped: {skipped})" if skipped else f"{base} (step {step} wrote none)"


def _size(path: str) -> int:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes
