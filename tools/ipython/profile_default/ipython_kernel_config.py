# The profile nbval's kernels use (Makefile: IPYTHONDIR): no history file in the repository.
c = get_config()  # noqa: F821
c.HistoryManager.enabled = False
