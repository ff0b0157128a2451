"""Thin helpers over ``apache_beam.io.filesystems.FileSystems`` (local paths, gs://, s3://, hdfs://).

Beam is imported lazily so commands that never touch the lake start fast.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import uuid


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def join(base: str, *parts: str) -> str:
    return _fs().join(base, *parts) if parts else base


def exists(path: str) -> bool:
    return _fs().exists(path)


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)
    # Object stores have no directories: nothing to create.


def list_files(directory: str, pattern: str = "*") -> list[str]:
    """Files directly under ``directory`` matching ``pattern``, sorted by name."""
    result = _fs().match([join(directory, pattern)])[0]
    return sorted(m.path for m in result.metadata_list)


def list_tree(directory: str) -> list[str]:
    """Every file below ``directory`` (recursive), sorted."""
    if is_local(directory):
        out = []
        for base, _, files in os.walk(directory):
            out.extend(os.path.join(base, f) for f in files)
        return sorted(out)
    return list_files(directory.rstrip("/"), "**")


def list_dirs(directory: str) -> list[str]:
    """Names of the immediate subdirectories of ``directory`` (local) or key prefixes (object stores)."""
    if is_local(directory):
        if not os.path.isdir(directory):
            return []
        return sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    prefix = directory.rstrip("/") + "/"
    names = {p[len(prefix):].split("/", 1)[0] for p in list_tree(directory) if "/" in p[len(prefix):]}
    return sorted(names)


def read_bytes(path: str) -> bytes:
    with _fs().open(path) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    with open_write(path) as f:
        f.write(data)


def open_write(path: str):
    """A binary file opened for streaming writes (a context manager)."""
    if is_local(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return _fs().create(path)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Replace the file ``path`` all or nothing. Local: a temporary sibling (``.tmp-`` like staged
    directories) renamed over it; object stores: one object write, which is atomic there."""
    if not is_local(path):
        write_bytes(path, data)
        return
    local = path[len("file://"):] if path.startswith("file://") else path
    tmp = f"{local}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        write_bytes(tmp, data)
        os.replace(tmp, local)
    except BaseException:
        delete_tree(tmp)
        raise


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def delete_tree(path: str) -> bool:
    """Delete a file or a directory tree (on object stores: every object under the prefix, for
    which ``exists`` is False); a missing path is not an error. True when something was deleted."""
    if exists(path):
        _fs().delete([path])
        return True
    if is_local(path):
        return False
    files = list_tree(path)
    if files:
        _fs().delete(files)
    return bool(files)


def move_tree(source: str, destination: str) -> None:
    """Move a directory: one rename on a local disk (atomic), file by file on object stores.

    On object stores the move is not atomic; readers never look before ``_SUCCESS``.
    """
    if is_local(source):
        os.makedirs(os.path.dirname(destination.rstrip("/")) or ".", exist_ok=True)
        os.rename(source, destination)
        return
    files = list_tree(source)
    src_prefix = source.rstrip("/") + "/"
    dst = [destination.rstrip("/") + "/" + f[len(src_prefix):] for f in files]
    if files:
        _fs().rename(files, dst)


@contextlib.contextmanager
def local_dir(directory: str, mode: str):
    """A local directory standing in for ``directory`` for libraries that only do local I/O
    (fastText, faiss, Keras): ``mode="r"`` downloads it first, ``mode="w"`` uploads what was
    written on clean exit. A local ``directory`` is used as is."""
    if is_local(directory):
        if mode == "w":
            os.makedirs(directory, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="adsformer-") as tmp:
        base = directory.rstrip("/") + "/"
        if mode == "r":
            download_tree(directory, tmp)
        yield tmp
        if mode == "w":
            for walk_base, _, files in os.walk(tmp):
                for name in files:
                    local = os.path.join(walk_base, name)
                    with open(local, "rb") as f:
                        write_bytes(base + os.path.relpath(local, tmp), f.read())


def download_tree(directory: str, local: str) -> None:
    """Copy every file below the remote ``directory`` into the local directory ``local``."""
    base = directory.rstrip("/") + "/"
    for path in list_tree(directory):
        target = os.path.join(local, path[len(base):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(read_bytes(path))
