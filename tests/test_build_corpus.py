"""The shipped corpus is exactly what build_corpus makes from Debian's SWORD packages."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from scaling_cli.data import build_corpus
from scaling_cli.data.sources import EMBEDDED_CORPUS


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("diatheke") is None, reason="needs diatheke sword-text-web sword-text-sparv")
def test_rebuild_matches_the_shipped_table(tmp_path):
    rebuilt = build_corpus.build(tmp_path / "bible.parquet")
    shipped = pd.read_parquet(EMBEDDED_CORPUS)
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), shipped)
