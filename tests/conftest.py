"""Shared fixtures. Everything runs offline; each test session gets its own Prefect home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports prefect or huggingface: no analytics, no hub, a private home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="forge-prefect-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def con():
    """A fresh in-memory store with every migration applied."""
    from forge import db

    c = db.connect(":memory:")
    yield c
    c.close()


@pytest.fixture(scope="session")
def em():
    """The shipped Experiment Model."""
    from forge.experiment_model import ExperimentModel

    return ExperimentModel.load()
