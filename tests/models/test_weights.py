"""Released weights with their metadata: the enum, create_model(weights=), the cache folder, errors."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_authors import _authors_model  # the authors' layout, restated (pytest puts this folder on sys.path)

import pedconv
from pedconv.models import PAPER_NUMBERS, PEDConvResNet18_Weights
from pedconv.tools.flops import profile_model

W = PEDConvResNet18_Weights.AUTHORS_IMAGENET


def test_the_metadata_is_the_papers_table_1_row_the_release_and_the_profile():
    row = PAPER_NUMBERS["pedconv_resnet18"]
    assert (W.meta["paper_top1"], W.meta["params"], W.meta["macs"]) == (row["top1"], row["params"], row["macs"])
    assert (row["top1"], row["params"], row["macs"], row["source"]) == (74.2, 11.9e6, 1.83e9, "Table 1b")
    assert W.meta["top1"] == 74.1  # the authors' README for their released file
    assert W.model == "pedconv_resnet18" and W.num_classes == 1000 and W.layout == "authors"
    assert W.url.startswith("https://drive.google.com/") and "0.512" in W.meta["recipe"]
    assert PEDConvResNet18_Weights.DEFAULT is W
    # the profile of the model the weights load into agrees with the published size
    prof = profile_model(pedconv.create_model("pedconv_resnet18"), (1, 3, 224, 224))
    assert prof.params == pytest.approx(W.meta["params"], rel=0.02)
    assert prof.macs == pytest.approx(W.meta["macs"], rel=0.03)


def _release(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    ref = _authors_model("resnet18", num_classes=1000)
    path = tmp_path / W.filename
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 250}, path)
    return path, ref


def test_create_model_loads_the_weights_from_a_path_or_the_cache_folder(tmp_path, monkeypatch):
    path, ref = _release(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        by_path = pedconv.create_model("pedconv_resnet18", weights=path).eval()
        torch.testing.assert_close(by_path(x), expected, rtol=1e-4, atol=1e-4)
        monkeypatch.setenv("PEDCONV_WEIGHTS", str(tmp_path))
        for weights in (W, "DEFAULT", "AUTHORS_IMAGENET", "PEDConvResNet18_Weights.AUTHORS_IMAGENET"):
            cached = pedconv.create_model("pedconv_resnet18", weights=weights).eval()
            torch.testing.assert_close(cached(x), expected, rtol=1e-4, atol=1e-4)
    tuned = pedconv.create_model("pedconv_resnet18", weights=W, num_classes=10)  # a fresh head, as timm does
    assert tuned.fc.out_features == 10 and torch.equal(tuned.conv1.weight, by_path.conv1.weight)


def test_offline_the_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PEDCONV_WEIGHTS", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as e:
        pedconv.create_model("pedconv_resnet18", weights=W)
    message = str(e.value)
    assert W.url in message and str(tmp_path / "cache" / W.filename) in message and "PEDCONV_WEIGHTS" in message


def test_bad_weights_requests_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no released weights for pedconv_resnet50 \(released: pedconv_resnet18"):
        pedconv.create_model("pedconv_resnet50", weights="DEFAULT")
    with pytest.raises(ValueError, match="neither a file nor one of PEDConvResNet18_Weights's AUTHORS_IMAGENET"):
        pedconv.create_model("pedconv_resnet18", weights="IMAGENET_V2")
    with pytest.raises(ValueError, match="weights for pedconv_resnet18 do not fit resnet18"):
        pedconv.create_model("resnet18", weights=W)
    with pytest.raises(ValueError, match="init='authors' does not apply with weights="):
        pedconv.create_model("pedconv_resnet18", weights=W, init="authors")
    path, _ = _release(tmp_path)
    with pytest.raises(ValueError, match=r"builder options \['rank'\] do not apply"):
        pedconv.create_model("pedconv_resnet18", weights=path, rank=2)


def test_a_recorded_hash_refuses_another_file(tmp_path):
    path, _ = _release(tmp_path)
    good = replace(W.value, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert good.load(path).fc.out_features == 1000
    bad = replace(W.value, sha256="0" * 64)
    with pytest.raises(ValueError, match=f"weights file {path}: SHA-256 .* expected 000000000000"):
        bad.load(path)
