"""A plugin whose import calls pytest.skip at module level (pytest's Skipped is a BaseException)."""

import pytest

pytest.skip("fx_skipped: not for this machine", allow_module_level=True)
