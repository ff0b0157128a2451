"""Atomic directory commits and ``_SUCCESS`` markers (DESIGN §3).

A directory is written in a temporary sibling and moved into place; ``_SUCCESS`` is
written last, so a reader that checks it never sees a half-written output. A crashed
writer leaves only a ``.tmp-*`` sibling, which the next commit of the same path removes.
"""
from __future__ import annotations

import contextlib
import os
import uuid

from components.lake import fs

SUCCESS = "_SUCCESS"
TMP_MARK = ".tmp-"


def is_complete(directory: str) -> bool:
    return fs.exists(fs.join(directory, SUCCESS))


def mark_success(directory: str) -> None:
    fs.write_bytes(fs.join(directory, SUCCESS), b"")


def clear_success(directory: str) -> None:
    fs.delete_tree(fs.join(directory, SUCCESS))


def _stale_siblings(directory: str) -> list[str]:
    parent, name = os.path.split(directory.rstrip("/"))
    return [fs.join(parent, d) for d in fs.list_dirs(parent) if d.startswith(name + TMP_MARK)]


def stage(directory: str) -> str:
    """Create and return a fresh temporary sibling of ``directory`` (removing stale ones)."""
    directory = directory.rstrip("/")
    for stale in _stale_siblings(directory):
        fs.delete_tree(stale)
    tmp = f"{directory}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    fs.makedirs(tmp)
    return tmp


def commit(tmp: str, directory: str, success: bool = True) -> None:
    """Replace ``directory`` with the staged ``tmp``; ``_SUCCESS`` last when ``success``.

    An existing ``directory`` loses its ``_SUCCESS`` first, so nobody reads it mid-swap.
    """
    directory = directory.rstrip("/")
    clear_success(directory)
    fs.delete_tree(directory)  # also a prefix of objects on object stores
    fs.move_tree(tmp, directory)
    if success:
        mark_success(directory)


@contextlib.contextmanager
def atomic_dir(directory: str, success: bool = True):
    """Yield a temporary sibling of ``directory``; on clean exit :func:`commit` it into place.

    On error the temporary directory is removed and ``directory`` is left as it was.
    """
    tmp = stage(directory)
    try:
        yield tmp
    except BaseException:
        fs.delete_tree(tmp)
        raise
    commit(tmp, directory, success)
