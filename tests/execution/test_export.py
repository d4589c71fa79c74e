"""The export form (execution/export.py): exact against the eager strategies, batch independent,
constant conv weights, and a lean ONNX graph."""

import collections
import itertools
import warnings

import pytest
import torch
import torch.nn as nn

import pedconv
from pedconv.execution.export import export_conv2d
from pedconv.execution.factored import factored
from pedconv.execution.geometry import ConvGeometry
from pedconv.method.cp import CPFactors
from pedconv.testing import randomize_generator

GEOMETRIES = [  # (cin, cout, kernel, stride, padding, dilation, groups)
    (6, 8, (3, 3), 1, 1, 1, 1),
    (6, 8, (3, 3), 2, 1, 1, 1),
    (6, 8, (3, 2), 1, 0, 2, 1),
    (6, 8, (3, 3), 1, 1, 1, 2),
    (6, 6, (3, 3), 2, 1, 1, 6),
    (6, 12, (5, 5), 1, 2, 1, 6),
    (6, 8, (1, 1), 1, 0, 1, 1),
    (6, 8, (1, 1), 2, 0, 1, 2),
]


@pytest.mark.parametrize("geom", GEOMETRIES, ids=str)
@pytest.mark.parametrize("rank", [1, 2])
def test_export_form_equals_the_factored_strategy(geom, rank):
    cin, cout, kernel, stride, padding, dilation, groups = geom
    geometry = ConvGeometry.make(stride, padding, dilation, groups)
    x = torch.randn(3, cin, 9, 8)
    w = torch.randn(cout, cin // groups, *kernel)
    bias = torch.randn(cout)
    full = [torch.rand(3, rank, n) + 0.5 for n in (cout, cin // groups, kernel[0] * kernel[1])]
    for keep in itertools.product([True, False], repeat=3):
        if not any(keep):
            continue
        factors = CPFactors(*(f if k else None for f, k in zip(full, keep)))
        ref = factored(x, w, bias, factors, geometry)
        for taps in (False, True):
            out = export_conv2d(x, w, bias, factors, geometry, taps=taps)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, msg=f"keep={keep} taps={taps}")


def test_traced_layers_run_the_export_form_on_any_batch():
    layers = [
        pedconv.PEDConv2d(8, 8, 3, padding=1, rank=2),
        pedconv.PEDConv2d(8, 16, 3, stride=2, padding=1, groups=2, components=("psi", "gamma")),
        pedconv.PEDConv2d(8, 8, 3, padding=1, groups=8, padding_mode="reflect"),
        pedconv.PEDConv2d(8, 8, 1, components="phi", strategy="factored"),
    ]
    for layer in layers:
        randomize_generator(layer)
        layer.eval()
        traced = torch.jit.trace(layer, torch.randn(2, 8, 10, 10))
        for batch in (1, 5):
            x = torch.randn(batch, 8, 10, 10)
            torch.testing.assert_close(traced(x), layer(x), atol=1e-5, rtol=1e-5)


def _export_counts(model, path, x):
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_onnx_export_is_lean_and_keeps_conv_weights_constant(tmp_path):
    """A converted ResNet-style net: the TorchScript exporter's graph of every dynamic layer is
    a handful of nodes. Bound: per dynamic layer the export form has 3 component Reshapes, 1-3
    per rank term and 1-2 in the outer product, each with one Constant shape, plus the
    ReduceMean axes, Split sizes and scaled sigmoid's 2: at most 14 Constants and no Unsqueeze
    (the previous form, with per-tap slices and [:, :, None, None], had ~125 Constants and ~40
    Unsqueezes per layer)."""
    pytest.importorskip("onnx")
    import torchvision

    from pedconv.deploy import data_dependent_conv_weights

    model = pedconv.convert(torchvision.models.resnet18(num_classes=10)).eval()
    layers = sum(isinstance(m, pedconv.PEDConv2d) for m in model.modules())
    counts = _export_counts(model, tmp_path / "r18.onnx", torch.randn(1, 3, 64, 64))
    assert counts["Unsqueeze"] == 0, counts
    assert counts["Constant"] <= 14 * layers, counts
    assert counts["Slice"] == counts["Gather"] == counts["Shape"] == 0, counts
    assert not data_dependent_conv_weights(tmp_path / "r18.onnx")


def test_onnx_export_of_a_grouped_rank_two_layer_matches_eager(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    layer = nn.Sequential(pedconv.PEDConv2d(8, 8, 3, stride=2, padding=1, groups=4, rank=2)).eval()
    randomize_generator(layer[0])
    counts = _export_counts(layer, tmp_path / "g.onnx", torch.randn(2, 8, 9, 9))
    assert counts["Unsqueeze"] == 0 and counts["Conv"] == 3, counts  # im2col, and one conv per rank
    sess = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 4):
        x = torch.randn(batch, 8, 9, 9)
        out = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        torch.testing.assert_close(out, layer(x), atol=1e-5, rtol=1e-5)
