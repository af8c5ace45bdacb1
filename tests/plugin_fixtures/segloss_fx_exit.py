"""A plugin that calls sys.exit while it is imported."""

import sys

sys.exit("segloss_fx_exit refuses to load")
