"""Samplers, on-device augmentation and the loaders shared by train and eval."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pedconv.cli
from pedconv.training.data import (
    BatchPreprocessor,
    DataSpec,
    GlobalBatchSampler,
    ShardBatchSampler,
    TensorImageDataset,
    collate_batch,
    default_workers,
    make_loader,
)


def test_global_batch_sampler_layouts_agree_and_resume() -> None:
    ddp = [list(GlobalBatchSampler(100, 8, world_size=2, rank=r, seed=5)) for r in (0, 1)]
    accum = list(GlobalBatchSampler(100, 8, accum=2, seed=5))
    assert accum[0::2] == ddp[0] and accum[1::2] == ddp[1]  # rank r = r-th micro-batch of each step
    s = GlobalBatchSampler(100, 8, seed=5)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_step=4)
    assert list(s) == full[4:] and len(s) == len(full) - 4
    s.set_epoch(4)
    assert list(s) != full
    shards = [i for r in range(3) for b in ShardBatchSampler(11, 4, 3, r) for i in b]
    assert shards == list(range(11))


def test_crop_flip_is_a_padded_window_per_sample() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    pre = BatchPreprocessor((0.5,), (0.25,), augment=True, pad=2)
    y = pre(x, seed=11)
    assert torch.equal(y, pre(x, seed=11)) and not torch.equal(y, pre(x, seed=12))
    norm = (x.float() / 255 - 0.5) / 0.25
    padded = torch.nn.functional.pad(norm, (2, 2, 2, 2), value=(0 - 0.5) / 0.25)
    for b in range(6):
        windows = [padded[b, :, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.allclose(y[b], w) for w in windows)


def test_train_and_eval_share_the_loader_defaults() -> None:
    """One default for --workers: 0 for in-memory data, min(8, CPUs) for ImageFolder (eval used to take 4)."""
    assert default_workers(in_memory=True) == 0
    assert default_workers(in_memory=False) == min(8, os.cpu_count() or 1)
    ds = TensorImageDataset(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.arange(6))
    spec = DataSpec("toy", ds, ds, 6, 1, (4, 4), (0.5,), (0.5,), in_memory=True, augment_on_device=True,
                    collate_fn=collate_batch)
    loader = make_loader(spec, spec.val, ShardBatchSampler(6, 4), torch.device("cpu"))
    assert loader.num_workers == 0 and [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5]]
    folder_like = DataSpec("toy", ds, ds, 6, 1, (4, 4), (0.5,), (0.5,), in_memory=False, augment_on_device=False,
                           collate_fn=collate_batch)
    assert make_loader(folder_like, ds, ShardBatchSampler(6, 4), torch.device("cpu")).num_workers == \
        default_workers(in_memory=False)
    assert make_loader(folder_like, ds, ShardBatchSampler(6, 4), torch.device("cpu"), workers=0).num_workers == 0


def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Read in a DataLoader worker process, a corrupt file still ends the run with one line that names it."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((12, 12, 3), 40 * i, dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    bad = root / "train" / "dog" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    rc = pedconv.cli.main(["train", "--model", "cifar_resnet20", "--model-kwargs", "width=4", "--data", "imagefolder",
                           "--data-dir", str(root), "--img-size", "16", "--batch-size", "4", "--epochs", "1",
                           "--workers", "1", "--threads", "1", "--quiet", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.strip()] == \
        [f"pedconv train: error: cannot read image {bad} (UnidentifiedImageError)"], err
    assert rc == 1
