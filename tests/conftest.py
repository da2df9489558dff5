"""Shared fixtures: paths to the offline data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads():
    """Give every test module the thread count it found: the RecBole, implicit and scoring
    tests pin torch to one thread, and a model trained later would otherwise differ by
    float rounding depending on which modules ran before it."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module on small matrices (use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``): extra threads only add
    synchronisation, which dominates (and turns erratic) on a busy 2-core machine. The
    setting is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
