"""loopprop/interrupt.py: where an epoch runs, and Ctrl-C in either place.

A long epoch runs in one long-lived worker thread (the main thread waits and takes Ctrl-C); an
epoch the previous one says is short runs in the main thread under a SIGINT handler that only
notes the key, raised once the epoch has ended.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

from loopprop import interrupt


def test_long_epochs_share_one_worker_thread():
    """A new thread per epoch also meant a new OpenMP team per ``fit`` (0.5 ms a call): two
    epochs now run on the same worker, which is not the caller."""
    stop = np.zeros(1, np.int64)
    first = interrupt.run(threading.current_thread, stop)
    second = interrupt.run(threading.current_thread, stop)
    assert first is second and first is not threading.current_thread()


def test_short_epoch_runs_here():
    stop = np.zeros(1, np.int64)
    assert interrupt.run(threading.get_ident, stop, short=True) == threading.get_ident()


def test_ctrl_c_during_a_short_epoch_is_raised_after_it_with_its_result():
    """The epoch is not cut short (its result is whole) and the key is not lost."""
    stop = np.zeros(1, np.int64)
    steps = []

    def epoch():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(3):  # the handler runs meanwhile; it must not raise in here
            time.sleep(0.01)
            steps.append(1)
        return ("result", len(steps))

    with pytest.raises(interrupt.Interrupted) as caught:
        interrupt.run(epoch, stop, short=True)
    assert caught.value.result == ("result", 3)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_errors_of_either_path_reach_the_caller():
    stop = np.zeros(1, np.int64)

    def fails():
        raise ValueError("inside the epoch")

    for short in (False, True):
        with pytest.raises(ValueError, match="inside the epoch"):
            interrupt.run(fails, stop, short=short)
