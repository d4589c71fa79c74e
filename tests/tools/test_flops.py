"""The FLOP/parameter counter: exact on static models, the paper's convention on dynamic
layers (each layer reports its own multiply-adds), and every published row within tolerance."""

from collections.abc import Sequence
from typing import Callable

import pytest
import torch
import torch.nn as nn

import pedconv
import pedconv.baselines
from pedconv.models import PAPER_NUMBERS
from pedconv.tools.flops import CountsMacs, compare_to_paper, count_parameters, format_count, parameter_summary

# Rows whose gap is documented in the README ("Profile"): not a tolerance failure.
_KNOWN_GAPS = {
    "pedconv_efficientnet_b0": "params +3.5%",
    "condconv_mobilenet_v2": "classifier not dynamic",
    "dyconv_resnet18": "published count unexplained",
}


# The detection / segmentation rows (at 300 / 512 px): slow, and their FLOPs / PSPNet gaps are
# documented in the README; tests/models/test_{detection,segmentation}_models.py pin them.
_TASK_ROWS = {n for n, row in PAPER_NUMBERS.items() if "input_size" in row}


# The other dynamic convolutions of Table 1 (issue 13): their parameters within 3%.
_SYSTEMS = ("dcd_", "weightnet_", "kw_", "sk")


@pytest.mark.parametrize("name", [n for n in PAPER_NUMBERS if n not in _KNOWN_GAPS and n not in _TASK_ROWS])
def test_paper_rows_within_tolerance(name):
    """Issue acceptance: params within 2% (3% for the other systems) and FLOPs within 3% of the
    published numbers."""
    row = compare_to_paper([name])[0]
    assert abs(row["params_diff_pct"]) <= (3.0 if name.startswith(_SYSTEMS) else 2.0), row
    if row["macs_diff_pct"] is not None:
        assert abs(row["macs_diff_pct"]) <= 3.0, row


def test_profile_counts_static_resnet18_exactly_and_adds_dynamic_cost():
    static = pedconv.profile_model(pedconv.create_model("resnet18"))
    assert static.params == 11_689_512 and static.dynamic_macs == 0
    assert abs(static.macs - 1.8186e9) / 1.8186e9 < 0.01
    ped = pedconv.profile_model(pedconv.create_model("pedconv_resnet18"))
    assert ped.params_train > ped.params > static.params
    layers = [m for m in pedconv.create_model("pedconv_resnet18").modules() if isinstance(m, pedconv.PEDConv2d)]
    application = sum(2 * layer.out_channels * layer.in_channels * 9 for layer in layers)  # Sec. 3, rank 1
    generators = sum(
        layer.in_channels * layer.hidden + layer.hidden * (layer.out_channels + layer.in_channels + 9)
        for layer in layers
    )
    assert ped.dynamic_macs == application + generators
    assert ped.macs == static.macs + ped.dynamic_macs  # the convs themselves count as static ones
    conv_rows = [r for r in ped.layers if r["type"] == "PEDConv2d"]
    assert len(conv_rows) == len(layers) and all(r["macs"] > 0 for r in conv_rows)
    # The rank multiplies the application term only (Table 5b's FLOPs column).
    rank4 = pedconv.profile_model(pedconv.create_model("pedconv_resnet18_rank4"))
    heads4 = sum(layer.hidden * 3 * (layer.out_channels + layer.in_channels + 9) for layer in layers)
    assert rank4.dynamic_macs == ped.dynamic_macs + 3 * application + heads4


class _ScaledConv(nn.Module):
    """A toy dynamic layer: a conv scaled per sample by a gate it computes from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Linear(4, 1)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * torch.sigmoid(self.gate(x.mean((2, 3))))[:, :, None, None]

    def macs(self, output_shape: Sequence[int], measured: Callable[[nn.Module], int]) -> int:
        return measured(self.gate) + self.static_macs(output_shape) + 1000  # 1000: what the counter cannot see

    def static_macs(self, output_shape: Sequence[int]) -> int:
        return output_shape[0] * output_shape[2] * output_shape[3] * self.conv.weight.numel()


def test_a_layer_that_reports_its_own_macs_is_recounted_without_the_counter_knowing_its_insides():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _ScaledConv())
    assert isinstance(model[1], CountsMacs) and not isinstance(model[0], CountsMacs)
    prof = pedconv.profile_model(model, (2, 3, 8, 8))
    conv1 = 2 * 8 * 8 * 3 * 4
    gate, conv2 = 2 * 4, 2 * 8 * 8 * 6 * 4 * 9
    assert prof.macs == conv1 + gate + conv2 + 1000
    assert prof.dynamic_macs == gate + 1000
    rows = {r["name"]: r for r in prof.layers}
    assert set(rows) == {"0", "1"}  # the dynamic layer's insides are summed into its row
    assert rows["1"]["macs"] == gate + conv2 + 1000 and rows["1"]["type"] == "_ScaledConv"


@pytest.mark.parametrize(
    "layer",
    [
        lambda: pedconv.PEDConv2d(8, 16, 3, padding=1),
        lambda: pedconv.SpatialPEDConv2d(8, 8, 3, padding=1),
        lambda: pedconv.baselines.ODConv2d(8, 16, 3, padding=1, num_kernels=4),
        lambda: pedconv.baselines.DyConv2d(8, 16, 3, padding=1),
        lambda: pedconv.baselines.CondConv2d(8, 16, 3, padding=1),
        lambda: pedconv.baselines.DCDConv2d(8, 16, 3, padding=1),
        lambda: pedconv.baselines.WeightNetConv2d(8, 16, 3, padding=1),
    ],
    ids=["pedconv", "spatial", "odconv", "dyconv", "condconv", "dcd", "weightnet"],
)
def test_every_dynamic_layer_reports_its_cost_above_a_static_conv(layer):
    m = layer().eval()
    assert isinstance(m, CountsMacs)
    prof = pedconv.profile_model(m, (2, 8, 6, 6))
    static = m.static_macs((2, m.out_channels, 6, 6))
    assert static == 2 * 36 * m.out_channels * (8 // (8 if isinstance(m, pedconv.SpatialPEDConv2d) else 1)) * 9
    assert prof.macs > static and prof.dynamic_macs == prof.macs - static


def test_one_parameter_count_for_every_command() -> None:
    """train's start line, eval and compare state what profile_model counts: deployable, decoders apart."""
    dynamic = pedconv.create_model("pedconv_cifar_resnet20", num_classes=10, in_chans=1, width=8)
    prof = pedconv.profile_model(dynamic, (1, 1, 28, 28))
    assert count_parameters(dynamic) == (prof.params, prof.params_train - prof.params)
    assert parameter_summary(*count_parameters(dynamic)) == (
        f"{format_count(prof.params)} parameters (+{format_count(prof.params_train - prof.params)} info-max decoder, "
        "training only)")
    static = pedconv.create_model("cifar_resnet20", num_classes=10, in_chans=1, width=8)
    assert count_parameters(static)[1] == 0 and parameter_summary(*count_parameters(static)).endswith("k parameters")
    assert count_parameters(pedconv.strip_infomax(dynamic)) == (prof.params, 0)
