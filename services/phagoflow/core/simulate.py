"""Synthetic Rosella plates: realistic Opera fields with exact ground truth.

Image model
-----------
Every field is rendered in five steps; all physical sizes are configured in µm and converted
to pixels with :attr:`SimulationParameters.pixel_size_um`.

1. **Colonies and cells.** A smooth random field (length scale
   :attr:`~SimulationParameters.colony_scale_um`, plus a finer component that makes outlines
   irregular) is thresholded so that a fraction drawn from
   :attr:`~SimulationParameters.colony_coverage` of the field is covered by iPS-cell colonies;
   the rest is empty glass. Cell centres lie on a jittered hexagonal grid with spacing
   :attr:`~SimulationParameters.cell_diameter_um`; cells are the Voronoi regions of those centres
   inside the colonies (pixels farther than 0.7 spacing from any centre are background, which
   rounds the colony edge into cell bulges); the lookup is warped by smooth noise so outlines
   are not straight polygon edges. Each cell has an elliptical, slightly irregular
   nucleus (diameter a fraction :attr:`~SimulationParameters.nucleus_fraction` of the spacing)
   and a one-pixel dim membrane line towards its neighbours.
2. **Cytosol.** Rosella is cytosolic, so the cytoplasm is bright in both channels, the nucleus
   dark (:attr:`~SimulationParameters.nucleus_level`). Each cell has its own expression level
   (log-normal, :attr:`~SimulationParameters.expression_sigma`), which also scales the brightness
   of its vesicles. The cytoplasm is textured: a low-frequency mottle and a network of thin
   ridges (zero crossings of band-pass noise) that after blurring can look like faint puncta.
3. **Vesicles.** Each cell draws phagophores and autolysosomes from Poisson laws whose means are
   per-cell rates (ranges in the parameters) × its area relative to a full cell × ``well_level``.
   Centres lie in the cell's cytoplasm at least ~0.8 radius away from the nucleus, the membrane
   and the colony edge. A fraction :attr:`~SimulationParameters.cluster_fraction` is attached to
   an already placed object so that footprints touch (centre distance 0.85–1.05 × the sum of
   radii). Objects are projected spheres (anti-aliased, 4 × 4 super-sampling). Brightness is
   given as the *blurred peak above the local cytosol* in the DsRed channel (counts, at cell
   expression 1); phagophores carry pHluorin at ratio
   :attr:`~SimulationParameters.phagophore_ratio`, autolysosomes at
   :attr:`~SimulationParameters.autolysosome_ratio` (green quenched) and in addition displace
   cytosolic pHluorin (:attr:`~SimulationParameters.autolysosome_green_exclusion`), so they sit
   in small green holes (their background-subtracted pHluorin/DsRed ratio is ≈ 0 or slightly
   negative; phagophores measure ≈ 0.6–1.2).
4. **Optics.** Both channels are blurred with a Gaussian PSF (σ
   :attr:`~SimulationParameters.psf_sigma_um`); out-of-focus haze (a heavily blurred copy of the
   cells, fraction :attr:`~SimulationParameters.haze`) and a diffuse background are added; the
   whole signal is multiplied by a radial vignetting profile ``1 - v · (ρ / ρ_corner)²``.
5. **Camera.** Signal counts are converted to photo-electrons (``/ gain``), Poisson-sampled,
   converted back, a camera offset and Gaussian read noise are added, and the result is rounded
   and clipped to 12 bits (0‥4095) in ``uint16``.

Ground truth
------------
``truth`` (uint8, ``(H, W)``) marks the **true footprint** of every object *before blur*: the
pixels whose centre lies within the object's radius of its (sub-pixel) centre. Where footprints
overlap, a pixel belongs to the object for which it is nearest relative to the radius
(smallest ``distance / radius``). Objects left with less than half their footprint are
discarded before rendering, so every counted object owns at least one pixel.
``instances`` (int32) numbers the objects 1‥N with the same footprints; touching objects merge
in ``truth`` but stay separate in ``instances``. ``phagophores`` / ``autolysosomes`` are the
true per-class object counts (objects whose centre lies inside the field).

Determinism
-----------
:func:`simulate_field` is a pure function of ``(params, rng, well_level)``. In
:func:`simulate_plate` each field draws from ``np.random.SeedSequence([seed, 1, row, col,
field])`` and each well's autophagy level from ``SeedSequence([seed, 2, row, col, 0])``, so a
field's pixels never depend on generation order or on how many wells the plate has.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import ndimage as ndi

from phagoflow.core.classes import OBJECT_CLASSES, ObjectClass

if TYPE_CHECKING:  # the plate writer is imported lazily: rendering needs no Opera code
    from phagoflow.core.opera.catalogue import FieldKey
    from phagoflow.core.opera.writers import ExportWriter
    from phagoflow.core.platemap import PlateMapEntry

__all__ = [
    "PRESETS",
    "NuclearStainParameters",
    "ScreenDesign",
    "SimulatedField",
    "SimulatedPlate",
    "SimulationParameters",
    "plate_layout",
    "screen_plate_map",
    "simulate_field",
    "simulate_plate",
    "well_level",
]

FloatArray = npt.NDArray[np.float64]
F32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.intp]

#: Names accepted by :meth:`SimulationParameters.preset`.
PRESETS: tuple[str, ...] = ("normal", "harder")

_MAX_COUNTS = 4095  # 12-bit camera
_SUPERSAMPLE = 4  # sub-samples per pixel side when rasterising vesicles
_PLACEMENT_ROUNDS = 6  # retries for a vesicle centre that does not fit the cytoplasm
_FIELD_TAG = 1  # SeedSequence domain tags (keep field and well streams apart)
_WELL_TAG = 2
_SCREEN_TAG = 3

Range = tuple[float, float]


class SimulationParameters(BaseModel):
    """Everything that shapes a simulated Rosella field (frozen; physical sizes in µm).

    Intensities are camera counts (ADU) *above the camera offset*, before vignetting. Ranges are
    ``(low, high)`` tuples sampled uniformly unless stated otherwise. Use :meth:`preset` for the
    documented ``"normal"`` and ``"harder"`` settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- geometry and optics -------------------------------------------------------------
    size_yx: tuple[int, int] = Field(
        (512, 680), description="Field size (H, W) in pixels (Opera 680 × 512 px, binning 2)."
    )
    pixel_size_um: float = Field(0.2, gt=0, description="Pixel size in µm per pixel.")
    psf_sigma_um: float = Field(
        0.27, ge=0, description="Standard deviation of the Gaussian PSF in µm (0 = no blur)."
    )
    vignetting: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Relative illumination loss in the field corners (0 = flat, 0.25 = corners "
        "receive 75 % of the centre's light); falloff is quadratic in the radius.",
    )
    # --- colonies and cells --------------------------------------------------------------
    colony_coverage: Range = Field(
        (0.3, 0.95),
        description="Fraction of the field area covered by colonies, drawn per field.",
    )
    colony_scale_um: float = Field(
        30.0, gt=0, description="Length scale (Gaussian σ in µm) of the colony outline noise."
    )
    cell_diameter_um: float = Field(
        12.0, gt=0, description="Mean cell centre spacing (≈ cell diameter) in µm."
    )
    cell_jitter: float = Field(
        0.22, ge=0, le=0.5, description="Random displacement of cell centres, fraction of spacing."
    )
    nucleus_fraction: Range = Field(
        (0.52, 0.66),
        description="Nucleus diameter as a fraction of the cell spacing (iPS cells have a "
        "high nucleus/cytoplasm ratio), drawn per cell.",
    )
    # --- cytosol -------------------------------------------------------------------------
    cytoplasm_dsred: float = Field(
        380.0, gt=0, description="Mean cytosolic DsRed signal in counts (cell expression 1)."
    )
    cytoplasm_ratio: float = Field(
        0.85, ge=0, description="Cytosolic pHluorin/DsRed signal ratio (neutral pH)."
    )
    expression_sigma: float = Field(
        0.25, ge=0, description="Log-normal σ of the per-cell expression level (uneven expression)."
    )
    nucleus_level: float = Field(
        0.22, ge=0, le=1, description="Nuclear signal as a fraction of the cell's cytosol."
    )
    membrane_level: float = Field(
        0.6, ge=0, le=1, description="Signal on the 1-px line between neighbouring cells, fraction."
    )
    texture_low: float = Field(
        0.15, ge=0, description="Relative amplitude (s.d.) of the low-frequency cytosol mottle."
    )
    texture_ridge: float = Field(
        0.25, ge=0, description="Relative brightness of the thin cytoplasmic ridge network."
    )
    texture_scale_um: float = Field(
        2.5, gt=0, description="Length scale (Gaussian σ) in µm of the low-frequency mottle."
    )
    ridge_scale_um: float = Field(
        0.5,
        gt=0,
        description="Length scale in µm of the band-pass noise whose zero crossings form the "
        "ridge network (ridge spacing ≈ 4 × this).",
    )
    background: float = Field(
        10.0, ge=0, description="Diffuse background signal in counts (medium autofluorescence)."
    )
    haze: float = Field(
        0.08, ge=0, description="Out-of-focus haze as a fraction of the (heavily blurred) cytosol."
    )
    # --- vesicles ------------------------------------------------------------------------
    phagophores_per_cell: Range = Field(
        (1.5, 4.5),
        description="Mean phagophores per full cell (rate drawn per cell, count ~ Poisson), "
        "at well_level 1.",
    )
    autolysosomes_per_cell: Range = Field(
        (1.5, 5.0), description="Mean autolysosomes per full cell, as for phagophores."
    )
    phagophore_diameter_um: Range = Field(
        (0.3, 0.6), description="Phagophore diameter range in µm."
    )
    autolysosome_diameter_um: Range = Field(
        (0.6, 1.5), description="Autolysosome diameter range in µm."
    )
    phagophore_peak: float = Field(
        620.0,
        ge=0,
        description="Median DsRed peak of a phagophore above the cytosol after blur, counts, "
        "at cell expression 1.",
    )
    autolysosome_peak: float = Field(
        650.0, ge=0, description="Median DsRed peak of an autolysosome, as for phagophores."
    )
    peak_sigma: float = Field(
        0.4, ge=0, description="Log-normal σ of vesicle brightness (variable brightness)."
    )
    phagophore_ratio: Range = Field(
        (0.6, 1.2), description="pHluorin/DsRed ratio of phagophore signal (both bright)."
    )
    autolysosome_ratio: Range = Field(
        (0.0, 0.25), description="pHluorin/DsRed ratio of autolysosome signal (green quenched)."
    )
    autolysosome_green_exclusion: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Fraction of cytosolic pHluorin displaced inside an autolysosome footprint.",
    )
    cluster_fraction: float = Field(
        0.1,
        ge=0,
        le=0.9,
        description="Fraction of vesicles attached to another one so that they touch.",
    )
    # --- camera --------------------------------------------------------------------------
    offset: float = Field(100.0, ge=0, description="Camera offset (dark level) in counts.")
    gain: float = Field(
        3.0, gt=0, description="Counts per photo-electron (larger = more shot noise per count)."
    )
    read_noise: float = Field(5.0, ge=0, description="Gaussian read noise s.d. in counts.")
    # --- plate ---------------------------------------------------------------------------
    well_level_sigma: float = Field(
        0.35, ge=0, description="Log-normal σ of the per-well autophagy level (plate structure)."
    )
    plate_gradient: float = Field(
        1.0,
        ge=0,
        description="Extra autophagy level across the plate columns: level × (1 + g · x), x = 0 "
        "in column 1 … 1 in the last column (a dose series).",
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> SimulationParameters:
        for name in (
            "colony_coverage",
            "nucleus_fraction",
            "phagophores_per_cell",
            "autolysosomes_per_cell",
            "phagophore_diameter_um",
            "autolysosome_diameter_um",
            "phagophore_ratio",
            "autolysosome_ratio",
        ):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(low, high)}")
        if self.colony_coverage[1] > 1:
            raise ValueError(f"colony_coverage must lie in [0, 1], got {self.colony_coverage}")
        if self.nucleus_fraction[1] >= 1:
            raise ValueError(f"nucleus_fraction must be < 1, got {self.nucleus_fraction}")
        if self.phagophore_diameter_um[0] <= 0 or self.autolysosome_diameter_um[0] <= 0:
            raise ValueError("vesicle diameters must be > 0 µm")
        if min(self.size_yx) < 16:
            raise ValueError(f"size_yx must be at least (16, 16) pixels, got {self.size_yx}")
        return self

    @classmethod
    def preset(cls, name: str) -> SimulationParameters:
        """Documented parameter sets.

        Parameters
        ----------
        name : {'normal', 'harder'}
            ``"normal"``: the defaults — good expression, bright vesicles, mild vignetting.
            ``"harder"``: a harder acquisition — about half the cytosolic signal and 35–40 %
            of the vesicle peaks (lower SNR), more variable vesicle brightness, uneven
            expression between cells (σ 0.6 instead of 0.25), stronger vignetting (0.5
            instead of 0.25), more read noise, more haze and a stronger cytoplasmic texture.
            Geometry and counts are unchanged, so the same seed gives the same objects.

        Returns
        -------
        SimulationParameters
        """
        if name == "normal":
            return cls()
        if name == "harder":
            return cls(
                cytoplasm_dsred=200.0,
                phagophore_peak=210.0,
                autolysosome_peak=270.0,
                peak_sigma=0.55,
                expression_sigma=0.6,
                vignetting=0.5,
                read_noise=8.0,
                texture_ridge=0.3,
                texture_low=0.2,
                haze=0.12,
            )
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")

    # derived sizes in pixels
    def um_to_px(self, value_um: float) -> float:
        """Convert a length in µm to pixels."""
        return value_um / self.pixel_size_um


