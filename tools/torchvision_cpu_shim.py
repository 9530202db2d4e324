"""Lets PyPI's torchvision 0.28.0 import beside the CPU build of torch 2.13.0 (the .venv-2.13.0 of make test).

PyPI's torchvision wheels are built against torch's CUDA build: beside the CPU build their C++ ops
(``_C.so``, which needs ``libc10_cuda.so``) do not load, and torchvision then fails at import,
registering shapes for ``torchvision::nms`` and ``qnms``, ops that no longer exist. Nothing in the
book or the tests calls those ops (the quantizable models need none), so this defines their two
schemas just before torchvision is first imported, and torchvision imports. Installed by the
Makefile into that environment only, as a ``.pth`` file's import; a no-op until torchvision is imported.
"""

import sys


class _DefineTorchvisionOps:
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import importlib.util
            from pathlib import Path

            import torch

            extension = next(Path(importlib.util.find_spec("torchvision").origin).parent.glob("_C*.so"), None)
            try:
                torch.ops.load_library(str(extension))  # a torchvision built for this torch: nothing to do
            except (OSError, RuntimeError, TypeError):
                library = torch.library.Library("torchvision", "DEF")
                library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                sys.modules[__name__].library = library  # kept alive: dropping it removes the ops
        return None


sys.meta_path.insert(0, _DefineTorchvisionOps())
