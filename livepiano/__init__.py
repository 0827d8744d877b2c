"""livepiano: a real-time MIDI improvisation instrument built on Performance RNN."""

__version__ = "0.1.0"


class LivepianoError(Exception):
    """An error the user can cause and fix (a bad file, an unknown port, a bad setting).

    The message is one sentence saying what is wrong and what to do; the command line
    prints it without a traceback and exits non-zero."""
