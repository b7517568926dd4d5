"""The test protocol that cannot flatter (issue 15): training, validation and test plates.

Three disjoint sets of simulated plates, defined here by role, seed and condition:

- **training** plates (seeds 100–199; unlabelled for CDL: their truth is never read);
- **validation** plates (seeds 5000–5999): every choice — a parameter, a threshold, a recipe,
  a checkpoint — is made on these;
- **test** plates (seeds 7000–7999): used only for reported figures. They are rendered with
  each condition's ``"test"`` variant (:func:`phagoflow.core.stress.condition_params`): shifted
  simulator settings that nothing was tuned on, as well as unseen seeds.

Seeds used for choices before this protocol (the old experiment's test plate 900, the MDL pool
300, the CIP unit-test fields) fall in no test range: they count as validation data.

The guard is in code: :func:`require_reportable` raises :class:`ProtocolError` for anything but
test plates, and :func:`require_tunable` for a test plate. A :class:`PlateSpec` whose seed lies
outside its role's range cannot be constructed. Scripts that report a figure call
:func:`require_reportable` on the plates it came from; scripts that choose call
:func:`require_tunable`.

Plate structure: ``wells`` wells × ``fields`` fields; well ``w`` has the autophagy level
``exp(N(0, 0.35))`` drawn from ``SeedSequence([seed, tag, w])`` and field ``f`` of it is drawn
from ``SeedSequence([seed, tag, w, f])``, with ``tag`` the condition's stable tag — so a field
never depends on how many wells or conditions a plate set has.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phagoflow.core.stress import (
    CONDITIONS,
    StressField,
    Variant,
    condition,
    render_condition_field,
)

if TYPE_CHECKING:
    from phagoflow.core.opera.catalogue import FieldKey

__all__ = [
    "SEED_RANGES",
    "PlateSpec",
    "ProtocolError",
    "Role",
    "StressPlate",
    "plate_set",
    "render_plate",
    "require_reportable",
    "require_tunable",
    "role_of_seed",
    "write_export",
]

_WELL_LEVEL_SIGMA = 0.35


class Role(StrEnum):
    """What a plate may be used for."""

    TRAINING = "training"
    VALIDATION = "validation"
    TEST = "test"


#: Seed range of each role (disjoint).
SEED_RANGES: dict[Role, range] = {
    Role.TRAINING: range(100, 200),
    Role.VALIDATION: range(5000, 6000),
    Role.TEST: range(7000, 8000),
}


class ProtocolError(ValueError):
    """A plate used against the protocol (a figure from a non-test plate, tuning on a test one)."""


def role_of_seed(seed: int) -> Role | None:
    """The role whose seed range holds ``seed``, or ``None``."""
    for role, seeds in SEED_RANGES.items():
        if seed in seeds:
            return role
    return None


@dataclass(frozen=True)
class PlateSpec:
    """One plate of the protocol.

    Attributes
    ----------
    condition : str
        Stress condition (:data:`phagoflow.core.stress.CONDITIONS`).
    role : Role
        Training, validation or test.
    seed : int
        Plate seed, inside ``SEED_RANGES[role]``.
    wells, fields : int
        Plate size: wells × fields per well.

    Raises
    ------
    ProtocolError
        If the seed is outside its role's range, or the condition is unknown.
    """

    condition: str
    role: Role
    seed: int
    wells: int = 4
    fields: int = 3

    def __post_init__(self) -> None:
        if self.seed not in SEED_RANGES[self.role]:
            seeds = SEED_RANGES[self.role]
            raise ProtocolError(
                f"seed {self.seed} is not a {self.role.value} seed "
                f"({seeds.start}..{seeds.stop - 1})"
            )
        if self.condition not in CONDITIONS:
            raise ProtocolError(f"unknown condition {self.condition!r}")
        if self.wells < 1 or self.fields < 1:
            raise ProtocolError(f"wells and fields must be >= 1, got {self.wells}, {self.fields}")

    @property
    def variant(self) -> Variant:
        """Settings variant: ``"test"`` for test plates, ``"tuning"`` otherwise."""
        return "test" if self.role is Role.TEST else "tuning"

    @property
    def name(self) -> str:
        """Short id, e.g. ``"test:dense_small:7000"``."""
        return f"{self.role.value}:{self.condition}:{self.seed}"


@dataclass(frozen=True)
class StressPlate:
    """A rendered plate: its spec and its fields in well-major order.

    Attributes
    ----------
    spec : PlateSpec
    fields : tuple of StressField
    wells : tuple of int
        Well index (0-based) of each field.
    """

    spec: PlateSpec
    fields: tuple[StressField, ...]
    wells: tuple[int, ...]

    def true_counts(self) -> dict[str, tuple[int, int]]:
        """True (phagophores, autolysosomes) per well, keyed ``"w00"``, ``"w01"``, ..."""
        out: dict[str, list[int]] = {}
        for well, f in zip(self.wells, self.fields, strict=True):
            c = out.setdefault(f"w{well:02d}", [0, 0])
            c[0] += f.phagophores
            c[1] += f.autolysosomes
        return {k: (v[0], v[1]) for k, v in out.items()}


def plate_set(
    role: Role,
    conditions: Iterable[str] | None = None,
    *,
    plates: int = 1,
    first: int = 0,
    wells: int = 4,
    fields: int = 3,
) -> list[PlateSpec]:
    """The protocol's plates of one role: ``plates`` per condition, seeds from the role's start.

    Parameters
    ----------
    role : Role
        Which set.
    conditions : iterable of str, optional
        Conditions (default: all of :data:`~phagoflow.core.stress.CONDITIONS`).
    plates : int, default 1
        Plates per condition (seeds ``start + first``, ``start + first + 1``, ...).
    first : int, default 0
        Offset of the first seed in the role's range (a fresh set of plates).
    wells, fields : int
        Plate size.

    Returns
    -------
    list of PlateSpec
    """
    names = list(CONDITIONS) if conditions is None else [condition(c).name for c in conditions]
    start = SEED_RANGES[role].start + first
    return [
        PlateSpec(name, role, start + i, wells=wells, fields=fields)
        for name in names
        for i in range(plates)
    ]


def require_reportable(specs: PlateSpec | Sequence[PlateSpec]) -> None:
    """Refuse to report a figure from anything but test plates.

    Raises
    ------
    ProtocolError
        If any plate is not a test plate (the message names them).
    """
    items = [specs] if isinstance(specs, PlateSpec) else list(specs)
    bad = [s.name for s in items if s.role is not Role.TEST]
    if bad or not items:
        raise ProtocolError(
            f"figures are reported on test plates only; not test plates: {bad or 'none given'}"
        )


def require_tunable(specs: PlateSpec | Sequence[PlateSpec]) -> None:
    """Refuse to make a choice on a test plate.

    Raises
    ------
    ProtocolError
        If any plate is a test plate (the message names them).
    """
    items = [specs] if isinstance(specs, PlateSpec) else list(specs)
    bad = [s.name for s in items if s.role is Role.TEST]
    if bad:
        raise ProtocolError(f"test plates may not be used for a choice: {bad}")


def _well_level(spec: PlateSpec, tag: int, well: int) -> float:
    gen = np.random.default_rng(np.random.SeedSequence([spec.seed, tag, well]))
    return math.exp(gen.normal(0.0, _WELL_LEVEL_SIGMA))


def _iter_fields(spec: PlateSpec) -> Iterator[tuple[int, StressField]]:
    tag = condition(spec.condition).tag
    for well in range(spec.wells):
        level = _well_level(spec, tag, well)
        for f in range(spec.fields):
            rng = np.random.default_rng(np.random.SeedSequence([spec.seed, tag, well, f]))
            field = render_condition_field(spec.condition, spec.variant, rng=rng, well_level=level)
            yield well, field


def render_plate(spec: PlateSpec) -> StressPlate:
    """Render every field of a plate in memory.

    A condition with a non-default channel order (``channel_order``) is written through the
    Opera writer (Harmony 5, its ``channel_ids``) into a temporary folder and read back with
    :func:`phagoflow.core.opera.read_plate` / ``load_field``, so the field the CIP sees is what
    the reader made of the export (roles by channel name).

    Parameters
    ----------
    spec : PlateSpec

    Returns
    -------
    StressPlate
    """
    pairs = list(_iter_fields(spec))
    plate = StressPlate(
        spec=spec, fields=tuple(f for _, f in pairs), wells=tuple(w for w, _ in pairs)
    )
    if condition(spec.condition).channel_ids != (1, 2):
        plate = _export_round_trip(plate)
    return plate


def write_export(plate: StressPlate, out_dir: Path, *, plate_id: str | None = None) -> Path:
    """Write a rendered plate as a Harmony 5 export plus its true class masks.

    Well ``w`` of the plate goes to the ``w``-th position of
    :func:`phagoflow.core.simulate.plate_layout` (inner wells first), its fields numbered from 1;
    the channels are written with the condition's ``channel_ids`` (``channel_order`` writes
    pHluorin first). ``out_dir/truth/rRRcCCfFFp01.tiff`` holds each field's true mask (0, 1, 2),
    the layout ``phagoflow evaluate --truth`` reads.

    Parameters
    ----------
    plate : StressPlate
        A plate from :func:`render_plate` (images with the camera's ``[DsRed, pHluorin]`` order).
    out_dir : Path
        Export folder (created).
    plate_id : str, optional
        Plate id in the index (default: ``<condition>-<seed>``).

    Returns
    -------
    Path
        The export folder to give to :func:`phagoflow.core.opera.read_plate`.
    """
    import tifffile

    from phagoflow.core.opera import open_writer
    from phagoflow.core.simulate import plate_layout

    spec, first = plate.spec, plate.fields[0]
    keys = _field_keys(plate, plate_layout(spec.wells))
    truth_dir = Path(out_dir) / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    writer = open_writer(
        "harmony5",
        Path(out_dir),
        plate_id=plate_id or f"{spec.condition}-{spec.seed}",
        pixel_size_um=first.pixel_size_um,
        size_yx=(int(first.truth.shape[0]), int(first.truth.shape[1])),
        channel_ids=condition(spec.condition).channel_ids,
        fields_per_well=spec.fields,
    )
    with writer as w:
        for key, f in zip(keys, plate.fields, strict=True):
            w.add_field(key, np.asarray(f.image, dtype=np.uint16))
            tifffile.imwrite(truth_dir / f"{key.name}.tiff", f.truth, compression="zlib")
        return Path(w.close())


def _field_keys(plate: StressPlate, layout: Sequence[tuple[int, int]]) -> list[FieldKey]:
    """The export key of every field of ``plate``: its well's layout position, field 1, 2, ..."""
    from phagoflow.core.opera.catalogue import FieldKey

    keys, seen = [], dict.fromkeys(range(plate.spec.wells), 0)
    for well in plate.wells:
        seen[well] += 1
        keys.append(FieldKey(*layout[well], seen[well]))
    return keys


def _export_round_trip(plate: StressPlate) -> StressPlate:
    """Write the plate as a Harmony export with its channel ids and read its fields back by role."""
    from phagoflow.core.opera import load_field, read_plate
    from phagoflow.core.simulate import plate_layout

    keys = _field_keys(plate, plate_layout(plate.spec.wells))
    with tempfile.TemporaryDirectory(prefix="phagoflow-stress-") as tmp:
        cat = read_plate(write_export(plate, Path(tmp)))
        by_key = {(r.key.row, r.key.col, r.key.field): r for r in cat.fields}
        images = [load_field(cat, by_key[(k.row, k.col, k.field)]) for k in keys]
    fields = tuple(
        StressField(img, f.truth, f.phagophores, f.autolysosomes, float(cat.pixel_size_um))
        for img, f in zip(images, plate.fields, strict=True)
    )
    return StressPlate(spec=plate.spec, fields=fields, wells=plate.wells)
