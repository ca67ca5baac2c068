import os
import sys

import pytest

# The helpers the multi-process tests run in spawned children live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))

import shmbus  # noqa: E402


@pytest.fixture
def path(tmp_path):
    """A fresh bus path in this test's own directory."""
    return str(tmp_path / "test.bus")


@pytest.fixture
def bus(path):
    return shmbus.Bus.create(path, capacity=1 << 16)
