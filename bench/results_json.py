"""Writing a bench's JSON so that a run killed at any moment leaves a whole file.

The long benches rewrite ``--out`` after every section; a plain ``write_text`` cut off by its
caller's timeout would leave half a file and lose the sections before it too.
"""

from __future__ import annotations

import json
import os
from typing import Any

from zitflow.atomic import write_atomic


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path``, whole or not at all (:func:`zitflow.atomic.write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False).encode())
