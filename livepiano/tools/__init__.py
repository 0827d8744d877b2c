"""Tools around the instrument: benchmarks, the demo, rendering to audio, piano rolls, a
private JACK server."""
