"""Rosella channel roles from vendor channel names (never from channel order).

:func:`infer_role` maps a name such as ``"DsRed"``, ``"mCherry"``, ``"TagRFP"``, ``"pHluorin"``,
``"EGFP"`` or ``"Alexa 488"`` to a :class:`ChannelRole`; :func:`assign_roles` applies it to a
plate's channels together with a user override, and raises :class:`PlateFormatError` (naming the
index file and listing the channel names) when a role cannot be assigned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from .catalogue import ROLE_ORDER, Channel, ChannelRole, PlateFormatError

__all__ = ["assign_roles", "infer_role", "parse_role"]

# Case-insensitive patterns. Letters around short tokens are excluded so that e.g. "red" does not
# match "Filtered" or "Infrared", and wavelengths are whole numbers ("488", not "14880").
_PHLUORIN: Final[re.Pattern[str]] = re.compile(
    r"phluorin|gfp|green|fitc|(?<!\d)488(?!\d)", re.IGNORECASE
)
_DSRED: Final[re.Pattern[str]] = re.compile(
    r"dsred|mcherry|rfp|tomato|mkate|mscarlet|texas\s*red"
    r"|(?<![a-z])red(?![a-z])|(?<!\d)(?:561|568|594)(?!\d)",
    re.IGNORECASE,
)
# Reds that are not DsRed: far red / deep red / infrared dyes (Alexa 647, DRAQ5, ...).
_NOT_DSRED: Final[re.Pattern[str]] = re.compile(
    r"far\s*-?\s*red|deep\s*-?\s*red|infra\s*-?\s*red|near\s*-?\s*ir", re.IGNORECASE
)


def infer_role(name: str) -> ChannelRole | None:
    """Rosella role of a channel from its vendor name, case-insensitive.

    Parameters
    ----------
    name : str
        Vendor channel name, e.g. ``"DsRed"``, ``"DsRed2"``, ``"mCherry"``, ``"TagRFP"``,
        ``"red"``, ``"pHluorin"``, ``"EGFP"``, ``"green"`` or ``"Alexa 488"``.

    Returns
    -------
    ChannelRole or None
        ``DSRED`` for DsRed/red/mCherry/RFP-like names, ``PHLUORIN`` for pHluorin/GFP/green/488
        names, ``None`` when the name matches neither or both (e.g. ``"DsRed-GFP merge"``),
        or is a far-red/infrared dye.

    Examples
    --------
    >>> infer_role("pHluorin"), infer_role("TagRFP"), infer_role("Alexa 647")
    (<ChannelRole.PHLUORIN: 'phluorin'>, <ChannelRole.DSRED: 'dsred'>, None)
    """
    green = _PHLUORIN.search(name) is not None
    red = _DSRED.search(name) is not None and _NOT_DSRED.search(name) is None
    if green == red:
        return None
    return ChannelRole.PHLUORIN if green else ChannelRole.DSRED


def parse_role(value: ChannelRole | str) -> ChannelRole:
    """A :class:`ChannelRole` from itself or a case-insensitive name (``"DsRed"``)."""
    if isinstance(value, ChannelRole):
        return value
    text = str(value).strip().lower()
    for role in ChannelRole:
        if text == role.value:
            return role
    raise ValueError(f"unknown channel role {value!r}: use one of {[r.value for r in ChannelRole]}")


def assign_roles(
    channel_names: Mapping[int, str],
    index_path: Path,
    *,
    channel_roles: Mapping[str | int, ChannelRole | str] | None = None,
) -> tuple[Channel, ...]:
    """Channels of a plate with their roles.

    Parameters
    ----------
    channel_names : mapping of int to str
        Channel id → vendor name.
    index_path : Path
        Index file, named in error messages.
    channel_roles : mapping, optional
        Override: channel name (case-insensitive) or channel id (int, or a string of digits
        when no channel has that name) → role (:class:`ChannelRole` or ``"dsred"`` /
        ``"phluorin"``). Overridden channels keep their role; the others are inferred from
        their names, and lose an inferred role that an override already gave.

    Returns
    -------
    tuple of Channel
        Sorted by channel id; channels of no role (e.g. a bright-field channel) have
        ``role=None``.

    Raises
    ------
    PlateFormatError
        A role (DsRed or pHluorin) has no channel, or two channels claim it; or an override
        names no channel. The message names ``index_path``, lists the channel names and
        explains the override.
    """
    ids = sorted(channel_names)
    listing = ", ".join(f"{i}: {channel_names[i]!r}" for i in ids) or "none"
    hint = (
        "channel roles come from names (DsRed/red/mCherry/RFP → dsred; "
        "pHluorin/GFP/green/488 → phluorin); pass channel_roles={name or id: role} "
        "(CLI: --channel-role NAME=ROLE) to set them"
    )
    forced: dict[int, ChannelRole] = {}
    for raw_key, raw_role in (channel_roles or {}).items():
        try:
            role = parse_role(raw_role)
        except ValueError as exc:
            raise PlateFormatError(f"{index_path}: {exc}") from None
        cid = _match_channel(raw_key, channel_names)
        if cid is None:
            raise PlateFormatError(
                f"{index_path}: channel_roles key {raw_key!r} matches no channel "
                f"(channels {listing})"
            )
        forced[cid] = role
    roles: dict[int, ChannelRole | None] = {}
    for cid in ids:
        if cid in forced:
            roles[cid] = forced[cid]
        else:
            inferred = infer_role(channel_names[cid])
            roles[cid] = None if inferred in forced.values() else inferred
    for role in ROLE_ORDER:
        holders = [cid for cid in ids if roles[cid] is role]
        if not holders:
            raise PlateFormatError(
                f"{index_path}: no channel has the {role.value} role; channel names "
                f"({listing}) match neither role as expected: {hint}"
            )
        if len(holders) > 1:
            names = ", ".join(repr(channel_names[c]) for c in holders)
            raise PlateFormatError(
                f"{index_path}: channels {names} all look like {role.value} "
                f"(channels {listing}): {hint}"
            )
    return tuple(Channel(cid, channel_names[cid], roles[cid]) for cid in ids)


def _match_channel(key: str | int, channel_names: Mapping[int, str]) -> int | None:
    if isinstance(key, int) and not isinstance(key, bool):
        return key if key in channel_names else None
    text = str(key).strip().lower()
    for cid, name in channel_names.items():
        if name.strip().lower() == text:
            return cid
    if text.isdigit() and int(text) in channel_names:
        return int(text)
    return None
