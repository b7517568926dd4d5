"""Opera plate exports: readers and writers for Harmony V4–V7 and Opera QEHS ``.flex``."""

from .catalogue import (
    ROLE_ORDER,
    Channel,
    ChannelRole,
    FieldKey,
    FieldProblem,
    FieldReadError,
    FieldRecord,
    ImageSource,
    PlateCatalogue,
    PlateFormatError,
)
from .writers import EXPORT_FORMATS, ExportWriter, FlexWriter, HarmonyWriter, open_writer

__all__ = [
    "EXPORT_FORMATS",
    "ROLE_ORDER",
    "Channel",
    "ChannelRole",
    "ExportWriter",
    "FieldKey",
    "FieldProblem",
    "FieldReadError",
    "FieldRecord",
    "FlexWriter",
    "HarmonyWriter",
    "ImageSource",
    "PlateCatalogue",
    "PlateFormatError",
    "open_writer",
]
