"""Benchmarks behind `make bench`; results go to BENCHMARKS.md."""
