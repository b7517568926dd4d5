"""Fixtures of the registry tests: tiny model folders and a bucket on the real moto S3 server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from phagoflow.services.objectstore import ObjectStore
from phagoflow.stack import MotoS3Server


def _tiny_model(path: Path, seed: int, favour: int | None, trained: tuple[str, ...]) -> Path:
    import torch

    from phagoflow.core.model_dir import save_model_dir
    from phagoflow.core.normalisation import NormalisationConfig
    from phagoflow.core.unet import UNet, UNetConfig

    torch.manual_seed(seed)
    config = UNetConfig(base_channels=2)
    model = UNet(config)
    if favour is not None:  # push the head towards one class so two models predict differently
        bias = model.head.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            bias[favour] = 3.0
    # the card's split names the fields it "trained" on (the gate must never score on them)
    extra = {"split": {"train": list(trained), "val": []}} if trained else None
    save_model_dir(path, model, config, NormalisationConfig(), extra, name=f"tiny-{seed}")
    return path


@pytest.fixture(scope="session")
def make_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_model(seed, favour=None, trained=())`` → a tiny U-Net folder (cached per arguments).

    ``trained`` lists ``PLATE/rRRcCCfFFpPP`` its card says it trained on.
    """
    cache: dict[tuple[int, int | None, tuple[str, ...]], Path] = {}

    def make(seed: int, favour: int | None = None, trained: Sequence[str] = ()) -> Path:
        key = (seed, favour, tuple(trained))
        if key not in cache:
            path = tmp_path_factory.mktemp("models") / f"m{seed}-{favour}"
            cache[key] = _tiny_model(path, seed, favour, key[2])
        return cache[key]

    return make


@pytest.fixture
def store(s3_server: MotoS3Server, unique: str) -> ObjectStore:
    """A fresh bucket on the session's moto S3 server."""
    s = ObjectStore(
        s3_server.endpoint,
        s3_server.access_key,
        s3_server.secret_key,
        bucket=f"reg-{unique}",
        retries=2,
        backoff_s=0.1,
    )
    s.ensure_bucket()
    return s
