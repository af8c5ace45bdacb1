"""A plugin that leaves a marker file when imported (shows that a blocked plugin is never imported)."""

import os
from pathlib import Path
from typing import Any

from segloss_registry import NoParams, hookimpl

Path(os.environ["SEGLOSS_FX_MARKER"]).write_text("imported")


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_marker", lambda inp, params: inp.prob.mean(), params=NoParams)
