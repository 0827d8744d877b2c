"""The stage view: a page in a browser that shows a play session as it goes (the two players'
notes on a scrolling piano roll, the duet's turn, the figures) and steers its knobs.

    listener thread --heard--+                            +--> page (server-sent events)
    scheduler thread --sent--+--> Stage (bounded, lossy) --+
    engine thread <-- snapshot (loop.call), knob changes (Knobs.set) <-- page (POST)

``stage`` holds the hand-off from the real-time threads and makes the frames; ``server``
serves the page (shipped in ``page/``) and the frames over HTTP, from threads of its own.
``serve`` starts both for a session or a benchmark.
"""

from __future__ import annotations

from livepiano.live.view.server import ViewServer, serve
from livepiano.live.view.stage import Stage

__all__ = ["Stage", "ViewServer", "serve"]
