"""Imports ``torchvision.models`` beside the CPU torch of this project.

Every torchvision wheel on the package index is a CUDA build whose C++
extension cannot load beside CPU torch: ``import torchvision`` fails with
"operator torchvision::nms does not exist". Declaring the schemas of the two
operators its Python side registers fake kernels for (``nms``, ``qnms``)
first makes ``torchvision.models`` import; the C++ operators themselves stay
unavailable, and the model tests use none of them.
"""

import importlib.util

_LIBRARY = []  # keeps the schema declarations alive for the process


def load_models():
  """``torchvision.models``, or None when torch or torchvision is missing."""
  if (importlib.util.find_spec("torch") is None or
      importlib.util.find_spec("torchvision") is None):
    return None
  import torch  # pylint: disable=g-import-not-at-top
  if not _LIBRARY:
    try:
      torch.ops.torchvision.nms  # pylint: disable=pointless-statement
    except (AttributeError, RuntimeError):
      lib = torch.library.Library("torchvision", "DEF")
      lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) "
                 "-> Tensor")
      lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) "
                 "-> Tensor")
      _LIBRARY.append(lib)
    else:
      _LIBRARY.append(None)  # a working torchvision build
  import torchvision.models  # pylint: disable=g-import-not-at-top
  return torchvision.models
