"""The one geometry helper every layer and strategy uses, against nn.Conv2d itself."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from pedconv.execution._torch_specific import is_exporting
from pedconv.execution.geometry import (
    ConvGeometry,
    add_bias,
    batch_as_groups_conv,
    conv_arguments,
    conv_output_size,
    tap_windows,
)


@given(
    size=st.integers(3, 12),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
)
def test_output_size_is_nn_conv2ds(size, kernel, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    x = torch.zeros(1, 1, size, size + 1)
    if size + 2 * padding < dilation * (kernel - 1) + 1:
        return  # nn.Conv2d refuses; nothing to compare
    want = tuple(conv(x).shape[-2:])
    assert conv_output_size((size, size + 1), (kernel,) * 2, (stride,) * 2, (padding,) * 2, (dilation,) * 2) == want
    assert ConvGeometry.make(stride, padding, dilation).output_size((size, size + 1), (kernel, kernel)) == want


@pytest.mark.parametrize(
    "kernel,dilation,stride", [((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (2, 3)), ((1, 1), (1, 1), (2, 2))]
)
def test_the_sum_over_tap_windows_is_the_convolution(kernel, dilation, stride):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    w = torch.randn(3, 1, *kernel, dtype=torch.float64)  # depthwise
    want = F.conv2d(x, w, stride=stride, dilation=dilation, groups=3)
    out = torch.zeros_like(want)
    for t, rows, cols in tap_windows(kernel, dilation, stride, want.shape[-2:]):
        out += x[..., rows, cols] * w.view(3, -1)[:, t].view(1, 3, 1, 1)
    torch.testing.assert_close(out, want)


def test_batch_as_groups_convolves_each_sample_with_its_own_weight():
    torch.manual_seed(0)
    geometry = ConvGeometry.make(stride=2, padding=1, dilation=1, groups=2)
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    w = torch.randn(3, 6, 2, 3, 3, dtype=torch.float64)
    want = torch.cat([F.conv2d(x[b : b + 1], w[b], None, 2, 1, 1, 2) for b in range(3)])
    torch.testing.assert_close(batch_as_groups_conv(x, w, geometry), want)


def test_add_bias_broadcasts_over_channels_for_any_rank():
    b = torch.arange(3.0)
    assert torch.equal(add_bias(torch.zeros(2, 3, 4), b)[1, :, 0], b)
    assert torch.equal(add_bias(torch.zeros(2, 3, 4, 5, 6), b)[0, :, 1, 2, 3], b)
    y = torch.ones(2, 3)
    assert add_bias(y, None) is y


def test_conv_arguments_rebuild_the_conv_and_refuse_what_a_layer_cannot_take():
    conv = nn.Conv2d(4, 8, (3, 1), stride=2, padding=(1, 0), dilation=1, groups=2, bias=False, padding_mode="reflect")
    rebuilt = nn.Conv2d(**conv_arguments(conv, "X"))
    assert rebuilt.__repr__() == conv.__repr__()
    with pytest.raises(ValueError, match=r"X\.from_conv supports integer zero padding only"):
        conv_arguments(conv, "X", zero_padding_only=True)
    with pytest.raises(TypeError, match=r"X\.from_conv expects an nn\.Conv2d"):
        conv_arguments(nn.Linear(2, 2), "X")


def test_export_detection_sees_tracing():
    seen = []

    def f(x):
        seen.append(is_exporting())
        return x * 2

    assert not is_exporting()
    torch.jit.trace(f, torch.ones(2), check_trace=False)
    assert seen == [True]
