import numba
import numpy as np
import pytest


def pytest_configure(config):
    if numba.config.DISABLE_JIT:
        # With NUMBA_DISABLE_JIT=1 the kernels run as Python on NumPy scalars, which warn on
        # overflow where compiled code follows IEEE arithmetic silently (and where loopprop's
        # own checks then report the Inf or NaN). pyproject.toml makes RuntimeWarnings errors.
        config.addinivalue_line("filterwarnings",
                                "ignore:overflow encountered:RuntimeWarning")
        config.addinivalue_line("filterwarnings",
                                "ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
