"""Replacing a file whole or not at all: write a temporary sibling, then rename it over the target.

A reader (or a re-run after kill -9) sees the old file or the new one, never half of one. The
temporary name ends in ``.part`` and is unique to the writing process and thread; it is removed
when the write fails. Files get the usual umask permissions (unlike ``tempfile.mkstemp``'s 0600),
since exports are meant to be shared.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parent folders created) through a ``.part`` sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