class NuclearStainParameters(BaseModel):
    """A simulated nuclear stain (Hoechst 33342) plane of the true nuclei (frozen).

    The plane shares the field's optics and camera (PSF, vignetting, offset, gain, read
    noise); intensities are counts above the camera offset, before vignetting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_name: str = Field(
        "HOECHST 33342", min_length=1, description="Channel name written into the export."
    )
    level: float = Field(900.0, gt=0, description="Median nuclear signal in counts.")
    brightness_sigma: float = Field(
        0.2, ge=0, description="Log-normal σ of the per-nucleus brightness (DNA content)."
    )
    texture: float = Field(
        0.15, ge=0, description="Relative amplitude (s.d.) of the chromatin mottle."
    )
    texture_scale_um: float = Field(
        0.8, gt=0, description="Length scale (Gaussian σ) in µm of the chromatin mottle."
    )
    cytoplasm_level: float = Field(
        0.04, ge=0, le=1, description="Signal in the cytoplasm as a fraction of the nucleus'."
    )
    background: float = Field(12.0, ge=0, description="Diffuse background in counts.")


class ScreenDesign(BaseModel):
    """A simulated screening plate map with a planted, known effect (frozen).

    Wells of :func:`plate_layout` are taken column by column (left to right, top to bottom
    within a column): the first ``n_negative`` are negative controls (``DMSO``), the last
    ``n_positive`` positive controls (``Torin1`` 250 nM), the rest samples. The first
    ``len(dose_concentrations_um)`` samples form a dose series of compound ``DOSE-1`` in
    ascending concentration; ``n_planted`` of the other samples, drawn from the plate seed,
    are *planted hits*. Positive controls and planted hits multiply their phagophore rate by
    ``effect``; a dose well by ``1 + (effect − 1) / (1 + (dose_ec50_um / c)^dose_hill)``.
    Every other well has factor 1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_negative: int = Field(3, ge=0, description="Negative-control wells.")
    n_positive: int = Field(3, ge=0, description="Positive-control wells.")
    n_planted: int = Field(1, ge=0, description="Sample wells carrying the planted effect.")
    effect: float = Field(
        3.0, ge=0, description="Phagophore-rate factor of positive controls and planted hits."
    )
    dose_concentrations_um: tuple[float, ...] = Field(
        (), description="Concentrations (µM, each > 0) of the dose series, one well each."
    )
    dose_ec50_um: float = Field(1.0, gt=0, description="True EC50 of the dose series in µM.")
    dose_hill: float = Field(1.0, gt=0, description="True Hill slope of the dose series.")

    @model_validator(mode="after")
    def _check_doses(self) -> ScreenDesign:
        if any(not (math.isfinite(c) and c > 0) for c in self.dose_concentrations_um):
            raise ValueError(
                f"dose concentrations must be > 0 µM, got {self.dose_concentrations_um}"
            )
        return self


