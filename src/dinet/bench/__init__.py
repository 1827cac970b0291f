"""Benchmarks that write their results to files (``dinet bench``)."""
