"""The ONNX graph helpers: op counts, the constant-conv-weight check, the optional optimiser pass."""

import warnings

import pytest
import torch
import torch.nn as nn

import pedconv
from pedconv.deploy import data_dependent_conv_weights, op_counts, optimize_onnx
from pedconv.testing import randomize_generator


def _net():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 8, 1),
    )
    net = pedconv.convert(net)
    for m in net.modules():
        if isinstance(m, pedconv.PEDConv2d):
            randomize_generator(m)
    return pedconv.fuse_bn(pedconv.strip_infomax(net.eval()))


def test_optimiser_pass_folds_every_constant_and_keeps_the_output(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import onnx

    net, path = _net(), tmp_path / "n.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(2, 3, 12, 12),), str(path), input_names=["x"], output_names=["y"],
                          dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    before, optimized = op_counts(path), optimize_onnx(path)
    after = op_counts(optimized)
    assert before["Constant"] > 0 and "Constant" not in after and sum(after.values()) < sum(before.values())
    assert after["Conv"] == before["Conv"] and data_dependent_conv_weights(optimized) == []
    onnx.save(optimized, str(tmp_path / "o.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "o.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(sess.run(None, {"x": x.numpy()})[0]), net(x),
                                   atol=1e-5, rtol=1e-5)


def test_helpers_refuse_what_is_not_a_model():
    with pytest.raises(TypeError, match=r"expected an onnx\.ModelProto or a path, got int"):
        op_counts(3)  # type: ignore[arg-type]
