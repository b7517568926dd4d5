"""Rosella channel roles from vendor channel names *and* wavelengths (never from channel order).

A role is decided per channel, in this order:

1. an explicit override (``--channel-role NAME=ROLE``; ``ROLE`` is ``dsred``, ``phluorin``,
   ``both`` — one channel standing in for both, e.g. a single-channel plate — or ``none``);
2. the excitation/emission wavelengths the index carries (``MainExcitationWavelength`` /
   ``MainEmissionWavelength``, on the Image or in ``Maps/Map/Entry``), when both are known:
   see :data:`PHLUORIN_BAND` and :data:`DSRED_BAND`; a channel outside both bands (far red,
   UV-excited, 488 nm read in the far red, transmitted light) gets no role;
3. the name (:func:`infer_role`) when the wavelengths are unknown.

A channel left without a Rosella role becomes the plate's optional *nuclear* channel
(:attr:`ChannelRole.NUCLEI`, for per-cell readouts) when it is the only one whose name is a
nuclear stain (Hoechst, DAPI, DRAQ5, …) or whose wavelengths fit :data:`NUCLEAR_BAND`; an
override ``NAME=nuclei`` sets it. A plate without one is fine.

When a name and the wavelengths point to *different* roles the channel is ambiguous and gets no
role; when a role ends with no channel, or two channels claim it, :func:`assign_roles` refuses
with :class:`PlateFormatError`, listing every channel with its wavelengths and why it got (or did
not get) a role, and how to override.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .catalogue import ROLE_ORDER, Channel, ChannelRole, PlateFormatError

__all__ = [
    "DSRED_BAND",
    "NUCLEAR_BAND",
    "PHLUORIN_BAND",
    "RoleOverrides",
    "SpectralBand",
    "assign_roles",
    "infer_role",
    "parse_channel_roles",
    "parse_role",
    "parse_role_override",
    "recorded_channel_roles",
    "role_from_wavelengths",
]

# Case-insensitive patterns. Letters around short tokens are excluded so that e.g. "red" does not
# match "Filtered" or "Infrared", and wavelengths are whole numbers ("488", not "14880").
_PHLUORIN: Final[re.Pattern[str]] = re.compile(
    r"phluorin|gfp|green|fitc|fluorescein|(?<!\d)488(?!\d)", re.IGNORECASE
)
_DSRED: Final[re.Pattern[str]] = re.compile(
    r"dsred|mcherry|rfp|tomato|mkate|mscarlet|texas\s*red|tritc|rhodamine|(?<![a-z])cy\s*3(?!\d)"
    r"|(?<![a-z])red(?![a-z])|(?<!\d)(?:546|555|561|568|594)(?!\d)",
    re.IGNORECASE,
)
# Reds that are not DsRed: far red / deep red / infrared dyes (Alexa 647, DRAQ5, ...).
_NOT_DSRED: Final[re.Pattern[str]] = re.compile(
    r"far\s*-?\s*red|deep\s*-?\s*red|infra\s*-?\s*red|near\s*-?\s*ir", re.IGNORECASE
)
_NUCLEAR: Final[re.Pattern[str]] = re.compile(
    r"hoechst|dapi|draq\s*-?\s*[57]|nuclear|nucle[iu]|sir\s*-?\s*dna|(?<![a-z])dna(?![a-z])",
    re.IGNORECASE,
)
# A 488 nm channel read elsewhere than green: "488 long" (long-pass), "488 650", "Em 650".
_NOT_GREEN: Final[re.Pattern[str]] = re.compile(
    r"(?<![a-z])long(?![a-z])|(?<!\d)(?:6\d\d|7\d\d)(?!\d)", re.IGNORECASE
)

#: ``--channel-role`` overrides: channel name or id → ``"dsred"``, ``"phluorin"``, ``"both"``,
#: ``"none"`` (or a :class:`ChannelRole`, or a sequence of roles).
_RoleValue = ChannelRole | str | Sequence[str]
RoleOverrides = Mapping[str, _RoleValue] | Mapping[int, _RoleValue] | Mapping[str | int, _RoleValue]

#: Names accepted for an override, besides the :class:`ChannelRole` values.
_BOTH: Final[frozenset[str]] = frozenset({"both", "dsred+phluorin", "phluorin+dsred"})
_NONE: Final[frozenset[str]] = frozenset({"none", "-", "ignore"})


@dataclass(frozen=True)
class SpectralBand:
    """Excitation and emission ranges of one Rosella fluorophore, nanometres (inclusive)."""

    excitation_nm: tuple[float, float]
    emission_nm: tuple[float, float]

    def holds(self, excitation_nm: float, emission_nm: float) -> bool:
        """Whether a channel excited at ``excitation_nm`` and read at ``emission_nm`` fits."""
        (ex_lo, ex_hi), (em_lo, em_hi) = self.excitation_nm, self.emission_nm
        return ex_lo <= excitation_nm <= ex_hi and em_lo <= emission_nm <= em_hi


#: pHluorin (a GFP): excited 450–510 nm (the 488 nm line), read 490–570 nm (≈ 509–525 nm).
PHLUORIN_BAND: Final[SpectralBand] = SpectralBand((450.0, 510.0), (490.0, 570.0))
#: DsRed: excited 520–600 nm (the 546/561/568 nm lines), read 560–650 nm (≈ 583–610 nm).
DSRED_BAND: Final[SpectralBand] = SpectralBand((520.0, 600.0), (560.0, 650.0))
#: Nuclear stains: excited 340–420 nm (the 405 nm line), read 420–500 nm (Hoechst, DAPI).
NUCLEAR_BAND: Final[SpectralBand] = SpectralBand((340.0, 420.0), (420.0, 500.0))


def infer_role(name: str) -> ChannelRole | None:
    """Rosella role of a channel from its vendor name, case-insensitive.

    Parameters
    ----------
    name : str
        Vendor channel name, e.g. ``"DsRed"``, ``"mCherry"``, ``"TagRFP"``, ``"TRITC"``,
        ``"Cy3"``, ``"Alexa 546"``, ``"pHluorin"``, ``"EGFP"``, ``"FITC"`` or ``"Alexa 488"``.

    Returns
    -------
    ChannelRole or None
        ``DSRED`` for DsRed/red/mCherry/RFP/TRITC/Cy3/546–594-like names, ``PHLUORIN`` for
        pHluorin/GFP/green/FITC/488 names, ``None`` when the name matches neither or both
        (e.g. ``"DsRed-GFP merge"``), is a far-red/infrared dye, or is a 488 nm channel read
        elsewhere (``"488 long"``, ``"488 650"``, ``"Alexa 488 Em 650"``).

    Examples
    --------
    >>> infer_role("pHluorin"), infer_role("TagRFP"), infer_role("Alexa 647")
    (<ChannelRole.PHLUORIN: 'phluorin'>, <ChannelRole.DSRED: 'dsred'>, None)
    >>> infer_role("Alexa 488 Em 650") is None
    True
    """
    green = _PHLUORIN.search(name) is not None and _NOT_GREEN.search(name) is None
    red = _DSRED.search(name) is not None and _NOT_DSRED.search(name) is None
    if green == red:
        return None
    return ChannelRole.PHLUORIN if green else ChannelRole.DSRED


def role_from_wavelengths(
    excitation_nm: float | None, emission_nm: float | None
) -> ChannelRole | str | None:
    """Role of a channel from its main excitation and emission wavelengths (nm).

    Returns
    -------
    ChannelRole, None or ``"unknown"``
        The role whose band (:data:`PHLUORIN_BAND`, :data:`DSRED_BAND`) holds both
        wavelengths; ``None`` when both are known and fit neither band (far red, UV-excited,
        488 nm read in the far red, an emission of 0 for transmitted light); ``"unknown"``
        when a wavelength is missing.
    """
    if not _known(excitation_nm) or not _known(emission_nm):
        return "unknown"
    assert excitation_nm is not None and emission_nm is not None
    if PHLUORIN_BAND.holds(excitation_nm, emission_nm):
        return ChannelRole.PHLUORIN
    if DSRED_BAND.holds(excitation_nm, emission_nm):
        return ChannelRole.DSRED
    return None


def parse_role(value: ChannelRole | str) -> ChannelRole:
    """A :class:`ChannelRole` from itself or a case-insensitive name (``"DsRed"``)."""
    if isinstance(value, ChannelRole):
        return value
    text = str(value).strip().lower()
    for role in ChannelRole:
        if text == role.value:
            return role
    raise ValueError(
        f"unknown channel role {value!r}: use one of "
        f"{[r.value for r in ChannelRole] + ['both', 'none']}"
    )


def parse_role_override(
    value: ChannelRole | str | Iterable[ChannelRole | str],
) -> tuple[ChannelRole, ...]:
    """Roles an override gives a channel: ``"dsred"``, ``"phluorin"``, ``"both"`` or ``"none"``.

    A sequence of roles (``["dsred", "phluorin"]``) is accepted too. Raises ``ValueError`` for
    anything else.
    """
    if isinstance(value, ChannelRole):
        return (value,)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _BOTH:
            return ROLE_ORDER
        if text in _NONE:
            return ()
        return (parse_role(text),)
    roles = tuple(dict.fromkeys(parse_role(v) for v in value))
    return tuple(r for r in (*ROLE_ORDER, ChannelRole.NUCLEI) if r in roles)


def parse_channel_roles(items: Sequence[str]) -> dict[str, str]:
    """``NAME=ROLE`` items (the ``--channel-role`` option) as an override mapping.

    Parameters
    ----------
    items : sequence of str
        E.g. ``["Alexa 568=dsred", "Alexa 488=phluorin"]``, ``["FITC=both"]``, ``["2=none"]``;
        ``NAME`` is a channel name (case-insensitive) or a channel id. A comma-separated single
        item (``"Alexa 568=dsred,Alexa 488=phluorin"``, the ``PHAGOFLOW_CHANNEL_ROLES`` form) is
        split too.

    Raises
    ------
    ValueError
        An item without ``=``, an empty name, or an unknown role; the message quotes it.
    """
    out: dict[str, str] = {}
    for item in items:
        for part in _split_items(item):
            name, sep, role = part.rpartition("=")
            if not sep or not name.strip() or not role.strip():
                raise ValueError(f"--channel-role expects NAME=ROLE, got {part!r}")
            parse_role_override(role)  # validate now, with the user's spelling in the message
            out[name.strip()] = role.strip()
    return out


def recorded_channel_roles(records: Iterable[Mapping[str, object]]) -> dict[str, str]:
    """Overrides that give a plate the roles a run recorded (``run.json`` ``export.channels``).

    Parameters
    ----------
    records : iterable of mapping
        :meth:`Channel.as_record` dicts (``name``, ``role`` such as ``"dsred"``,
        ``"dsred+phluorin"`` or ``None``).

    Returns
    -------
    dict of str to str
        Channel name → role of every channel that had one, e.g. for the review app to read the
        export exactly as ``phagoflow run --channel-role ...`` did.
    """
    return {str(r["name"]): str(r["role"]) for r in records if r.get("role") and r.get("name")}


def assign_roles(
    channel_names: Mapping[int, str],
    index_path: Path,
    *,
    channel_roles: RoleOverrides | None = None,
    wavelengths: Mapping[int, tuple[float | None, float | None]] | None = None,
) -> tuple[Channel, ...]:
    """Channels of a plate with their roles (see the module docstring for the rules).

    Parameters
    ----------
    channel_names : mapping of int to str
        Channel id → vendor name.
    index_path : Path
        Index file, named in error messages.
    channel_roles : mapping, optional
        Override: channel name (case-insensitive) or channel id (int, or a string of digits
        when no channel has that name) → ``"dsred"``, ``"phluorin"``, ``"both"``, ``"none"``
        (or a :class:`ChannelRole`). Overridden channels keep their roles; the others are
        inferred, and lose an inferred role that an override already gave.
    wavelengths : mapping of int to (float or None, float or None), optional
        Channel id → (main excitation, main emission) in nm, as the index gives them.

    Returns
    -------
    tuple of Channel
        Sorted by channel id; channels of no role (bright field, nuclei, far red) have
        ``roles == ()``.

    Raises
    ------
    PlateFormatError
        A role (DsRed or pHluorin) has no channel, or two channels claim it; or an override
        names no channel or no known role. The message names ``index_path``, lists every
        channel (name, wavelengths, why it got its role) and explains the override.
    """
    waves = dict(wavelengths or {})
    ids = sorted(channel_names)
    forced = _forced_roles(channel_names, index_path, channel_roles or {})
    taken = {r for roles in forced.values() for r in roles}
    decided: dict[int, tuple[tuple[ChannelRole, ...], str]] = {}
    for cid in ids:
        if cid in forced:
            decided[cid] = (forced[cid], "override")
            continue
        roles, source = _inferred(channel_names[cid], *waves.get(cid, (None, None)))
        if taken.intersection(roles):
            given = "+".join(r.value for r in roles)
            roles, source = (), f"{given} given to another channel by the override"
        decided[cid] = (roles, source)
    _assign_nuclei(decided, channel_names, waves)
    channels = tuple(
        Channel(
            cid,
            channel_names[cid],
            decided[cid][0][0] if decided[cid][0] else None,
            roles=decided[cid][0],
            excitation_nm=waves.get(cid, (None, None))[0],
            emission_nm=waves.get(cid, (None, None))[1],
            role_source=decided[cid][1],
        )
        for cid in ids
    )
    _check_roles(channels, index_path)
    return channels


# -- private helpers -----------------------------------------------------------------------
def _known(value: float | None) -> bool:
    """A wavelength the index states (0 nm is stated too: no emission, e.g. bright field)."""
    return value is not None and math.isfinite(value) and value >= 0


def _split_items(item: str) -> list[str]:
    """Split ``"a=dsred,b=phluorin"`` at commas; a piece without ``=`` belongs to the item after
    it (a comma inside a channel name: ``"405ex, 570-630-em)=none"``)."""
    parts: list[str] = []
    pending = ""
    for piece in item.split(","):
        pending = f"{pending},{piece}" if pending else piece
        if "=" in piece:
            parts.append(pending)
            pending = ""
    if pending:
        parts.append(pending)  # no '=' at all: reported by the caller
    return [p for p in (s.strip() for s in parts) if p]


def _inferred(
    name: str, excitation_nm: float | None, emission_nm: float | None
) -> tuple[tuple[ChannelRole, ...], str]:
    """Roles and the reason, from wavelengths when known, else from the name."""
    by_name = infer_role(name)
    by_waves = role_from_wavelengths(excitation_nm, emission_nm)
    if by_waves == "unknown":
        if by_name is None:
            return (), "name matches neither role"
        return (by_name,), "name"
    waves_txt = f"{excitation_nm:g}/{emission_nm:g} nm"
    if isinstance(by_waves, ChannelRole):
        if by_name is not None and by_name is not by_waves:
            return (
                (),
                f"ambiguous: the name says {by_name.value}, {waves_txt} says {by_waves.value}",
            )
        return (by_waves,), f"wavelengths {waves_txt}"
    return (), f"wavelengths {waves_txt} fit neither role"


def _assign_nuclei(
    decided: dict[int, tuple[tuple[ChannelRole, ...], str]],
    channel_names: Mapping[int, str],
    waves: Mapping[int, tuple[float | None, float | None]],
) -> None:
    """Give :attr:`ChannelRole.NUCLEI` to the one nuclear-looking channel left without a role."""
    if any(ChannelRole.NUCLEI in roles for roles, _ in decided.values()):
        return  # set by the override
    found: list[tuple[int, str]] = []
    for cid, (roles, _) in decided.items():
        if roles:
            continue
        ex, em = waves.get(cid, (None, None))
        if _known(ex) and _known(em) and NUCLEAR_BAND.holds(ex, em):  # type: ignore[arg-type]
            found.append((cid, f"nuclear stain by wavelengths {ex:g}/{em:g} nm"))
        elif _NUCLEAR.search(channel_names[cid]):
            found.append((cid, "nuclear stain by name"))
    if len(found) == 1:
        cid, source = found[0]
        decided[cid] = ((ChannelRole.NUCLEI,), source)


def _forced_roles(
    channel_names: Mapping[int, str],
    index_path: Path,
    overrides: RoleOverrides,
) -> dict[int, tuple[ChannelRole, ...]]:
    listing = _plain_listing(channel_names)
    forced: dict[int, tuple[ChannelRole, ...]] = {}
    for raw_key, raw_role in overrides.items():
        try:
            roles = parse_role_override(raw_role)
        except ValueError as exc:
            raise PlateFormatError(f"{index_path}: {exc}") from None
        cid = _match_channel(raw_key, channel_names)
        if cid is None:
            raise PlateFormatError(
                f"{index_path}: channel_roles key {raw_key!r} matches no channel "
                f"(channels {listing})"
            )
        forced[cid] = roles
    return forced


def _check_roles(channels: tuple[Channel, ...], index_path: Path) -> None:
    hint = (
        "roles come from the wavelengths (pHluorin: excited 450-510 nm, read 490-570 nm; DsRed: "
        "excited 520-600 nm, read 560-650 nm), else from names (DsRed/mCherry/RFP/TRITC/Cy3 → "
        "dsred; pHluorin/GFP/FITC/488 → phluorin); set them with --channel-role NAME=ROLE "
        "(ROLE: dsred, phluorin, both, none; PHAGOFLOW_CHANNEL_ROLES for the services; "
        "channel_roles={name or id: role} in Python)"
    )
    listing = "; ".join(_describe(c) for c in channels) or "none"
    for role in ROLE_ORDER:
        holders = [c for c in channels if role in c.roles]
        if not holders:
            raise PlateFormatError(
                f"{index_path}: no channel has the {role.value} role. Channels: {listing}. {hint}"
            )
        if len(holders) > 1:
            names = ", ".join(repr(c.name) for c in holders)
            raise PlateFormatError(
                f"{index_path}: channels {names} all look like {role.value}. Channels: "
                f"{listing}. {hint}"
            )


def _describe(c: Channel) -> str:
    waves = ""
    if c.excitation_nm is not None or c.emission_nm is not None:
        waves = f" ex {_nm(c.excitation_nm)} / em {_nm(c.emission_nm)}"
    role = "+".join(r.value for r in c.roles) or "no role"
    return f"{c.channel_id}: {c.name!r}{waves} → {role} ({c.role_source})"


def _nm(value: float | None) -> str:
    return f"{value:g} nm" if value is not None else "?"


def _plain_listing(channel_names: Mapping[int, str]) -> str:
    return ", ".join(f"{i}: {channel_names[i]!r}" for i in sorted(channel_names)) or "none"


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
