"""A picklable stand-in for a decoder that hangs (an endless loop in C on a corrupt file), in a module of its
own so that workers started by a forkserver can import it by name."""

import time


class HangOnSound:
    """An audio frontend that never returns on any soundtrack."""

    def __call__(self, samples):
        while True:
            time.sleep(1)
