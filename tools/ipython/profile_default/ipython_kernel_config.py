# The profile nbval's kernels use (Makefile: IPYTHONDIR): no history file in the repository.
c = get_config()  # noqa: F821
c.HistoryManager.enabled = False
# What C++ code writes to the process's stdout and stderr (torch's and ONNX Runtime's logs) reaches a
# notebook only through a thread that forwards file descriptors 1 and 2, and may arrive after the cell has
# finished: such output is kept out of notebooks, so that a stored output never depends on that race.
c.IPKernelApp.capture_fd_output = False
