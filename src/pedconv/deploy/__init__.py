"""Deployment: folding BatchNorms into convolutions, and what an exported ONNX graph holds.

* :mod:`.fuse`         :func:`fuse_bn`: each BatchNorm after a conv (static or dynamic) folded into it
* :mod:`.onnx_graph`   op counts of an ONNX graph, the check that its conv weights are constant,
  and the optional ``onnxscript`` optimiser pass

The export itself is ``torch.onnx.export``; while exporting, the PEDConv layers run their
export form (:mod:`pedconv.execution.export`).
"""

from .fuse import fusable, fuse_bn
from .onnx_graph import data_dependent_conv_weights, op_counts, optimize_onnx

__all__ = ["data_dependent_conv_weights", "fusable", "fuse_bn", "op_counts", "optimize_onnx"]
