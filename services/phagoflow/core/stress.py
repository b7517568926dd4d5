"""The stress suite: imaging conditions the CIP (and later the CDL model) must hold across.

Each :class:`Condition` names an imaging condition and how to render a field of it: from the
project simulator (:mod:`phagoflow.core.simulate`, public API only) or from the independent
generator (:mod:`phagoflow.core.altsim`), so that the suite does not share one simulator's
habits. Every condition has two *variants*:

- ``"tuning"`` — the settings of training and validation plates (every choice is made here);
- ``"test"`` — the settings of test plates: the same condition with *shifted* simulator
  settings (PSF width, cell size, brightness, texture, noise; :func:`_shift_simulate`,
  :func:`_shift_altsim`), so a reported figure never comes from settings anything was tuned on.

Plates, seeds and roles are defined in :mod:`phagoflow.core.protocol`; this module only maps
``(condition, variant)`` to image-model parameters and renders one field.

Conditions (``CONDITIONS``; ``generator`` in brackets):

=====================  =========================================================================
``normal``             the simulator's ``normal`` preset, 0.2 µm/px (simulate)
``harder``             the simulator's ``harder`` preset (simulate)
``alt_normal``         the independent generator's defaults, 0.2 µm/px (altsim)
``pixel_0.06``         0.06 µm/px (altsim)
``pixel_0.1``          0.1 µm/px (simulate)
``pixel_0.33``         0.33 µm/px (simulate)
``pixel_0.4``          0.4 µm/px (altsim)
``dense_small``        yeast-like small cells (r 2–3 µm, big vacuole, little cytosol) packed
                       with puncta, 0.1 µm/px (altsim)
``sparse_large``       large flat cells (r 15–25 µm, thin, dim) with few puncta (altsim)
``low_snr``            a third of the normal cytosol, a quarter of the vesicle peaks, more read
                       noise and camera gain (simulate)
``vignetting_uneven``  70 % light loss around an off-centre axis, a 40 % tilt, expression σ 0.8
                       between and 60 % within cells (altsim)
``channel_order``      pHluorin written as channel 1 and DsRed as channel 2 of the export; the
                       field is read back through the Opera reader, roles by name (simulate)
``partial_quenching``  autolysosome pHluorin/DsRed 0.25–0.5, phagophores 0.55–1.0 (altsim)
``bleed_through``      15 % of DsRed in the pHluorin channel, 5 % the other way (altsim)
``elongated_clustered`` half the vesicles 2–3.5× elongated, half in tight clusters (altsim)
=====================  =========================================================================
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from phagoflow.core.altsim import AltSimParameters, render_field
from phagoflow.core.simulate import SimulationParameters, simulate_field

__all__ = [
    "CONDITIONS",
    "VARIANTS",
    "Condition",
    "StressField",
    "Variant",
    "condition",
    "condition_params",
    "render_condition_field",
]

Variant = Literal["tuning", "test"]
#: The two settings of every condition (see the module docstring).
VARIANTS: tuple[Variant, ...] = ("tuning", "test")
ModelParams = SimulationParameters | AltSimParameters


@dataclass(frozen=True)
class StressField:
    """One rendered field of a condition, with its truth.

    Attributes
    ----------
    image : (2, H, W) ndarray of uint16
        ``[DsRed, pHluorin]`` camera counts (for ``channel_order``: as read back through the
        Opera reader, float32).
    truth : (H, W) ndarray of uint8
        0 background, 1 phagophore, 2 autolysosome (true footprints).
    phagophores, autolysosomes : int
        True object counts.
    pixel_size_um : float
        Pixel size, µm.
    """

    image: npt.NDArray[np.generic]
    truth: npt.NDArray[np.uint8]
    phagophores: int
    autolysosomes: int
    pixel_size_um: float


@dataclass(frozen=True)
class Condition:
    """A named imaging condition of the stress suite.

    Attributes
    ----------
    name : str
        Key in :data:`CONDITIONS`.
    generator : {'simulate', 'altsim'}
        Which image model renders it.
    description : str
        One line for tables.
    base : callable
        ``() -> SimulationParameters | AltSimParameters``: the tuning-variant settings.
    channel_ids : tuple of int
        Export channel ids of (DsRed, pHluorin); ``(2, 1)`` writes pHluorin first and the
        field goes through the Opera writer and reader.
    """

    name: str
    generator: Literal["simulate", "altsim"]
    description: str
    base: Callable[[], ModelParams]
    channel_ids: tuple[int, int] = (1, 2)

    @property
    def tag(self) -> int:
        """Stable integer tag of the name (seeds fields apart between conditions)."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


