"""The benchmarks of `livepiano bench`, one module each."""
