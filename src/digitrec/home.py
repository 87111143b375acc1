"""Where digitrec keeps what belongs to its user rather than to a run: the corrections
store (``feedback.sqlite3``) and the model registry (``models/``).

``$DIGITREC_HOME``, else ``$XDG_DATA_HOME/digitrec``, else ``~/.local/share/digitrec``.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "DIGITREC_HOME"


def digitrec_home() -> Path:
    if home := os.environ.get(HOME_ENV):
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "digitrec"
