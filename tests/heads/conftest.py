"""Head-scan tests run torch on one thread.

On the shared 2-core machine torch's two OpenMP threads spin-wait for each other whenever
another process holds a core, which made these small forwards 4x slower than one thread; the
setting is restored after each test so the rest of the suite is unaffected.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
