"""Commands around the instrument: benchmarks, the demo, rendering and plots."""
