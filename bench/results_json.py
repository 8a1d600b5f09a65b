"""Writing a bench's JSON so that a run killed at any moment leaves a whole file.

The long benches rewrite ``--out`` after every section; a plain ``write_text`` cut off by its
caller's timeout would leave half a file and lose the sections before it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)
