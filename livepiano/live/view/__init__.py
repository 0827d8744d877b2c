"""The stage view: a page in a browser that shows a play session as it goes (the two players'
notes on a scrolling piano roll, the duet's turn, the figures) and steers its knobs.

    listener thread --heard--+                              server process (HTTP, pages)
    scheduler thread --sent--+--> Stage (bounded, lossy) --frames, a pipe never waited on-->
    engine thread <-- snapshot (loop.call); Knobs.set/press <-- reader thread <-- changes

``stage``: the hand-off from the real-time threads and the view thread's frames (in the
session's process); ``process``: the session's side of the server process (``serve`` starts
both); ``server`` and ``pages``: the server process itself, and the page it serves
(``page/``, shipped inside the package).
"""
