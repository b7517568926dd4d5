"""Tests for phagoflow.core.unet."""

from __future__ import annotations

import pydantic
import pytest
import torch

from phagoflow.core.unet import DEFAULT_BASE_CHANNELS, UNet, UNetConfig


def _net(**kw: int) -> UNet:
    torch.manual_seed(0)
    return UNet(UNetConfig(**kw)).eval()


@pytest.mark.parametrize(("h", "w"), [(8, 8), (40, 72), (24, 120), (256, 256)])
def test_output_shape_matches_input(h: int, w: int) -> None:
    net = _net(base_channels=4)
    with torch.no_grad():
        out = net(torch.randn(2, 2, h, w))
    assert out.shape == (2, 3, h, w)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_defaults_follow_the_paper() -> None:
    cfg = UNetConfig()
    assert (cfg.in_channels, cfg.n_classes, cfg.depth) == (2, 3, 3)
    assert cfg.base_channels == DEFAULT_BASE_CHANNELS
    assert cfg.size_multiple == 8
    net = UNet()
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(net.encoders) == 3 and len(net.decoders) == 3 and len(pools) == 1  # reused
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 * (3 + 1 + 3)  # two conv-BN-ReLU per level


def test_parameter_count_grows_with_width() -> None:
    counts = [UNet(UNetConfig(base_channels=c)).n_parameters() for c in (4, 8, 16)]
    assert counts[0] < counts[1] < counts[2]
    # conv weights dominate and scale with width squared
    assert 3.5 < counts[2] / counts[1] < 4.5


def test_depth_changes_size_multiple() -> None:
    net = _net(base_channels=4, depth=2)
    with torch.no_grad():
        assert net(torch.randn(1, 2, 12, 20)).shape == (1, 3, 12, 20)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.randn(1, 2, 10, 20))


@pytest.mark.parametrize("shape", [(1, 2, 30, 32), (1, 2, 32, 36), (1, 3, 32, 32), (2, 32, 32)])
def test_rejects_bad_input(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)|multiples of 8"):
        _net(base_channels=4)(torch.randn(*shape))


def test_gradients_reach_first_layer() -> None:
    net = UNet(UNetConfig(base_channels=4)).train()
    net(torch.randn(2, 2, 16, 16)).sum().backward()
    first = next(net.encoders[0].parameters()).grad
    assert first is not None and float(first.abs().sum()) > 0


def test_config_is_frozen_and_strict() -> None:
    cfg = UNetConfig()
    with pytest.raises(pydantic.ValidationError):
        cfg.base_channels = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        UNetConfig(base_chanels=8)  # type: ignore[call-arg]
