"""The review app's results folder on a run of a vendor export made with ``--channel-role``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phagoflow.embedded.run import run_plate
from phagoflow.review.results import ResultsFolder
from real_exports import EXPORTS, require

SONATA = next(e for e in EXPORTS if e.name == "harmony5_sonata_2022")


@pytest.mark.slow
def test_review_reads_the_export_with_the_roles_the_run_used(tmp_path: Path) -> None:
    export = require(SONATA)
    out = tmp_path / "out"
    run_plate(export, out, channel_roles={"Fluorescein (FITC)": "both"}, progress=False)
    results = ResultsFolder(out)  # no override given here: it comes from run.json
    assert sorted(results.fields) == ["r03c03f01p01", "r03c03f02p01"]
    channels = results.catalogue.channels
    assert [c.role_label for c in channels] == ["dsred+phluorin"]
    assert np.isfinite(results.catalogue.pixel_size_um)