def _sim(**update: object) -> Callable[[], ModelParams]:
    return lambda: SimulationParameters.preset("normal").model_copy(update=update)


def _alt(**update: object) -> Callable[[], ModelParams]:
    return lambda: AltSimParameters.model_validate(update)


_LIST = (
    Condition("normal", "simulate", "simulator 'normal' preset", _sim()),
    Condition(
        "harder",
        "simulate",
        "simulator 'harder' preset",
        lambda: SimulationParameters.preset("harder"),
    ),
    Condition("alt_normal", "altsim", "independent generator, defaults", _alt()),
    Condition("pixel_0.06", "altsim", "0.06 µm/px", _alt(pixel_size_um=0.06)),
    Condition("pixel_0.1", "simulate", "0.1 µm/px", _sim(pixel_size_um=0.1)),
    Condition("pixel_0.33", "simulate", "0.33 µm/px", _sim(pixel_size_um=0.33)),
    Condition("pixel_0.4", "altsim", "0.4 µm/px", _alt(pixel_size_um=0.4)),
    Condition(
        "dense_small",
        "altsim",
        "yeast-like small cells packed with puncta, 0.1 µm/px",
        _alt(
            pixel_size_um=0.1,
            cell_radius_um=(2.0, 3.0),
            cell_packing=0.9,
            colony_fraction=(0.6, 0.9),
            nucleus_fraction=(0.45, 0.6),
            nucleus_level=0.1,
            phagophore_density=(0.2, 0.35),
            autolysosome_density=(0.1, 0.2),
            autolysosome_diameter_um=(0.45, 1.0),
            cell_thickness_um=2.0,
            autolysosome_enrichment=20.0,
            cluster_fraction=0.3,
            cluster_sigma_um=0.35,
        ),
    ),
    Condition(
        "sparse_large",
        "altsim",
        "large flat cells, few puncta",
        _alt(
            cell_radius_um=(15.0, 25.0),
            cell_packing=0.9,
            colony_fraction=(0.4, 0.8),
            colony_scale_um=60.0,
            nucleus_fraction=(0.2, 0.3),
            cytosol_counts=150.0,
            cell_thickness_um=1.2,
            phagophore_density=(0.003, 0.008),
            autolysosome_density=(0.003, 0.008),
        ),
    ),
    Condition(
        "low_snr",
        "simulate",
        "low signal: 1/3 cytosol, 1/4 vesicle peaks, read noise 10",
        _sim(
            cytoplasm_dsred=130.0,
            phagophore_peak=160.0,
            autolysosome_peak=170.0,
            read_noise=10.0,
            gain=4.0,
        ),
    ),
    Condition(
        "vignetting_uneven",
        "altsim",
        "strong off-centre vignetting and tilt, uneven expression",
        _alt(
            vignetting=0.7,
            optical_centre=(0.2, -0.25),
            illumination_tilt=0.4,
            expression_sigma=0.8,
            expression_gradient=0.6,
        ),
    ),
    Condition(
        "channel_order",
        "simulate",
        "pHluorin is export channel 1, DsRed channel 2 (read by name)",
        _sim(),
        channel_ids=(2, 1),
    ),
    Condition(
        "partial_quenching",
        "altsim",
        "autolysosome green/red 0.25-0.5, phagophore 0.55-1.0",
        _alt(autolysosome_green=(0.25, 0.5), phagophore_green=(0.55, 1.0)),
    ),
    Condition(
        "bleed_through",
        "altsim",
        "15 % DsRed in pHluorin, 5 % pHluorin in DsRed",
        _alt(bleed_red_to_green=0.15, bleed_green_to_red=0.05),
    ),
    Condition(
        "elongated_clustered",
        "altsim",
        "half the vesicles elongated 2-3.5x, half in tight clusters",
        _alt(
            elongated_fraction=0.5,
            elongated_aspect=(2.0, 3.5),
            cluster_fraction=0.5,
            cluster_sigma_um=0.4,
        ),
    ),
)

