"""One segmentation interface for every method (CIP, CDL, MDL).

The embedded runner, the CLI and (later) the streaming workers and the review app all call a
:class:`Segmenter` the same way: a ``(2, H, W)`` float32 field ``[DsRed, pHluorin]`` in, a uint8
``(H, W)`` class mask (0 background, 1 phagophore, 2 autolysosome) out. A segmenter's
:attr:`~Segmenter.fingerprint` changes whenever its output could change (parameters, model
weights, backend), so results can be cached and replays recognised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np  # noqa: F401
from numpy.typing import NDArray

from phagoflow.core.cip import CipParameters, segment_cip
from phagoflow.core.model_dir import ModelCard

__all__ = ["METHODS", "CipSegmenter", "Segmenter", "UNetSegmenter", "make_segmenter"]

#: Method names understood by :func:`make_segmenter`.
METHODS: tuple[str, ...] = ("cip", "cdl")


@runtime_checkable
class Segmenter(Protocol):
    """Field in, class mask out."""

    method: str

    @property
    def fingerprint(self) -> str:
        """Hex digest identifying everything that determines the output."""
        ...

    @property
    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description (parameters, model card summary)."""
        ...

    def segment(self, image: NDArray[Any], pixel_size_um: float) -> NDArray[Any]:
        """Segment one field: float32 ``(2, H, W)`` -> uint8 ``(H, W)`` in {0, 1, 2}."""
        ...


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class CipSegmenter:
    """The conventional image pipeline (:func:`phagoflow.core.cip.segment_cip`)."""

    method = "cip"

    def __init__(self, params: CipParameters | None = None) -> None:
        self.params = params if params is not None else CipParameters()

    @property
    def provenance(self) -> dict[str, Any]:
        return {"method": self.method, "cip_parameters": self.params.model_dump(mode="json")}

    @property
    def fingerprint(self) -> str:
        from phagoflow import __version__

        return _digest({"version": __version__, **self.provenance})

    def segment(self, image: NDArray[Any], pixel_size_um: float) -> NDArray[Any]:
        return segment_cip(image, pixel_size_um, params=self.params).mask


class UNetSegmenter:
    """A U-Net model folder (CDL trained on weak labels, or MDL on curated masks)."""

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        method: str = "cdl",
        backend: str = "onnxruntime",
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        from phagoflow.core.inference import load_predictor

        self.method = method
        self.backend = backend
        self.predictor = load_predictor(
            model_dir, backend=backend, batch_size=batch_size, threads=threads
        )

    @property
    def card(self) -> ModelCard:
        card = self.predictor.card
        if card is None:
            raise ValueError(f"model folder {self.predictor.model_dir} has no model card")
        return card

    @property
    def provenance(self) -> dict[str, Any]:
        card = self.card
        return {
            "method": self.method,
            "backend": self.backend,
            "model_dir": str(self.predictor.model_dir),
            "model_sha256": card.checksums,
            "model_name": card.name,
            "model_version": card.version,
            "model_pixel_size_um": card.pixel_size_um,
            "rescale_tolerance": self.predictor.rescale_tolerance,
            "min_object_area_um2": self.predictor.min_object_area_um2,
        }

    @property
    def fingerprint(self) -> str:
        card = self.card
        return _digest(
            {
                "method": self.method,
                "backend": self.backend,
                "sha": card.checksums,
                "model_pixel_size_um": card.pixel_size_um,
                "rescale_tolerance": self.predictor.rescale_tolerance,
                "min_object_area_um2": self.predictor.min_object_area_um2,
            }
        )

    def segment(self, image: NDArray[Any], pixel_size_um: float) -> NDArray[Any]:
        return self.predictor.predict(image, pixel_size_um)


def make_segmenter(
    method: str,
    *,
    cip_params: CipParameters | None = None,
    model_dir: Path | None = None,
    backend: str = "onnxruntime",
    batch_size: int = 8,
    threads: int | None = None,
) -> Segmenter:
    """Build the segmenter for ``method`` (one of :data:`METHODS`)."""
    if method == "cip":
        return CipSegmenter(cip_params)
    if method == "cdl":
        return UNetSegmenter(
            model_dir, method="cdl", backend=backend, batch_size=batch_size, threads=threads
        )
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
