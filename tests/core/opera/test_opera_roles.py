"""Channel roles come from names (case-insensitive), never from channel order."""

from __future__ import annotations

from pathlib import Path

import pytest

from phagoflow.core.opera import ChannelRole, PlateFormatError
from phagoflow.core.opera.roles import assign_roles, infer_role, parse_role

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
    assert "1: 'DsRed', 2: 'Cy5'" in str(e.value)
