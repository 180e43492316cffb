"""Shared fixtures: where the third-party capture corpus is, and the shipped captures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PCAPS = REPO / "pcaps"


def _corpus_path() -> Path:
    configured = os.environ.get("INSPECTOR_CORPUS")
    if configured:
        return Path(configured)
    return REPO.parent / "shared" / "corpus"


CORPUS = _corpus_path()


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The third-party corpus (../shared/corpus, or $INSPECTOR_CORPUS); skips when absent."""
    if not (CORPUS / "INVENTORY.tsv").is_file():
        pytest.skip(f"capture corpus not found at {CORPUS} (set INSPECTOR_CORPUS); "
                    "the shipped captures in pcaps/ cover the same paths")
    return CORPUS
