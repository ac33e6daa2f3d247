"""A picklable stand-in for a decoder that crashes, in a module of its own: workers started by a forkserver
import it by name, and importing a test module there would drag in the whole test suite."""

import os
import signal


class CrashOnSound:
    """An audio frontend that kills its process (as a C decoder bug would) on any soundtrack."""

    def __call__(self, samples):
        os.kill(os.getpid(), signal.SIGSEGV)