@dataclass(frozen=True)
class SimulatedField:
    """One simulated field and its ground truth.

    Attributes
    ----------
    image : (2, H, W) ndarray of uint16
        Camera counts ``[DsRed, pHluorin]``, 12-bit (0‥4095), offset included.
    truth : (H, W) ndarray of uint8
        True footprints: 0 background, 1 phagophore, 2 autolysosome (see module docstring).
    phagophores, autolysosomes : int
        True object counts per class.
    instances : (H, W) ndarray of int32
        Object ids 1‥N with the same footprints as ``truth`` (0 elsewhere); object ``i`` has
        class ``truth[instances == i]``. Touching objects stay separate here.
    cells : (H, W) ndarray of int32
        Cell ids (0 outside cells); nuclei included.
    nuclei : (H, W) ndarray of bool
        Nucleus pixels.
    nuclear_image : (H, W) ndarray of uint16 or None
        Nuclear-stain (Hoechst) camera counts when asked for (``nuclear=``), else ``None``.
    """

    image: npt.NDArray[np.uint16]
    truth: npt.NDArray[np.uint8]
    phagophores: int
    autolysosomes: int
    instances: npt.NDArray[np.int32] | None = None
    cells: npt.NDArray[np.int32] | None = None
    nuclei: npt.NDArray[np.bool_] | None = None
    nuclear_image: npt.NDArray[np.uint16] | None = None

    @property
    def n_nuclei(self) -> int:
        """True number of nuclei with at least one pixel in the field (0 without cells)."""
        if self.cells is None or self.nuclei is None:
            return 0
        return int(np.unique(self.cells[self.nuclei & (self.cells > 0)]).size)


@dataclass(frozen=True)
class SimulatedPlate:
    """Where :func:`simulate_plate` wrote a plate.

    Attributes
    ----------
    export_dir : Path
        Export folder to pass to :func:`phagoflow.core.opera.read_plate`.
    truth_dir : Path
        ``OUT/truth``: one ``rRRcCCfFFpPP.tiff`` (uint8 classes, zlib) per field,
        ``instances/`` with the object ids (uint16) under the same names, ``counts.csv`` and
        ``wells.csv``.
    counts_csv : Path
        ``OUT/truth/counts.csv`` with columns
        ``plate,well,row,col,field,plane,phagophores,autolysosomes`` (one row per field).
    plate_id : str
        Plate id written into the export.
    n_fields : int
        Number of fields written.
    plate_map : Path or None
        ``OUT/plate_map.csv`` of a simulated screen (:class:`ScreenDesign`), else ``None``.
    """

    export_dir: Path
    truth_dir: Path
    counts_csv: Path
    plate_id: str
    n_fields: int
    plate_map: Path | None = None


# ---------------------------------------------------------------------------------------------
# field rendering
# ---------------------------------------------------------------------------------------------


def simulate_field(
    params: SimulationParameters | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    well_level: float = 1.0,
    phagophore_factor: float = 1.0,
    nuclear: NuclearStainParameters | None = None,
) -> SimulatedField:
    """Render one Rosella field with its ground truth.

    Parameters
    ----------
    params : SimulationParameters, optional
        Image model; ``SimulationParameters.preset("normal")`` when omitted.
    rng : numpy.random.Generator or int, optional
        Source of randomness (a seed gives a reproducible field).
    well_level : float, default 1.0
        Autophagy level of the well (dimensionless, ≥ 0): multiplies the per-cell vesicle
        rates of both classes.
    phagophore_factor : float, default 1.0
        Extra factor (≥ 0) on the phagophore rate only: a planted phenotype such as an
        autophagy inducer that builds up phagophores (:class:`ScreenDesign`).
    nuclear : NuclearStainParameters, optional
        Also render a nuclear-stain (Hoechst) plane of the true nuclei into
        ``nuclear_image``. It draws its randomness after everything else, so the Rosella
        channels and the truth are the same with and without it.

    Returns
    -------
    SimulatedField
        ``image`` ``(2, H, W)`` uint16 ``[DsRed, pHluorin]``, ``truth`` ``(H, W)`` uint8 and
        the true counts. ``(H, W)`` is ``params.size_yx``.

    Raises
    ------
    ValueError
        If ``well_level`` or ``phagophore_factor`` is negative or not finite.
    """
    p = params if params is not None else SimulationParameters()
    _validate_well_level(well_level)
    _validate_well_level(phagophore_factor, name="phagophore_factor")
    gen = np.random.default_rng(rng)
    shape = p.size_yx

    cells, nuclei, membrane, spacing = _cells(p, gen)
    cyto_mask = (cells > 0) & ~nuclei & ~membrane
    n_cells = int(cells.max())
    expression = np.exp(gen.normal(0.0, p.expression_sigma, n_cells + 1))
    expression[0] = 0.0
    green_ratio = np.clip(
        gen.normal(p.cytoplasm_ratio, 0.05 * p.cytoplasm_ratio, n_cells + 1), 0, None
    )

    cytosol = _cytosol(p, gen, cells, nuclei, membrane, expression)
    vesicles = _place_vesicles(
        p, gen, cells, cyto_mask, spacing, well_level, factors=(phagophore_factor, 1.0)
    )
    vesicles = _resolve_overlaps(vesicles, shape)
    red_obj, green_obj, occupancy = _render_vesicles(p, gen, vesicles, expression, shape)

    red = cytosol + red_obj
    green = cytosol * green_ratio[cells] * (1.0 - p.autolysosome_green_exclusion * occupancy)
    green += green_obj
    image = _camera(_optics(np.stack([red, green]).astype(np.float32), p), p, gen)
    nuclear_image = None if nuclear is None else _render_nuclei(p, nuclear, gen, cells, nuclei)

    cls = vesicles.cls
    truth = np.zeros(shape, np.uint8)
    inst = vesicles.owner
    truth[inst > 0] = cls[inst[inst > 0] - 1]
    return SimulatedField(
        image=image,
        truth=truth,
        phagophores=int(np.count_nonzero(cls == ObjectClass.PHAGOPHORE)),
        autolysosomes=int(np.count_nonzero(cls == ObjectClass.AUTOLYSOSOME)),
        instances=inst.astype(np.int32),
        cells=cells.astype(np.int32),
        nuclei=nuclei,
        nuclear_image=nuclear_image,
    )


def _validate_well_level(value: float, *, name: str = "well_level") -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _render_nuclei(
    p: SimulationParameters,
    n: NuclearStainParameters,
    gen: np.random.Generator,
    cells: IntArray,
    nuclei: npt.NDArray[np.bool_],
) -> npt.NDArray[np.uint16]:
    """Hoechst plane: per-nucleus brightness × chromatin mottle, blurred, same camera."""
    shape = (int(cells.shape[0]), int(cells.shape[1]))
    n_cells = int(cells.max())
    brightness = n.level * np.exp(gen.normal(0.0, n.brightness_sigma, n_cells + 1))
    brightness[0] = 0.0
    mottle = 1.0 + n.texture * _smooth_noise(gen, shape, p.um_to_px(n.texture_scale_um), 2)
    np.clip(mottle, 0.05, None, out=mottle)
    level = brightness[cells]
    signal = np.where(nuclei, level * mottle, n.cytoplasm_level * level)
    sigma_px = p.um_to_px(p.psf_sigma_um)
    if sigma_px > 0:
        signal = ndi.gaussian_filter(signal, sigma=sigma_px, truncate=3.5)
    signal = (signal + n.background) * _vignetting(shape, p.vignetting)
    return _camera(signal.astype(np.float32), p, gen)


