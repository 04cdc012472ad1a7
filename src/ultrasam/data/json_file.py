"""Reading one JSON file of ours (a COCO file, a pack's ``pack.json``) with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_file(path: Path, not_found: str) -> Any:
    """The parsed content of ``path``.

    ``FileNotFoundError(not_found)`` when it is not a file (the caller says what was expected),
    ``ValueError`` naming the file when it is not valid JSON.
    """
    if not path.is_file():
        raise FileNotFoundError(not_found)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
