"""Channel roles come from wavelengths, else names (case-insensitive), never from channel order."""

from __future__ import annotations

from pathlib import Path

import pytest

from phagoflow.core.opera import ChannelRole, PlateFormatError
from phagoflow.core.opera.roles import (
    assign_roles,
    infer_role,
    parse_channel_roles,
    parse_role,
    recorded_channel_roles,
    role_from_wavelengths,
)

D, P = ChannelRole.DSRED, ChannelRole.PHLUORIN


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("DsRed", D),
        ("dsred", D),
        ("DSRED2", D),
        ("DsRed-Express", D),
        ("red", D),
        ("Rosella red", D),
        ("mCherry", D),
        ("TagRFP", D),
        ("mRFP1", D),
        ("tdTomato", D),
        ("Alexa 568", D),
        ("pHluorin", P),
        ("PHLUORIN", P),
        ("SE-pHluorin", P),
        ("GFP", P),
        ("EGFP", P),
        ("AcGFP1", P),
        ("green", P),
        ("Alexa 488", P),
        ("Alexa Fluor 488", P),
        ("AF488", P),
        ("FITC", P),
        ("pHluorin (green)", P),
        ("Brightfield", None),
        ("Hoechst 33342", None),
        ("DAPI", None),
        ("Alexa 647", None),
        ("Far Red", None),
        ("far-red", None),
        ("Infrared", None),
        ("Filtered", None),  # "red" inside a word is not a colour
        ("DsRed-GFP merge", None),  # both: ambiguous
        ("14880", None),
        ("", None),
    ],
)
def test_infer_role(name: str, role: ChannelRole | None) -> None:
    assert infer_role(name) is role


def test_phluorin_never_matches_red() -> None:
    for name in ("pHluorin", "phluorin", "PHLUORIN", "ratiometric pHluorin"):
        assert infer_role(name) is P


@pytest.mark.parametrize(("value", "role"), [("dsred", D), ("DsRed", D), (" pHluorin ", P), (P, P)])
def test_parse_role(value: str | ChannelRole, role: ChannelRole) -> None:
    assert parse_role(value) is role


def test_parse_role_rejects_other_names() -> None:
    with pytest.raises(ValueError, match="unknown channel role 'gfp'"):
        parse_role("gfp")


def test_assign_roles_ignores_order_and_extra_channels() -> None:
    index = Path("/plates/P1/Images/Index.xml")
    channels = assign_roles({1: "Brightfield", 2: "pHluorin", 3: "DsRed"}, index)
    assert [(c.channel_id, c.role) for c in channels] == [(1, None), (2, P), (3, D)]


def test_assign_roles_override_wins_over_inference() -> None:
    index = Path("Index.xml")
    channels = assign_roles(
        {1: "DsRed", 2: "mCherry", 3: "GFP"}, index, channel_roles={"mcherry": "dsred"}
    )
    assert [c.role for c in channels] == [None, D, P]  # inferred DsRed gives way to the override
    channels = assign_roles({1: "A", 2: "B"}, index, channel_roles={"2": D, 1: "phluorin"})
    assert [c.role for c in channels] == [P, D]


def test_assign_roles_error_lists_names_and_file() -> None:
    with pytest.raises(
        PlateFormatError, match=r"Index\.xml: no channel has the phluorin role"
    ) as e:
        assign_roles({1: "DsRed", 2: "Cy5"}, Path("/x/Index.xml"))
    assert "1: 'DsRed' → dsred (name); 2: 'Cy5' → no role (name matches neither role)" in str(
        e.value
    )


# -- names and wavelengths of real Harmony channels ----------------------------------------------
@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("488 long", None),  # excited at 488 nm, long-pass emission: not pHluorin
        ("488 650", None),
        ("Alexa 488 Em 650", None),
        ("Alexa 546", D),
        ("TRITC", D),
        ("Cy3", D),
        ("Fluorescein (FITC)", P),
        ("Cy5", None),
    ],
)
def test_infer_role_vendor_names(name: str, role: ChannelRole | None) -> None:
    assert infer_role(name) is role