def _smooth_noise(
    gen: np.random.Generator, shape: tuple[int, int], sigma_px: float, factor: int
) -> FloatArray:
    """Zero-mean, unit-s.d. Gaussian-correlated noise of length scale ``sigma_px`` (pixels).

    Generated on a grid ``factor`` times coarser and interpolated linearly, which is exact
    enough for scales several times the factor and much faster than a full-size filter.
    """
    factor = max(1, factor)
    small = (max(2, math.ceil(shape[0] / factor)), max(2, math.ceil(shape[1] / factor)))
    noise = ndi.gaussian_filter(gen.standard_normal(small), sigma_px / factor, mode="wrap")
    if factor > 1:
        noise = _upsample(noise, shape)
    noise = noise - noise.mean()
    sd = noise.std()
    return np.asarray(noise / sd if sd > 0 else noise, dtype=np.float64)


def _interp_matrix(n_out: int, n_in: int) -> FloatArray:
    """``(n_out, n_in)`` linear-interpolation matrix between pixel-centre grids (edges clamped)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1.0)
    lo = np.minimum(np.floor(pos).astype(np.intp), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    mat = np.zeros((n_out, n_in))
    mat[np.arange(n_out), lo] += 1.0 - frac
    mat[np.arange(n_out), hi] += frac
    return mat


def _upsample(small: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Bilinear resize of a 2-D array to ``shape`` (separable, as two small matrix products)."""
    return np.asarray(
        _interp_matrix(shape[0], small.shape[0])
        @ small
        @ _interp_matrix(shape[1], small.shape[1]).T
    )


def _cells(
    p: SimulationParameters, gen: np.random.Generator
) -> tuple[IntArray, npt.NDArray[np.bool_], npt.NDArray[np.bool_], float]:
    """Colony mask → cell labels (Voronoi), nuclei and membrane lines; returns spacing in px."""
    h, w = p.size_yx
    spacing = p.um_to_px(p.cell_diameter_um)
    m = math.ceil(spacing)  # margin: cells centred just outside the field still show
    colony = _colony_mask(p, gen, m)
    centres, iy, ix = _hex_centres(p, gen, colony, spacing)
    cells = np.zeros((h, w), np.intp)
    nuclei = np.zeros((h, w), bool)
    membrane = np.zeros((h, w), bool)
    if len(centres) == 0:
        return cells, nuclei, membrane, spacing
    cells, centres = _warped_voronoi(gen, colony, centres, iy, ix, spacing, m, (h, w))
    if len(centres) == 0:
        return cells, nuclei, membrane, spacing
    nuclei = _nuclei_mask(p, gen, cells, centres, spacing)
    # 1-px membrane lines between neighbouring cells
    right = (cells[:, :-1] != cells[:, 1:]) & (cells[:, :-1] > 0) & (cells[:, 1:] > 0)
    down = (cells[:-1, :] != cells[1:, :]) & (cells[:-1, :] > 0) & (cells[1:, :] > 0)
    membrane[:, :-1] |= right
    membrane[:-1, :] |= down
    return cells, nuclei, membrane, spacing


def _colony_mask(
    p: SimulationParameters, gen: np.random.Generator, m: int
) -> npt.NDArray[np.bool_]:
    """Where the colony grows, on the field padded by ``m`` px each side (smooth noise above
    the quantile that gives the drawn coverage inside the field)."""
    h, w = p.size_yx
    ph, pw = h + 2 * m, w + 2 * m
    scale = p.um_to_px(p.colony_scale_um)
    colony_field = _smooth_noise(gen, (ph, pw), scale, factor=8)
    colony_field += 0.25 * _smooth_noise(gen, (ph, pw), 0.15 * scale, factor=4)
    coverage = gen.uniform(*p.colony_coverage)
    inner = colony_field[m : m + h, m : m + w]
    mask: npt.NDArray[np.bool_] = colony_field > np.quantile(inner, 1.0 - coverage)
    return mask


def _hex_centres(
    p: SimulationParameters,
    gen: np.random.Generator,
    colony: npt.NDArray[np.bool_],
    spacing: float,
) -> tuple[FloatArray, IntArray, IntArray]:
    """Jittered hexagonal grid of cell centres (padded coordinates), kept where the colony is;
    with their rounded rows and columns."""
    ph, pw = colony.shape
    dy = spacing * math.sqrt(3) / 2
    rows = np.arange(0, math.ceil(ph / dy) + 1)
    cols = np.arange(0, math.ceil(pw / spacing) + 1)
    gy, gx = np.meshgrid(rows * dy, cols * spacing, indexing="ij")
    gx = gx + (rows[:, None] % 2) * spacing / 2
    centres = np.stack([gy.ravel(), gx.ravel()], axis=1)
    centres += gen.normal(0.0, p.cell_jitter * spacing / 2, centres.shape)
    iy = np.round(centres[:, 0]).astype(np.intp)
    ix = np.round(centres[:, 1]).astype(np.intp)
    inside = (iy >= 0) & (iy < ph) & (ix >= 0) & (ix < pw)
    inside[inside] = colony[iy[inside], ix[inside]]
    return centres[inside], iy[inside], ix[inside]


def _warped_voronoi(
    gen: np.random.Generator,
    colony: npt.NDArray[np.bool_],
    centres: FloatArray,
    iy: IntArray,
    ix: IntArray,
    spacing: float,
    m: int,
    shape: tuple[int, int],
) -> tuple[IntArray, FloatArray]:
    """Cell labels 1..n of the field (Voronoi regions of the centres, looked up through smooth
    noise so outlines are not straight polygon edges), and the centres of the cells present."""
    h, w = shape
    ph, pw = colony.shape
    seeds = np.zeros((ph, pw), np.intp)
    seeds[iy, ix] = np.arange(1, len(centres) + 1)
    dist, (ny, nx) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    region = colony | (dist < 0.45 * spacing)  # the colony edge follows the outer cells
    region &= dist < 0.7 * spacing
    voronoi = np.where(region, seeds[ny, nx], 0)
    amp = 0.1 * spacing
    wy = amp * _smooth_noise(gen, (h, w), 0.3 * spacing, factor=4)
    wx = amp * _smooth_noise(gen, (h, w), 0.3 * spacing, factor=4)
    yy0 = np.clip(np.rint(np.arange(h)[:, None] + m + wy), 0, ph - 1).astype(np.intp)
    xx0 = np.clip(np.rint(np.arange(w)[None, :] + m + wx), 0, pw - 1).astype(np.intp)
    warped = voronoi[yy0, xx0]
    present, cells_flat = np.unique(warped, return_inverse=True)
    if present[0] != 0:  # keep 0 for background
        present = np.concatenate([[0], present])
        cells_flat = cells_flat + 1
    cells = cells_flat.reshape(h, w).astype(np.intp)
    return cells, centres[present[1:] - 1] - m


