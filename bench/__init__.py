"""Benchmarks; each records its command, the machine and its numbers in bench/RESULTS.md."""
