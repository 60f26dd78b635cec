"""loopprop/interrupt.py: the epoch runs in the caller's thread; Ctrl-C sets its stop flag at
once (a watcher thread on the signal's wakeup descriptor) and is raised when it returns.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from loopprop import interrupt


def test_the_epoch_runs_in_the_callers_thread():
    """An epoch in a worker thread ran beside a second OpenMP team (loopprop's MNIST-sized
    epoch 35–37 ms after PyTorch used the main thread, 27 ms in it); a worker kept alive made
    PyTorch's parallel regions in the same process 2× slower."""
    stop = np.zeros(1, np.int64)
    assert interrupt.run(threading.current_thread, stop) is threading.current_thread()


def test_ctrl_c_sets_stop_at_once_and_is_raised_after_the_epoch_with_its_result():
    """The compiled loop reads ``stop[0]`` before each step: here a Python loop in its place,
    which must see the flag while it runs, and must not be cut short by the exception."""
    stop = np.zeros(1, np.int64)

    def epoch():
        os.kill(os.getpid(), signal.SIGINT)
        steps = 0
        deadline = time.monotonic() + 10.0
        while not stop[0] and time.monotonic() < deadline:
            time.sleep(0.001)  # the handler runs meanwhile: it must not raise in here
            steps += 1
        return ("stopped" if stop[0] else "never stopped", steps)

    with pytest.raises(interrupt.Interrupted) as caught:
        interrupt.run(epoch, stop)
    assert caught.value.result[0] == "stopped"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert signal.set_wakeup_fd(-1) == -1  # and no wakeup descriptor left behind


def test_an_epoch_without_ctrl_c_returns_its_value_and_leaves_the_flag():
    stop = np.zeros(1, np.int64)
    assert interrupt.run(lambda: 42, stop) == 42
    assert stop[0] == 0


def test_errors_reach_the_caller_and_the_handler_is_restored():
    stop = np.zeros(1, np.int64)

    def fails():
        raise ValueError("inside the epoch")

    with pytest.raises(ValueError, match="inside the epoch"):
        interrupt.run(fails, stop)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
