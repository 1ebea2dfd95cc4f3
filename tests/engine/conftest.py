"""Shared engine fixtures: the digits loaded once per session (tests must not mutate them)."""

from __future__ import annotations

import pytest

from engine.data import DataSplits, load_data


@pytest.fixture(scope="session")
def digits16() -> DataSplits:
    """Digits at 16 px: small enough that CIFAR-stem networks train in seconds on 2 cores."""
    return load_data("digits", input_size=16)
