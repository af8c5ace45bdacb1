"""A plugin whose import is interrupted (KeyboardInterrupt) the first time only.

The environment variable SEGLOSS_FX_INTERRUPT names a file: while it does not exist, the import
creates it and raises KeyboardInterrupt, as a user pressing Ctrl-C during the first load would.
"""

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from segloss_registry import Inputs, NoParams, hookimpl

_flag = Path(os.environ["SEGLOSS_FX_INTERRUPT"])
if not _flag.exists():
    _flag.write_text("interrupted once")
    raise KeyboardInterrupt


def fx_after_interrupt(inp: Inputs, params: NoParams) -> Tensor:
    return inp.pixel_mean((inp.prob - inp.target) ** 2)


@hookimpl
def register_losses(register: Any) -> None:
    register("fx_after_interrupt", fx_after_interrupt, params=NoParams)
