"""Generic fixtures shared by the whole suite (keep it small: no framework imports here)."""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, seeded generator per test, so that tests do not depend on their order."""
    return np.random.default_rng(20251028)