def _nuclei_mask(
    p: SimulationParameters,
    gen: np.random.Generator,
    cells: IntArray,
    centres: FloatArray,
    spacing: float,
) -> npt.NDArray[np.bool_]:
    """Nuclei: rotated ellipses with a wobbly outline, near each cell's centre."""
    n = len(centres)
    nuclei = np.zeros(cells.shape, bool)
    yy, xx = np.nonzero(cells)
    lab = cells[yy, xx] - 1
    centre = centres + gen.normal(0.0, 0.04 * spacing, centres.shape)
    radius = gen.uniform(*p.nucleus_fraction, n) * spacing / 2
    aspect = 1.0 + gen.uniform(0.0, 0.25, n)
    theta = gen.uniform(0.0, math.pi, n)
    wobble = _smooth_noise(gen, (cells.shape[0], cells.shape[1]), 0.12 * spacing, factor=2)
    ddy = yy - centre[lab, 0]
    ddx = xx - centre[lab, 1]
    c, s = np.cos(theta[lab]), np.sin(theta[lab])
    u = (ddx * c + ddy * s) / (radius[lab] * aspect[lab])
    v = (-ddx * s + ddy * c) * aspect[lab] / radius[lab]
    q = np.sqrt(u * u + v * v) * (1.0 + 0.07 * wobble[yy, xx])
    nuclei[yy, xx] = q < 1.0
    return nuclei


def _cytosol(
    p: SimulationParameters,
    gen: np.random.Generator,
    cells: IntArray,
    nuclei: npt.NDArray[np.bool_],
    membrane: npt.NDArray[np.bool_],
    expression: FloatArray,
) -> FloatArray:
    """Cytosolic DsRed signal (counts, before blur): expression × texture, dark nuclei."""
    shape = (int(cells.shape[0]), int(cells.shape[1]))
    scale = p.um_to_px(p.texture_scale_um)
    texture = 1.0 + p.texture_low * _smooth_noise(gen, shape, scale, factor=4)
    if p.texture_ridge > 0:
        ridge_scale = max(0.7, p.um_to_px(p.ridge_scale_um))
        band = ndi.gaussian_filter(gen.standard_normal(shape), ridge_scale)
        band -= ndi.gaussian_filter(band, 2.0 * ridge_scale)
        band /= band.std() + 1e-12
        ridges = np.exp(-((band / 0.3) ** 2))  # thin lines along the zero crossings
        texture += p.texture_ridge * (ridges - ridges.mean())
    np.clip(texture, 0.05, None, out=texture)
    level = expression[cells] * p.cytoplasm_dsred
    level = np.where(nuclei, level * p.nucleus_level, level)
    level = np.where(membrane, level * p.membrane_level, level)
    return np.asarray(level * texture, dtype=np.float64)


@dataclass
class _Vesicles:
    """Vesicle table (one entry per object) plus the owner map after overlap resolution."""

    y: FloatArray  # centre row, pixels
    x: FloatArray  # centre column, pixels
    r: FloatArray  # radius, pixels
    cls: npt.NDArray[np.uint8]  # 1 phagophore, 2 autolysosome
    cell: IntArray  # cell id
    owner: IntArray  # (H, W) object id 1..N owning each footprint pixel, 0 elsewhere

    @classmethod
    def none(cls, shape: tuple[int, ...]) -> _Vesicles:
        """No vesicle in a field of ``shape`` (H, W)."""
        return cls(
            np.zeros(0),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, np.uint8),
            np.zeros(0, np.intp),
            np.zeros(shape, np.intp),
        )


def _place_vesicles(
    p: SimulationParameters,
    gen: np.random.Generator,
    cells: IntArray,
    cyto_mask: npt.NDArray[np.bool_],
    spacing: float,
    well_level: float,
    *,
    factors: tuple[float, float] = (1.0, 1.0),
) -> _Vesicles:
    """Draw vesicle counts per cell and place them in the cytoplasm, some in touching clusters.

    ``factors`` multiply the rates of (phagophores, autolysosomes) on top of ``well_level``.
    """
    empty = _Vesicles.none(cells.shape)
    n_cells = int(cells.max())
    if n_cells == 0:
        return empty
    room = ndi.distance_transform_edt(cyto_mask)  # distance to nucleus / membrane / outside
    cand = np.flatnonzero(cyto_mask.ravel() & (room.ravel() >= 1.5))
    if cand.size == 0:
        return empty
    cand_cell = cells.ravel()[cand]
    order = np.argsort(cand_cell, kind="stable")
    cand, cand_cell = cand[order], cand_cell[order]
    starts = np.searchsorted(cand_cell, np.arange(n_cells + 2))
    n_cand = np.diff(starts)[: n_cells + 1]  # candidates per cell id 0..n_cells

    cls, cell = _vesicle_classes(p, gen, cells, n_cand, spacing, well_level, factors)
    n = cls.size
    if n == 0:
        return empty
    dmin = np.where(
        cls == ObjectClass.PHAGOPHORE, p.phagophore_diameter_um[0], p.autolysosome_diameter_um[0]
    )
    dmax = np.where(
        cls == ObjectClass.PHAGOPHORE, p.phagophore_diameter_um[1], p.autolysosome_diameter_um[1]
    )
    r = gen.uniform(dmin, dmax) / p.pixel_size_um / 2
    clustered = gen.random(n) < p.cluster_fraction
    y = np.full(n, np.nan)
    x = np.full(n, np.nan)
    fits = _Fits(cells, room)
    free = np.flatnonzero(~clustered)
    _place_free(gen, free, (cand, starts, n_cand), r, cell, fits, y, x)
    _place_clustered(gen, np.flatnonzero(clustered), r, cell, fits, y, x)
    keep = np.isfinite(y)
    return _Vesicles(y[keep], x[keep], r[keep], cls[keep], cell[keep], empty.owner)


def _place_free(
    gen: np.random.Generator,
    todo: IntArray,
    candidates: tuple[IntArray, IntArray, IntArray],
    r: FloatArray,
    cell: IntArray,
    fits: _Fits,
    y: FloatArray,
    x: FloatArray,
) -> None:
    """Place free vesicles uniformly in their cell's cytoplasm, re-drawn where they do not fit.

    ``candidates`` are the flat indices of cytoplasm pixels sorted by cell, each cell's first
    index into them and their count per cell; ``y`` and ``x`` (pixels) are filled in place and
    stay ``nan`` for vesicles that found no room in :data:`_PLACEMENT_ROUNDS` rounds.
    """
    cand, starts, n_cand = candidates
    w = fits.cells.shape[1]
    for _ in range(_PLACEMENT_ROUNDS):
        if todo.size == 0:
            break
        c = cell[todo]
        pick = starts[c] + (gen.random(todo.size) * n_cand[c]).astype(np.intp)
        pix = cand[pick]
        yy = pix // w + gen.uniform(-0.5, 0.5, todo.size)
        xx = pix % w + gen.uniform(-0.5, 0.5, todo.size)
        todo = fits.place(todo, yy, xx, r, c, y, x)


def _place_clustered(
    gen: np.random.Generator,
    todo: IntArray,
    r: FloatArray,
    cell: IntArray,
    fits: _Fits,
    y: FloatArray,
    x: FloatArray,
) -> None:
    """Place clustered objects touching an already placed object in the same cell (in place:
    ``y``, ``x`` of those that fit within the rounds)."""
    for _ in range(_PLACEMENT_ROUNDS):
        placed = np.flatnonzero(np.isfinite(y))
        if todo.size == 0 or placed.size == 0:
            break
        parent = placed[gen.integers(0, placed.size, todo.size)]
        angle = gen.uniform(0.0, 2 * math.pi, todo.size)
        d = (r[parent] + r[todo]) * gen.uniform(0.85, 1.05, todo.size)
        yy = y[parent] + d * np.sin(angle)
        xx = x[parent] + d * np.cos(angle)
        todo = fits.place(todo, yy, xx, r, cell[todo], y, x)


