"""Benchmarks: our policies side by side with the peer libraries (run `make bench`)."""
