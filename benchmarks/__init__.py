"""Benchmark commands (not tests): wall-clock speed and fidelity of ClusCa against uncached sampling."""
