"""The paper's U-Net for Rosella fields (CDL trained on weak CIP labels, MDL on curated masks).

Architecture (Garcia Santa Cruz et al., Sci Rep 2022, doi:10.1038/s41598-022-15623-7): an
encoder/decoder with ``depth`` = 3 max-pools and 3 skip connections. Every level is two
``3 × 3 conv → BatchNorm → ReLU`` blocks ("same" zero padding); the width doubles at each
pooling (``base_channels``, 2×, 4×, 8× in the bottleneck); the decoder upsamples with a 2 × 2
transposed convolution, concatenates the skip and applies two blocks again; a final 1 × 1
convolution gives one logit per class. Inputs are ``(N, 2, H, W)`` float32 normalised fields
ordered ``[DsRed, pHluorin]`` (see :mod:`phagoflow.core.normalisation`), outputs ``(N, 3, H, W)``
logits for 0 background, 1 phagophore, 2 autolysosome. ``H`` and ``W`` must be multiples of
``2 ** depth`` (8), which every inference tile (256 px) and training patch satisfies.

Differences from MATLAB's ``unetLayers`` used in the paper: batch normalisation in every block
(asked for by the project, it makes training at lr 2e-3 stable) and no dropout in the bridge.

Width and speed, measured on a shared 2-core CPU VM (ONNX Runtime 1.32, ``intra_op`` 2 threads,
whole :class:`~phagoflow.core.inference.Predictor` path for one 680 × 512 field = 12 tiles of
256 × 256, median of 7; training = one SGD step on 4 patches of 256 × 256, torch 2.13, 2 threads):

==============  ==========  ====================  ===============
base_channels   parameters  inference s / field   training patches/s
==============  ==========  ====================  ===============
8 (default)        121 123  0.12                  ~17
16                 482 627  0.25                  ~8
32               1 926 787  0.79                  ~2.7
==============  ==========  ====================  ===============

``base_channels`` 8 is the default: it meets the product target of ≤ 0.25 s per field on 2 cores
with margin (16 sits on the limit; torch CPU inference is ~2× slower than ONNX Runtime).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

__all__ = ["DEFAULT_BASE_CHANNELS", "UNet", "UNetConfig"]

#: Default width of the first encoder level (chosen by CPU inference speed, see module doc).
DEFAULT_BASE_CHANNELS = 8


class UNetConfig(BaseModel):
    """Architecture of :class:`UNet` (recorded in every model card).

    Attributes
    ----------
    in_channels : int
        Input channels; 2 for ``[DsRed, pHluorin]``.
    n_classes : int
        Output classes (logits); 3 for background, phagophore, autolysosome.
    base_channels : int
        Feature maps of the first level; level ``k`` has ``base_channels * 2**k``.
    depth : int
        Number of max-pools (= skip connections); 3 in the paper. Inputs must have ``H`` and
        ``W`` divisible by ``2 ** depth``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_channels: int = Field(default=2, ge=1)
    n_classes: int = Field(default=3, ge=2)
    base_channels: int = Field(default=DEFAULT_BASE_CHANNELS, ge=1, le=256)
    depth: int = Field(default=3, ge=1, le=6)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (``2 ** depth``), in pixels."""
        return 1 << self.depth


class _DoubleConv(nn.Sequential):
    """``(3 × 3 conv → BatchNorm → ReLU) × 2``, spatial size preserved."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with ``config.depth`` max-pools and skip connections.

    Parameters
    ----------
    config : UNetConfig, optional
        Architecture; defaults to ``UNetConfig()`` (2 in, 3 out, depth 3).

    Notes
    -----
    ``forward(x)`` maps ``(N, in_channels, H, W)`` float32 to ``(N, n_classes, H, W)`` logits;
    ``H`` and ``W`` (pixels) must be multiples of ``2 ** depth``. Convolution weights use He
    (Kaiming normal) initialisation, as MATLAB's ``unetLayers``; draw them under
    ``torch.manual_seed`` for reproducibility.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else UNetConfig()
        c = self.config.base_channels
        widths = [c * 2**k for k in range(self.config.depth + 1)]
        self.encoders = nn.ModuleList()
        prev = self.config.in_channels
        for w in widths[:-1]:
            self.encoders.append(_DoubleConv(prev, w))
            prev = w
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bottleneck = _DoubleConv(widths[-2], widths[-1])
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for k in range(self.config.depth - 1, -1, -1):
            self.upsamplers.append(nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2))
            self.decoders.append(_DoubleConv(2 * widths[k], widths[k]))
        self.head = nn.Conv2d(widths[0], self.config.n_classes, kernel_size=1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_classes, H, W)`` for inputs ``(N, in_channels, H, W)``."""
        if not torch.onnx.is_in_onnx_export():
            _validate_input(x, self.config)
        skips: list[torch.Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.upsamplers, self.decoders, reversed(skips), strict=True):
            x = dec(torch.cat([skip, up(x)], dim=1))
        out: torch.Tensor = self.head(x)
        return out

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _validate_input(x: torch.Tensor, config: UNetConfig) -> None:
    if x.ndim != 4 or x.shape[1] != config.in_channels:
        raise ValueError(
            f"UNet expects input (N, {config.in_channels}, H, W), got {tuple(x.shape)}"
        )
    m = config.size_multiple
    if x.shape[2] % m or x.shape[3] % m:
        raise ValueError(
            f"UNet input H and W must be multiples of {m} (2**depth), got {tuple(x.shape)}"
        )
