"""What an exported ONNX graph holds: op counts, data-dependent conv weights, an optional pass.

``onnx`` (and ``onnxscript`` for :func:`optimize_onnx`) are imported on use: they are not
dependencies of pedconv.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import onnx

__all__ = ["data_dependent_conv_weights", "op_counts", "optimize_onnx"]

ModelLike = Union["onnx.ModelProto", str, Path]
"""An ONNX model, or the path of an ``.onnx`` file."""


def _load(model: ModelLike) -> onnx.ModelProto:
    import onnx

    if isinstance(model, (str, Path)):
        return onnx.load(str(model))
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected an onnx.ModelProto or a path, got {type(model).__name__}")
    return model


def op_counts(model: ModelLike) -> dict[str, int]:
    """Nodes of the main graph by op type, most frequent first.

    Example:
        >>> import onnx.helper as h
        >>> g = h.make_graph([h.make_node("Relu", ["x"], ["y"]), h.make_node("Relu", ["y"], ["z"])], "g", [], [])
        >>> op_counts(h.make_model(g))
        {'Relu': 2}
    """
    counts = Counter(node.op_type for node in _load(model).graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def data_dependent_conv_weights(model: ModelLike) -> list[str]:
    """The ``Conv`` nodes whose weight is neither an initializer nor a ``Constant`` node's
    output (i.e. computed in the graph); empty when every conv weight is constant, which
    engines that reject data-dependent conv weights need.

    Example:
        >>> import onnx.helper as h
        >>> g = h.make_graph([h.make_node("Conv", ["x", "w"], ["y"], name="c")], "g", [], [])
        >>> data_dependent_conv_weights(h.make_model(g))
        ['c']
    """
    graph = _load(model).graph
    constant = {i.name for i in graph.initializer}
    constant |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [
        node.name or f"Conv#{k}"
        for k, node in enumerate(graph.node)
        if node.op_type == "Conv" and node.input[1] not in constant
    ]


def optimize_onnx(model: ModelLike, size_limit: int = 1 << 24) -> onnx.ModelProto:
    """The ``onnxscript`` optimiser (constant folding, dead-code and redundant-op removal)
    on ``model``: an optional pass after ``torch.onnx.export``. Needs ``onnxscript``.

    ``size_limit`` is the largest tensor (in elements) that constant folding may read or
    write. The optimiser's default (8192 in, 262144 out) leaves the reshapes of large conv
    weights in the graph, which is what the dynamo exporter's own pass does; the default
    here folds them, so every ``Conv`` weight becomes an initializer.
    """
    import onnxscript.optimizer

    return onnxscript.optimizer.optimize(_load(model), input_size_limit=size_limit, output_size_limit=size_limit)
