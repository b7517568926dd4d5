"""Where the vendor-written Opera exports live, and what each one holds.

The exports sit outside the repository, in ``../shared/real_exports/`` (``PHAGOFLOW_REAL_EXPORTS``
overrides it); they are read in place, never copied into the project, and the tests that need
them skip cleanly when the folder is absent (a user who cloned only the project). The folder
has no write bits in CI: a test that must change a file copies the export first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REAL_EXPORTS = Path(
    os.environ.get(
        "PHAGOFLOW_REAL_EXPORTS",
        str(Path(__file__).resolve().parents[2] / "shared" / "real_exports"),
    )
)


@dataclass(frozen=True)
class RealExport:
    """One vendor export and what a reader must make of it.

    Attributes
    ----------
    name : str
        Folder name under :data:`REAL_EXPORTS`.
    format_version : str
        ``HarmonyV5`` / ``HarmonyV7``.
    has_pixels : bool
        The vendor TIFFs are there (LZW-compressed, as Harmony writes them).
    roles : tuple of str
        ``--channel-role`` items that make it a Rosella-like plate for ``phagoflow run``
        (empty when the wavelengths already give both roles).
    auto_roles : dict of str to str or None
        Channel name → role the wavelengths/names give with no override; ``None`` when the
        roles cannot be assigned without one.
    """

    name: str
    format_version: str
    has_pixels: bool
    roles: tuple[str, ...]
    auto_roles: dict[str, str] | None

    @property
    def path(self) -> Path:
        return REAL_EXPORTS / self.name


CELL_PAINTING_ROLES = {"Alexa 568": "dsred", "Alexa 488": "phluorin", "HOECHST 33342": "nuclei"}

EXPORTS: tuple[RealExport, ...] = (
    RealExport("harmony5_phenix_2018_index_excerpt", "HarmonyV5", False, (), None),
    RealExport(
        "harmony5_phenix_2021_cellpainting",
        "HarmonyV5",
        True,
        ("Alexa 568=dsred", "Alexa 488=phluorin"),
        CELL_PAINTING_ROLES,
    ),
    RealExport(
        "harmony5_phenix_2023_cellpainting",
        "HarmonyV5",
        True,
        ("Alexa 568=dsred", "Alexa 488=phluorin"),
        {"Alexa 568": "dsred", "Alexa 488": "phluorin"},
    ),
    RealExport("harmony5_sonata_2022", "HarmonyV5", True, ("Fluorescein (FITC)=both",), None),
    RealExport("harmony7_phenix_2024_index_only", "HarmonyV7", False, (), CELL_PAINTING_ROLES),
)


def require(export: RealExport) -> Path:
    """The export's folder, or skip the test when it is not on this machine."""
    if not export.path.is_dir():
        pytest.skip(f"vendor export {export.name} not found under {REAL_EXPORTS}")
    return export.path


def ids(exports: tuple[RealExport, ...] = EXPORTS) -> list[str]:
    return [e.name for e in exports]
