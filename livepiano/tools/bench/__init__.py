"""The benchmarks: ``livepiano bench WHICH``.

Each benchmark is a module of this package with a function ``bench(args) -> dict``, named in
``BENCHES``; the command
prints a readable report; with ``--json`` the report goes to stderr and stdout holds one line,
the dict as JSON.
Arguments shared by the benchmarks are declared in ``add_arguments``. This module imports
only the standard library and the settings schema at the top, so building the command line
stays cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys

from livepiano.settings.choices import REALTIME
from livepiano.settings.schema import DUET, SCHEMA


def add_arguments(p) -> None:
    from livepiano.settings.choices import finite

    p.add_argument("--model", default=None,
                   help="exported .onnx model "
                        "(default: $LIVEPIANO_MODEL or models/performance_rnn.onnx)")
    p.add_argument("--steps", type=int, default=3000,
                   help="timed model steps after warm-up (model; at least 2000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (model)")
    p.add_argument("--rt", action="store_true",
                   help="time the steps under SCHED_FIFO where allowed, to separate the model's "
                        "own latency from other processes' interference (model)")
    p.add_argument("--load", action="store_true",
                   help="a busy loop on the other core while measuring (timing)")
    p.add_argument("--realtime", choices=REALTIME, default=SCHEMA["realtime"].default,
                   help="scheduler timing mechanism, as `play --realtime` (timing)")
    p.add_argument("--deadlines", type=int, default=2000,
                   help="scheduler deadlines to measure (timing; at least 2000)")
    p.add_argument("--changes", type=int, default=200,
                   help="knob changes to measure (knobs; at least 200)")
    p.add_argument("--wait", type=finite, default=DUET["wait"].default,
                   help="silence that ends a call, seconds (duet; default: %(default)s)")
    p.add_argument("--calls", type=int, default=21,
                   help="held-out calls to play (duet; at least 20)")
    p.add_argument("--data", default=None, metavar="CACHE_OR_MIDI_DIR",
                   help="cut the calls from this token cache's or MAESTRO folder's test split "
                        "(duet; default: the MAESTRO test-split excerpts in tests/data)")
    p.add_argument("--minutes", type=finite, default=10.0,
                   help="how long the session lasts (soak; default: 10)")
    p.add_argument("--view", action="store_true",
                   help="serve the stage view during the run and start measuring once a page "
                        "has opened it: its cost, beside a run without (timing, knobs)")
    p.add_argument("--via", choices=("cc", "view"), default="cc",
                   help="how the knob changes arrive: a CC through the listener, or posted to "
                        "the stage view as its page does (knobs; default: %(default)s)")
    p.add_argument("--view-port", type=int, default=8765,
                   help="the view's port for --view (default: %(default)s; 0: any free one)")
    from livepiano.tools.bench import ensemble, music

    music.add_arguments(p)
    ensemble.add_arguments(p)
    p.add_argument("--json", action="store_true",
                   help="stdout holds the figures alone, as one line of JSON (the report "
                        "goes to stderr)")


# Each benchmark lives in its own module of this package, as a function ``bench(args) -> dict``;
# it is imported only when asked for, so the command line stays cheap to build.
BENCHES = ("model", "timing", "duet", "knobs", "soak", "music", "ensemble")


def run(which: str, args) -> int:
    from livepiano import LivepianoError

    if which not in BENCHES:
        raise LivepianoError(f"no benchmark called {which!r}; "
                             f"pick one of {', '.join(sorted(BENCHES))}.")
    if not getattr(args, "json", False):
        importlib.import_module(f"{__name__}.{which}").bench(args)
        return 0
    # stdout holds the JSON object alone; the readable report goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        result = importlib.import_module(f"{__name__}.{which}").bench(args)
    print(json.dumps(result), flush=True)
    return 0


