"""The mask classes of phagoflow: one home for their values, names and display colours.

A phagoflow mask is an ``(H, W)`` uint8 array of class labels, the values of
:class:`ObjectClass`: 0 background, 1 phagophore, 2 autolysosome. Every other module (counting,
evaluation, model cards, OME-Zarr labels, the figures, the report and the review app, whose
JavaScript receives :func:`class_table` from the server) takes names and colours from here.

Colours
-------
Three palettes, each chosen for where it is drawn:

* ``outline_rgb`` (RGB in [0, 1]): outlines in the report's figures and crops, drawn on the
  red/green Rosella composite (red DsRed, green pHluorin, yellow where both): phagophores light
  blue, autolysosomes white (``outline_colour_name`` says it in words, for legends).
* ``paint_rgb`` (RGB 0–255): the filled mask being edited or rated in the review app.
* ``reference_rgb`` (RGB 0–255, one per mask source in the order the app lists them, cycled):
  outlines of the reference masks in the review app.
* ``label_rgba`` (RGBA 0–255): the class colours written into OME-Zarr label metadata.
* ``heatmap_cmap``: the matplotlib colour map of the class's plate heat-maps in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "CLASS_NAMES",
    "OBJECT_CLASSES",
    "OBJECT_CLASS_NAMES",
    "OUTLINE_COLOURS",
    "OUTLINE_COLOUR_NAMES",
    "ClassStyle",
    "ObjectClass",
    "class_table",
]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassStyle:
    """How one class is drawn (see the module docstring for where each palette is used).

    Attributes
    ----------
    outline_rgb : (3,) tuple of float or None
        Report/figure outline colour, RGB in [0, 1]; ``None`` for background (never outlined).
    outline_colour_name : str
        ``outline_rgb`` in words, for legends (``""`` for background).
    paint_rgb : (3,) tuple of int
        Review-app fill colour of an edited or rated mask, RGB 0–255.
    reference_rgb : tuple of (3,) tuple of int
        Review-app outline colour per reference source (cycled), RGB 0–255; empty for background.
    heatmap_cmap : str
        Matplotlib colour map of the class's plate heat-maps in the report (``""`` for none).
    label_rgba : (4,) tuple of int
        Colour of the class in OME-Zarr ``image-label`` metadata, RGBA 0–255.
    """

    outline_rgb: tuple[float, float, float] | None
    outline_colour_name: str
    paint_rgb: RGB
    reference_rgb: tuple[RGB, ...]
    heatmap_cmap: str
    label_rgba: tuple[int, int, int, int]


class ObjectClass(IntEnum):
    """Mask label values; ``.label`` is the class name used in tables and files."""

    BACKGROUND = 0
    PHAGOPHORE = 1
    AUTOLYSOSOME = 2

    @property
    def label(self) -> str:
        """Class name: ``"background"``, ``"phagophore"``, ``"autolysosome"``."""
        return self.name.lower()

    @property
    def plural(self) -> str:
        """Plural class name, as in count columns: ``"phagophores"``, ``"autolysosomes"``."""
        return self.label + "s"

    @property
    def style(self) -> ClassStyle:
        """Display colours of the class."""
        return _STYLES[self]


_STYLES: Final[dict[int, ClassStyle]] = {
    ObjectClass.BACKGROUND: ClassStyle(
        outline_rgb=None,
        outline_colour_name="",
        paint_rgb=(0, 0, 0),
        reference_rgb=(),
        heatmap_cmap="",
        label_rgba=(0, 0, 0, 0),
    ),
    ObjectClass.PHAGOPHORE: ClassStyle(
        outline_rgb=(0.25, 0.6, 1.0),  # light blue
        outline_colour_name="blue",
        paint_rgb=(255, 225, 0),  # yellow
        reference_rgb=((255, 150, 0), (80, 255, 120), (255, 255, 255)),
        heatmap_cmap="Blues",
        label_rgba=(255, 215, 0, 255),  # yellow
    ),
    ObjectClass.AUTOLYSOSOME: ClassStyle(
        outline_rgb=(1.0, 1.0, 1.0),  # white
        outline_colour_name="white",
        paint_rgb=(0, 210, 255),  # cyan
        reference_rgb=((255, 70, 70), (60, 130, 255), (190, 190, 190)),
        heatmap_cmap="Reds",
        label_rgba=(255, 0, 255, 255),  # magenta
    ),
}

#: Class names, index = label value: ``("background", "phagophore", "autolysosome")``.
CLASS_NAMES: Final[tuple[str, ...]] = tuple(c.label for c in ObjectClass)
#: The foreground classes, i.e. the kinds of object counted (label 0 is never an object).
OBJECT_CLASSES: Final[tuple[ObjectClass, ...]] = tuple(c for c in ObjectClass if c)
#: Label value → name of the foreground classes: ``{1: "phagophore", 2: "autolysosome"}``.
OBJECT_CLASS_NAMES: Final = MappingProxyType({int(c): c.label for c in OBJECT_CLASSES})
#: Label value → report outline colour (RGB in [0, 1]) of the foreground classes.
OUTLINE_COLOURS: Final = MappingProxyType(
    {int(c): c.style.outline_rgb for c in OBJECT_CLASSES if c.style.outline_rgb is not None}
)
#: Label value → the outline colour in words, for legends.
OUTLINE_COLOUR_NAMES: Final = MappingProxyType(
    {int(c): c.style.outline_colour_name for c in OBJECT_CLASSES}
)


def class_table() -> list[dict[str, Any]]:
    """The classes as JSON-ready dicts, one per label value in order (served to the review app).

    Returns
    -------
    list of dict
        ``{"value": int, "name": str, "plural": str, "paint_rgb": [r, g, b],
        "reference_rgb": [[r, g, b], ...]}`` (RGB 0–255).
    """
    return [
        {
            "value": int(c),
            "name": c.label,
            "plural": c.plural,
            "paint_rgb": list(c.style.paint_rgb),
            "reference_rgb": [list(rgb) for rgb in c.style.reference_rgb],
        }
        for c in ObjectClass
    ]