def _vesicle_classes(
    p: SimulationParameters,
    gen: np.random.Generator,
    cells: IntArray,
    n_cand: IntArray,
    spacing: float,
    well_level: float,
    factors: tuple[float, float],
) -> tuple[npt.NDArray[np.uint8], IntArray]:
    """Class and cell of every vesicle: per class, a rate per cell (cell area in hexagons of
    side ``spacing`` px × ``well_level`` × factor; 0 without room), then Poisson counts."""
    n_cells = int(cells.max())
    area = np.bincount(cells.ravel(), minlength=n_cells + 1).astype(float)
    rel_area = area / (math.sqrt(3) / 2 * spacing**2)
    rel_area[0] = 0.0
    counts = []
    for rate_range, factor in zip(
        (p.phagophores_per_cell, p.autolysosomes_per_cell), factors, strict=True
    ):
        rate = gen.uniform(*rate_range, n_cells + 1) * rel_area * well_level * factor
        rate[n_cand == 0] = 0.0
        counts.append(gen.poisson(rate))
    cls = np.concatenate(
        [np.full(int(c.sum()), k, np.uint8) for k, c in zip(OBJECT_CLASSES, counts, strict=True)]
    )
    cell = np.concatenate([np.repeat(np.arange(n_cells + 1), c) for c in counts])
    return cls, cell


@dataclass(frozen=True)
class _Fits:
    """Where a vesicle of radius ``r`` (px) fits: inside its own cell, ``0.8 r`` from its edge."""

    cells: IntArray
    room: FloatArray

    def __call__(
        self, yy: FloatArray, xx: FloatArray, rr: FloatArray, cc: IntArray
    ) -> npt.NDArray[Any]:
        h, w = self.cells.shape
        iy = np.round(yy).astype(np.intp)
        ix = np.round(xx).astype(np.intp)
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        ok[ok] = (self.cells[iy[ok], ix[ok]] == cc[ok]) & (
            self.room[iy[ok], ix[ok]] >= 0.8 * rr[ok]
        )
        return ok

    def place(
        self,
        todo: IntArray,
        yy: FloatArray,
        xx: FloatArray,
        r: FloatArray,
        cc: IntArray,
        y: FloatArray,
        x: FloatArray,
    ) -> IntArray:
        """Set ``y``, ``x`` of the ``todo`` vesicles whose candidate spot fits; the rest."""
        ok = self(yy, xx, r[todo], cc)
        y[todo[ok]], x[todo[ok]] = yy[ok], xx[ok]
        return todo[~ok]


def _stamps(
    y: FloatArray, x: FloatArray, r: FloatArray, shape: tuple[int, int]
) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.bool_]]:
    """Pixel grid around each object: (row, col) arrays ``(N, k, k)`` and an in-field mask."""
    half = math.ceil(float(r.max())) + 2
    off = np.arange(-half, half + 1)
    cy = np.round(y).astype(np.intp)[:, None, None]
    cx = np.round(x).astype(np.intp)[:, None, None]
    rows = np.broadcast_to(cy + off[None, :, None], (y.size, off.size, off.size))
    cols = np.broadcast_to(cx + off[None, None, :], (y.size, off.size, off.size))
    inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    obj = np.broadcast_to(np.arange(y.size)[:, None, None], rows.shape)
    return rows, cols, obj, inside


def _resolve_overlaps(v: _Vesicles, shape: tuple[int, int]) -> _Vesicles:
    """Assign footprint pixels to the relatively nearest object; drop mostly hidden objects."""
    if v.y.size == 0:
        return v
    keep = np.ones(v.y.size, bool)
    while True:  # dropping objects only raises the others' share, so this ends in <= 2 rounds
        idx = np.flatnonzero(keep)
        rows, cols, obj, inside = _stamps(v.y[idx], v.x[idx], v.r[idx], shape)
        rel = np.hypot(rows - v.y[idx][:, None, None], cols - v.x[idx][:, None, None])
        rel /= v.r[idx][:, None, None]
        foot = inside & (rel <= 1.0)
        flat = (rows * shape[1] + cols)[foot]
        rel_f = rel[foot]
        obj_f = obj[foot]
        best = np.full(shape[0] * shape[1], np.inf)
        np.minimum.at(best, flat, rel_f)
        won = rel_f <= best[flat]
        owned = np.bincount(obj_f[won], minlength=idx.size)
        total = np.bincount(obj_f, minlength=idx.size)
        ok = (owned >= 0.5 * total) & (owned > 0)
        if ok.all():
            break
        keep[idx[~ok]] = False
    # ties (equal relative distance) are resolved towards the later object
    owner = np.zeros(shape[0] * shape[1], np.intp)
    owner[flat[won]] = obj_f[won] + 1
    return _Vesicles(v.y[idx], v.x[idx], v.r[idx], v.cls[idx], v.cell[idx], owner.reshape(shape))


