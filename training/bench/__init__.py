"""`make bench`: streaming accuracy and cost of the board daemon on long test streams (docs/BENCHMARKS.md)."""
