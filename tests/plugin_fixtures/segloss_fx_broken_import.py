"""A plugin whose import fails: it needs a package that is not installed."""

import segloss_fx_dependency_that_is_not_installed  # noqa: F401