def _render_vesicles(
    p: SimulationParameters,
    gen: np.random.Generator,
    v: _Vesicles,
    expression: FloatArray,
    shape: tuple[int, int],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Projected-sphere vesicles scaled to their blurred peak: DsRed, pHluorin, occupancy."""
    zeros = np.zeros(shape)
    if v.y.size == 0:
        return zeros, zeros.copy(), zeros.copy()
    n = v.y.size
    rows, cols, _, inside = _stamps(v.y, v.x, v.r, shape)
    # super-sampled projected sphere sqrt(1 - d²/r²), one value per pixel
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    dy = rows[..., None, None] + sub[:, None] - v.y[:, None, None, None, None]
    dx = cols[..., None, None] + sub[None, :] - v.x[:, None, None, None, None]
    rr = v.r[:, None, None, None, None]
    sphere = np.sqrt(np.clip(1.0 - (dy * dy + dx * dx) / (rr * rr), 0.0, None)).mean(axis=(-2, -1))
    # blurred peak of a unit-amplitude object at its centre → amplitude for the wanted peak
    sigma = p.um_to_px(p.psf_sigma_um)
    if sigma >= 0.3:
        d2 = (rows - v.y[:, None, None]) ** 2 + (cols - v.x[:, None, None]) ** 2
        psf = np.exp(-d2 / (2 * sigma * sigma)) / (2 * math.pi * sigma * sigma)
        unit_peak = np.maximum((sphere * psf).sum(axis=(1, 2)), 1e-9)
    else:  # (almost) no blur: the peak is the brightest rendered pixel
        unit_peak = np.maximum(sphere.max(axis=(1, 2)), 1e-9)
    median = np.where(v.cls == ObjectClass.PHAGOPHORE, p.phagophore_peak, p.autolysosome_peak)
    peak = median * expression[v.cell] * np.exp(gen.normal(0.0, p.peak_sigma, n))
    lo = np.where(v.cls == ObjectClass.PHAGOPHORE, p.phagophore_ratio[0], p.autolysosome_ratio[0])
    hi = np.where(v.cls == ObjectClass.PHAGOPHORE, p.phagophore_ratio[1], p.autolysosome_ratio[1])
    ratio = gen.uniform(lo, hi)
    amp = peak / unit_peak
    flat = (rows * shape[1] + cols)[inside]
    size = shape[0] * shape[1]
    red = np.bincount(flat, (sphere * amp[:, None, None])[inside], size)
    green = np.bincount(flat, (sphere * (amp * ratio)[:, None, None])[inside], size)
    auto = np.broadcast_to((v.cls == ObjectClass.AUTOLYSOSOME)[:, None, None], sphere.shape)
    occ = np.bincount(flat, np.where(auto, sphere, 0.0)[inside], size)
    return (
        red.reshape(shape).astype(np.float64),
        green.reshape(shape).astype(np.float64),
        np.minimum(occ, 1.0).reshape(shape).astype(np.float64),
    )


def _blur_low_res(signal: F32Array, sigma_px: float) -> F32Array:
    """Heavy Gaussian blur of each channel, computed on a 4× coarser grid (haze)."""
    f = 4
    _, h, w = signal.shape
    small = signal[:, : h - h % f, : w - w % f]
    small = small.reshape(signal.shape[0], (h - h % f) // f, f, (w - w % f) // f, f).mean((2, 4))
    small = ndi.gaussian_filter(small, (0.0, sigma_px / f, sigma_px / f), mode="nearest")
    big = np.stack([_upsample(c.astype(np.float64), (h, w)) for c in small])
    return big.astype(np.float32)


def _vignetting(shape: tuple[int, int], strength: float) -> F32Array:
    """Radial illumination profile ``1 - strength · (ρ / ρ_corner)²`` (1 in the centre)."""
    h, w = shape
    yy = (np.arange(h) - (h - 1) / 2) / ((h - 1) / 2 or 1)
    xx = (np.arange(w) - (w - 1) / 2) / ((w - 1) / 2 or 1)
    rho2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0  # 1 in the corners
    return np.asarray(1.0 - strength * rho2, dtype=np.float32)


def _camera(
    signal: F32Array, p: SimulationParameters, gen: np.random.Generator
) -> npt.NDArray[np.uint16]:
    """Shot noise (Poisson on photo-electrons), offset, read noise, 12-bit quantisation."""
    electrons = gen.poisson(np.clip(signal, 0.0, None) / p.gain)
    counts = electrons * p.gain + p.offset
    if p.read_noise > 0:
        counts = counts + gen.normal(0.0, p.read_noise, counts.shape)
    out: npt.NDArray[np.uint16] = np.clip(np.rint(counts), 0, _MAX_COUNTS).astype(np.uint16)
    return out


# ---------------------------------------------------------------------------------------------
# plates
# ---------------------------------------------------------------------------------------------

_PLATE_ROWS = 8
_PLATE_COLUMNS = 12


def plate_layout(wells: int) -> list[tuple[int, int]]:
    """Well positions ``(row, col)`` (1-based) of a 96-well plate for ``wells`` wells.

    Up to 60 wells fill the inner 6 × 10 block row-major from B2 (edge wells, which suffer from
    evaporation, stay empty); 61–96 wells fill the whole plate row-major from A1.

    Raises
    ------
    ValueError
        If ``wells`` is not in 1‥96.
    """
    if not 1 <= wells <= _PLATE_ROWS * _PLATE_COLUMNS:
        raise ValueError(f"wells must be in 1..96 for a 96-well plate, got {wells}")
    if wells <= (_PLATE_ROWS - 2) * (_PLATE_COLUMNS - 2):
        grid = [(r, c) for r in range(2, _PLATE_ROWS) for c in range(2, _PLATE_COLUMNS)]
    else:
        grid = [(r, c) for r in range(1, _PLATE_ROWS + 1) for c in range(1, _PLATE_COLUMNS + 1)]
    return grid[:wells]


def well_level(params: SimulationParameters, seed: int, row: int, col: int) -> float:
    """Autophagy level of well ``(row, col)`` on plate ``seed`` (deterministic).

    ``exp(N(0, well_level_sigma)) · (1 + plate_gradient · (col - 1) / 11)`` normalised so that
    the plate's mean gradient factor is 1, i.e. divided by ``1 + plate_gradient / 2``.
    """
    gen = np.random.default_rng(np.random.SeedSequence([seed, _WELL_TAG, row, col, 0]))
    noise = math.exp(gen.normal(0.0, params.well_level_sigma))
    x = (col - 1) / (_PLATE_COLUMNS - 1)
    return noise * (1.0 + params.plate_gradient * x) / (1.0 + params.plate_gradient / 2)


def _field_rng(seed: int, key: FieldKey) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, _FIELD_TAG, key.row, key.col, key.field])
    )


def _validate_plate_args(wells: int, fields: int, seed: int) -> None:
    if fields < 1:
        raise ValueError(f"fields must be >= 1, got {fields}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    plate_layout(wells)  # raises on a bad well count


def simulate_plate(
    out_dir: Path,
    *,
    wells: int = 8,
    fields: int = 4,
    seed: int = 0,
    plate_id: str | None = None,
    export_format: str = "harmony5",
    params: SimulationParameters | None = None,
    progress: bool = False,
    nuclear: NuclearStainParameters | None = None,
    screen: ScreenDesign | None = None,
) -> SimulatedPlate:
    """Simulate a plate and write it as an Opera export plus ground truth.

    Parameters
    ----------
    out_dir : Path
        Output folder (created). The export goes where the format's writer puts it (inside
        ``out_dir``); the truth goes to ``out_dir / "truth"``.
    wells : int, default 8
        Number of wells (1‥96), laid out by :func:`plate_layout`.
    fields : int, default 4
        Fields per well.
    seed : int, default 0
        Plate seed; a field's pixels depend only on (seed, row, col, field, params).
    plate_id : str, optional
        Plate id; ``f"SIM{seed:04d}"`` by default.
    export_format : str, default "harmony5"
        Writer format of :func:`phagoflow.core.opera.open_writer` (``"harmony4"`` …
        ``"harmony7"``, ``"flex"``).
    params : SimulationParameters, optional
        Image model (``"normal"`` preset by default).
    progress : bool, default False
        Show a tqdm progress bar (one step per field).
    nuclear : NuclearStainParameters, optional
        Add a nuclear-stain channel (Harmony formats only); the Rosella channels are the
        same as without it.
    screen : ScreenDesign, optional
        Write ``out_dir / "plate_map.csv"`` with controls and samples and plant the design's
        effect in its positive controls and planted hits (:func:`screen_plate_map`).

    Returns
    -------
    SimulatedPlate

    Notes
    -----
    ``truth/counts.csv`` has one row per field; ``truth/wells.csv`` lists each well's autophagy
    level (:func:`well_level`). With ``nuclear``, ``counts.csv`` adds ``cells``, ``nuclei`` and
    ``cytoplasm_area_um2`` and ``truth/nuclei/`` holds each field's true nuclei (uint16, the
    cell id on nucleus pixels). With ``screen``, ``wells.csv`` adds ``role``,
    ``phagophore_factor`` and ``planted``. Without either, every output is byte-for-byte what
    earlier versions wrote.
    """
    _validate_plate_args(wells, fields, seed)
    if nuclear is not None and export_format == "flex":
        raise ValueError("a nuclear channel can only be simulated into Harmony exports")
    from phagoflow.core.opera.catalogue import FieldKey

    p = params if params is not None else SimulationParameters()
    pid = plate_id if plate_id is not None else f"SIM{seed:04d}"
    out_dir = Path(out_dir)
    truth_dir = _truth_folder(out_dir, nuclei=nuclear is not None)
    layout = plate_layout(wells)
    keys = [FieldKey(r, c, f) for r, c in layout for f in range(1, fields + 1)]
    levels = {(r, c): well_level(p, seed, r, c) for r, c in layout}
    entries, factors = ([], {}) if screen is None else screen_plate_map(layout, screen, seed=seed)

    rows_out: list[dict[str, object]] = []
    with _plate_writer(export_format, out_dir, pid, p, fields, nuclear) as w:
        for key in _progress(keys, progress, pid):
            well = (key.row, key.col)
            sim = simulate_field(
                p,
                rng=_field_rng(seed, key),
                well_level=levels[well],
                phagophore_factor=factors.get(well, 1.0),
                nuclear=nuclear,
            )
            planes = sim.image if sim.nuclear_image is None else _with_nuclei(sim)
            w.add_field(key, planes)
            _write_truth(truth_dir, key.name, sim)
            rows_out.append(_truth_row(pid, key, sim, p, nuclear is not None))
        export_dir = w.close()
    counts_csv = truth_dir / "counts.csv"
    _write_csv(counts_csv, rows_out)
    _write_csv(truth_dir / "wells.csv", _well_rows(pid, levels, screen, entries, factors))
    plate_map = None
    if screen is not None:
        plate_map = _write_plate_map(out_dir, entries)
    return SimulatedPlate(
        export_dir=Path(export_dir),
        truth_dir=truth_dir,
        counts_csv=counts_csv,
        plate_id=pid,
        n_fields=len(keys),
        plate_map=plate_map,
    )


def _truth_folder(out_dir: Path, *, nuclei: bool) -> Path:
    """Create ``out_dir/truth`` with its ``instances`` (and ``nuclei``) sub-folders."""
    truth_dir = out_dir / "truth"
    (truth_dir / "instances").mkdir(parents=True, exist_ok=True)
    if nuclei:
        (truth_dir / "nuclei").mkdir(exist_ok=True)
    return truth_dir


def _write_plate_map(out_dir: Path, entries: list[PlateMapEntry]) -> Path:
    """Write the simulated screen's ``plate_map.csv`` (controls, samples, planted hits)."""
    from phagoflow.core.platemap import write_plate_map

    return write_plate_map(out_dir / "plate_map.csv", entries)


