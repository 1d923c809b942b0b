"""Progress bars on long work, off in tests and when HEADSTART_NO_PROGRESS is set."""

from __future__ import annotations

import os


def progress_enabled() -> bool:
    return os.environ.get("HEADSTART_NO_PROGRESS", "") in ("", "0")