@pytest.mark.parametrize(
    ("ex", "em", "role"),
    [
        (488, 522, P),
        (475, 525, P),
        (561, 599, D),
        (546, 590, D),
        (488, 599, None),  # '488 long' of the 2021 Phenix plate
        (488, 706, None),  # '488 650' / 'Alexa 488 Em 650'
        (640, 706, None),  # Alexa 647
        (405, 456, None),  # Hoechst: no Rosella role
        (740, 0, None),  # bright field: emission 0
        (None, 522, "unknown"),
        (488, None, "unknown"),
    ],
)
def test_role_from_wavelengths(ex: float | None, em: float | None, role: object) -> None:
    assert role_from_wavelengths(ex, em) == role


def test_wavelengths_win_over_misleading_names() -> None:
    names = {1: "Ch-A", 2: "Ch-B", 3: "488 long"}
    waves = {1: (561.0, 599.0), 2: (488.0, 522.0), 3: (488.0, 599.0)}
    channels = assign_roles(names, Path("Index.xml"), wavelengths=waves)
    assert [c.roles for c in channels] == [(D,), (P,), ()]
    assert channels[0].role_source == "wavelengths 561/599 nm"


def test_name_and_wavelengths_disagreeing_is_refused_with_a_listing() -> None:
    names = {1: "DsRed", 2: "GFP"}
    waves = {1: (488.0, 522.0), 2: (488.0, 522.0)}
    with pytest.raises(PlateFormatError) as e:
        assign_roles(names, Path("/p/Index.xml"), wavelengths=waves)
    msg = str(e.value)
    assert "/p/Index.xml" in msg
    assert "1: 'DsRed' ex 488 nm / em 522 nm → no role (ambiguous: the name says dsred" in msg
    assert "--channel-role NAME=ROLE" in msg


def test_override_both_none_and_nuclei() -> None:
    names = {1: "FITC", 2: "Hoechst 33342", 3: "GFP"}
    channels = assign_roles(
        names, Path("x"), channel_roles={"FITC": "both", "GFP": "none", "2": "nuclei"}
    )
    assert [c.roles for c in channels] == [(D, P), (ChannelRole.NUCLEI,), ()]
    assert channels[0].role_label == "dsred+phluorin"


def test_nuclear_channel_inferred_only_when_unique() -> None:
    waves = {1: (561.0, 599.0), 2: (488.0, 522.0), 3: (405.0, 456.0)}
    names = {1: "a", 2: "b", 3: "c"}
    channels = assign_roles(names, Path("x"), wavelengths=waves)
    assert channels[2].roles == (ChannelRole.NUCLEI,)
    names = {1: "DsRed", 2: "GFP", 3: "DAPI", 4: "Hoechst"}
    channels = assign_roles(names, Path("x"))
    assert [c.roles for c in channels[2:]] == [(), ()]  # two candidates: neither


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            ["Alexa 568=dsred", "Alexa 488=phluorin"],
            {"Alexa 568": "dsred", "Alexa 488": "phluorin"},
        ),
        (["Alexa 568=dsred,Alexa 488=phluorin"], {"Alexa 568": "dsred", "Alexa 488": "phluorin"}),
        (["405ex, 570-630-em)=none"], {"405ex, 570-630-em)": "none"}),
        (["1=both"], {"1": "both"}),
        ([], {}),
    ],
)
def test_parse_channel_roles(items: list[str], expected: dict[str, str]) -> None:
    assert parse_channel_roles(items) == expected


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("Alexa 568", "expects NAME=ROLE, got 'Alexa 568'"),
        ("=dsred", "expects NAME=ROLE"),
        ("Alexa 568=blue", "unknown channel role 'blue'"),
    ],
)
def test_parse_channel_roles_rejects(item: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_channel_roles([item])


def test_recorded_roles_reproduce_the_assignment() -> None:
    names = {1: "FITC", 2: "Brightfield", 3: "Hoechst"}
    first = assign_roles(names, Path("x"), channel_roles={"FITC": "both"})
    again = assign_roles(
        names, Path("x"), channel_roles=recorded_channel_roles(c.as_record() for c in first)
    )
    assert (
        [c.roles for c in again] == [c.roles for c in first] == [(D, P), (), (ChannelRole.NUCLEI,)]
    )