def _plate_writer(
    export_format: str,
    out_dir: Path,
    pid: str,
    p: SimulationParameters,
    fields: int,
    nuclear: NuclearStainParameters | None,
) -> ExportWriter:
    """The export writer of a simulated plate (a nuclear channel only when asked for)."""
    from phagoflow.core.opera import open_writer  # the writer lives beside the readers

    # only passed when asked for, so the default plate needs nothing new from the writer
    nuclear_option: dict[str, Any] = (
        {} if nuclear is None else {"nuclear_name": nuclear.channel_name}
    )
    return open_writer(
        export_format,
        out_dir,
        plate_id=pid,
        plate_rows=_PLATE_ROWS,
        plate_columns=_PLATE_COLUMNS,
        pixel_size_um=p.pixel_size_um,
        size_yx=p.size_yx,
        channel_names=("DsRed", "pHluorin"),
        fields_per_well=fields,
        **nuclear_option,
    )


def _optics(signal: npt.NDArray[np.float32], p: SimulationParameters) -> npt.NDArray[np.float32]:
    """What the microscope adds to the ``(2, H, W)`` signal before the camera: PSF blur,
    out-of-focus haze, diffuse background and vignetting."""
    sigma_px = p.um_to_px(p.psf_sigma_um)
    if sigma_px > 0:
        signal = ndi.gaussian_filter(signal, sigma=(0.0, sigma_px, sigma_px), truncate=3.5)
    if p.haze > 0:
        signal += p.haze * _blur_low_res(signal, sigma_px=p.um_to_px(6.0))
    signal += p.background
    signal *= _vignetting(p.size_yx, p.vignetting)[None]
    return signal


def _with_nuclei(sim: SimulatedField) -> npt.NDArray[np.uint16]:
    assert sim.nuclear_image is not None
    return np.concatenate([sim.image, sim.nuclear_image[None]])


def _write_truth(truth_dir: Path, name: str, sim: SimulatedField) -> None:
    """Class mask, instance ids and (with a nuclear channel) the true nuclei of one field."""
    import tifffile

    tifffile.imwrite(truth_dir / f"{name}.tiff", sim.truth, compression="zlib")
    if sim.instances is not None:
        ids = sim.instances
        small = ids.astype(np.uint16) if ids.max(initial=0) < 2**16 else ids
        tifffile.imwrite(truth_dir / "instances" / f"{name}.tiff", small, compression="zlib")
    if sim.nuclear_image is not None and sim.cells is not None and sim.nuclei is not None:
        nuclei = np.where(sim.nuclei, sim.cells, 0).astype(np.uint16)
        tifffile.imwrite(truth_dir / "nuclei" / f"{name}.tiff", nuclei, compression="zlib")


def _truth_row(
    pid: str, key: FieldKey, sim: SimulatedField, p: SimulationParameters, cells: bool
) -> dict[str, object]:
    row: dict[str, object] = {
        "plate": pid,
        "well": key.well,
        "row": key.row,
        "col": key.col,
        "field": key.field,
        "plane": key.plane,
        "phagophores": sim.phagophores,
        "autolysosomes": sim.autolysosomes,
    }
    if cells and sim.cells is not None and sim.nuclei is not None:
        cyto = (sim.cells > 0) & ~sim.nuclei
        row["cells"] = int(np.unique(sim.cells[sim.cells > 0]).size)
        row["nuclei"] = sim.n_nuclei
        row["cytoplasm_area_um2"] = f"{np.count_nonzero(cyto) * p.pixel_size_um**2:.3f}"
    return row


def _well_rows(
    pid: str,
    levels: dict[tuple[int, int], float],
    screen: ScreenDesign | None,
    entries: list[PlateMapEntry],
    factors: dict[tuple[int, int], float],
) -> list[dict[str, object]]:
    roles = {(e.row, e.col): e for e in entries}
    planted = {k for k, f in factors.items() if roles[k].role.value == "sample" and f != 1.0}
    rows: list[dict[str, object]] = []
    for (r, c), lv in levels.items():
        row: dict[str, object] = {
            "plate": pid, "well": f"r{r:02d}c{c:02d}", "row": r, "col": c, "level": f"{lv:.6f}"
        }  # fmt: skip
        if screen is not None:
            row["role"] = roles[r, c].role.value
            row["phagophore_factor"] = f"{factors.get((r, c), 1.0):.6f}"
            row["planted"] = (r, c) in planted
        rows.append(row)
    return rows


def screen_plate_map(
    layout: list[tuple[int, int]], design: ScreenDesign, *, seed: int = 0
) -> tuple[list[PlateMapEntry], dict[tuple[int, int], float]]:
    """Plate-map entries and planted phagophore factors of a simulated screen.

    Parameters
    ----------
    layout : list of (int, int)
        Wells ``(row, col)`` of the plate (:func:`plate_layout`).
    design : ScreenDesign
        Roles, planted effect and dose series (see its docstring for the placement rule).
    seed : int, default 0
        Plate seed; picks the planted hits among the samples.

    Returns
    -------
    entries : list of PlateMapEntry
        One per well of ``layout``.
    factors : dict of (int, int) to float
        Phagophore-rate factor per well (1 where nothing is planted).

    Raises
    ------
    ValueError
        If the design needs more wells than ``layout`` has.
    """
    from phagoflow.core.platemap import PlateMapEntry, Role

    doses = sorted(design.dose_concentrations_um)
    need = design.n_negative + design.n_positive + len(doses) + design.n_planted
    if need > len(layout):
        raise ValueError(f"the screen design needs {need} wells, the plate has {len(layout)}")
    order = sorted(layout, key=lambda rc: (rc[1], rc[0]))
    neg = order[: design.n_negative]
    pos = order[len(order) - design.n_positive :]
    samples = order[design.n_negative : len(order) - design.n_positive]
    dose_wells, rest = samples[: len(doses)], samples[len(doses) :]
    gen = np.random.default_rng(np.random.SeedSequence([seed, _SCREEN_TAG]))
    picked = gen.choice(len(rest), size=design.n_planted, replace=False)
    planted = {rest[int(i)] for i in picked}
    factors = {rc: design.effect for rc in [*pos, *planted]}
    entries = [PlateMapEntry(*rc, Role.NEGATIVE, "vehicle", "DMSO", 0.1, "%") for rc in neg]
    entries += [PlateMapEntry(*rc, Role.POSITIVE, "Torin1", "Torin1", 250.0, "nM") for rc in pos]
    for rc, conc in zip(dose_wells, doses, strict=True):
        hill = (design.dose_ec50_um / conc) ** design.dose_hill
        factors[rc] = 1.0 + (design.effect - 1.0) / (1.0 + hill)
        entries.append(PlateMapEntry(*rc, Role.SAMPLE, "dose series", "DOSE-1", conc, "µM"))
    for i, rc in enumerate(rest, start=1):
        entries.append(PlateMapEntry(*rc, Role.SAMPLE, "", f"CMPD-{i:04d}", 10.0, "µM"))
    return sorted(entries, key=lambda e: (e.row, e.col)), factors


def _progress(keys: list[FieldKey], show: bool, plate_id: str) -> Iterator[FieldKey]:
    if not show:
        yield from keys
        return
    from tqdm import tqdm

    yield from tqdm(keys, desc=f"simulate {plate_id}", unit="field")


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
