"""Benchmarks of convmem against the seed's flows and the raw drivers (``convmem bench``)."""