#: Every condition of the suite by name, in table order.
CONDITIONS: dict[str, Condition] = {c.name: c for c in _LIST}


def condition(name: str) -> Condition:
    """The condition called ``name``.

    Raises
    ------
    ValueError
        If there is no such condition (the message lists them).
    """
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition {name!r}; choose one of {list(CONDITIONS)}") from None


def _shift_simulate(p: SimulationParameters) -> SimulationParameters:
    """Test-plate settings of a simulator condition: wider PSF, bigger cells, other levels."""
    return p.model_copy(
        update={
            "psf_sigma_um": p.psf_sigma_um * 1.12,
            "cell_diameter_um": p.cell_diameter_um * 1.12,
            "cytoplasm_dsred": p.cytoplasm_dsred * 1.15,
            "phagophore_peak": p.phagophore_peak * 0.88,
            "autolysosome_peak": p.autolysosome_peak * 1.08,
            "texture_ridge": p.texture_ridge + 0.05,
            "texture_low": p.texture_low + 0.03,
            "read_noise": p.read_noise + 1.0,
            "vignetting": min(p.vignetting + 0.08, 0.9),
            "phagophore_diameter_um": (0.28, 0.62),
        }
    )


def _shift_altsim(p: AltSimParameters) -> AltSimParameters:
    """Test-plate settings of an independent-generator condition (same idea as above)."""
    lo, hi = p.cell_radius_um
    return p.model_copy(
        update={
            "psf_sigma_um": p.psf_sigma_um * 1.12,
            "psf_halo_fraction": min(p.psf_halo_fraction + 0.05, 0.5),
            "cell_radius_um": (lo * 1.1, hi * 1.1),
            "cytosol_counts": p.cytosol_counts * 1.15,
            "phagophore_enrichment": p.phagophore_enrichment * 0.9,
            "autolysosome_enrichment": p.autolysosome_enrichment * 1.1,
            "texture": min(p.texture + 0.05, 0.9),
            "read_noise": p.read_noise + 1.0,
            "optical_centre": (-p.optical_centre[0], p.optical_centre[1] * 0.5),
        }
    )


def condition_params(name: str, variant: Variant = "tuning") -> ModelParams:
    """Image-model parameters of a condition's variant.

    Parameters
    ----------
    name : str
        Condition name (:data:`CONDITIONS`).
    variant : {'tuning', 'test'}
        ``"tuning"`` for training and validation plates, ``"test"`` for test plates (shifted
        settings, see the module docstring).

    Returns
    -------
    SimulationParameters or AltSimParameters
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    base = condition(name).base()
    if variant == "tuning":
        return base
    if isinstance(base, SimulationParameters):
        return _shift_simulate(base)
    return _shift_altsim(base)


def render_condition_field(
    name: str,
    variant: Variant,
    *,
    rng: np.random.Generator | int,
    well_level: float = 1.0,
) -> StressField:
    """Render one field of a condition (in memory; no export round trip).

    The ``channel_order`` condition's export round trip is done per plate by
    :func:`phagoflow.core.protocol.render_plate`; here its field is the plain
    ``[DsRed, pHluorin]`` rendering.

    Parameters
    ----------
    name : str
        Condition name.
    variant : {'tuning', 'test'}
        Settings variant.
    rng : numpy.random.Generator or int
        Randomness (an int gives a reproducible field).
    well_level : float, default 1.0
        Autophagy level of the well.

    Returns
    -------
    StressField
    """
    params = condition_params(name, variant)
    if isinstance(params, SimulationParameters):
        sim = simulate_field(params, rng=rng, well_level=well_level)
        image, truth, n_p, n_a = sim.image, sim.truth, sim.phagophores, sim.autolysosomes
    else:
        alt = render_field(params, rng=rng, well_level=well_level)
        image, truth, n_p, n_a = alt.image, alt.truth, alt.phagophores, alt.autolysosomes
    return StressField(image, truth, n_p, n_a, float(params.pixel_size_um))
