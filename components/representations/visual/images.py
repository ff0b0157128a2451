"""Listing images: where they are and how they become model input (paper 000 A.5.2 "extracts the primary image").

``image_uri`` in the catalog is relative to the lake root (``raw/images/L0000003.png``) unless
it carries a scheme (``gs://bucket/...``). Images are read through the lake's file systems
(so object stores work), decoded with Pillow and resized to a square ``size`` x ``size`` RGB
uint8 array; the model does its own scaling (Keras EfficientNet takes 0-255 floats).

Images are streamed, never held for the whole catalog: :meth:`ImageLoader.batches` decodes
the next batch on background threads while the model works on the current one.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from components.lake import Lake, fs

READ_THREADS = 8
"""Threads reading and decoding images (object-store reads wait on the network; decoding holds the GIL part-time)."""


def resolve_uri(lake: Lake, uri: str) -> str:
    """Absolute path or URI of a catalog ``image_uri`` (relative ones are under the lake root)."""
    if "://" in uri or os.path.isabs(uri):
        return uri
    return lake.path(*[part for part in uri.split("/") if part])


def existing(paths: Iterable[str]) -> np.ndarray:
    """Which of ``paths`` exist, with one directory listing per distinct directory (not one request per file)."""
    paths = list(paths)
    by_dir: dict[str, set[str]] = {}
    for path in paths:
        by_dir.setdefault(_parent(path), set())
    for directory in by_dir:
        by_dir[directory] = _listing(directory)
    return np.array([_name(p) in by_dir[_parent(p)] for p in paths], dtype=bool)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else "."


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _listing(directory: str) -> set[str]:
    if fs.is_local(directory):
        local = directory[len("file://"):] if directory.startswith("file://") else directory
        try:
            return {entry.name for entry in os.scandir(local) if entry.is_file()}
        except OSError:
            return set()
    try:
        return {_name(p) for p in fs.list_files(directory)}
    except Exception:  # noqa: BLE001 - Beam raises its own error types for a missing prefix
        return set()


def decode(data: bytes, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB pixels of an encoded image (PNG, JPEG, ...), resized with Pillow's bilinear filter."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


class ImageLoader:
    """Reads and decodes the images at ``paths`` (one per row) into uint8 batches of ``size`` x ``size`` x 3."""

    def __init__(self, paths: list[str], size: int, threads: int = READ_THREADS):
        self.paths = list(paths)
        self.size = int(size)
        self.threads = max(1, int(threads))

    def __len__(self) -> int:
        return len(self.paths)

    def _one(self, row: int) -> np.ndarray | None:
        try:
            return decode(fs.read_bytes(self.paths[row]), self.size)
        except (OSError, ValueError, SyntaxError):  # unreadable or not an image (PIL raises all three)
            return None

    def load(self, rows, pool: ThreadPoolExecutor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (len(rows), size, size, 3) and whether each image could be read; failed rows are zeros."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.size, self.size, 3), dtype=np.uint8)
        ok = np.zeros(len(rows), dtype=bool)
        if pool is None:
            with ThreadPoolExecutor(self.threads) as own:
                return self.load(rows, own)
        for i, pixels in enumerate(pool.map(self._one, rows.tolist())):
            if pixels is not None:
                out[i], ok[i] = pixels, True
        return out, ok

    def batches(self, row_batches: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(rows, pixels, ok) per batch of rows, the next batch decoding in the background while the caller works."""
        with ThreadPoolExecutor(self.threads) as pool, ThreadPoolExecutor(1) as ahead:
            pending = None
            for rows in row_batches:
                rows = np.asarray(rows, dtype=np.int64)
                future = ahead.submit(self.load, rows, pool)
                if pending is not None:
                    yield pending[0], *pending[1].result()
                pending = (rows, future)
            if pending is not None:
                yield pending[0], *pending[1].result()
