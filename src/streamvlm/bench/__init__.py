"""Efficiency benchmark: latency and memory per second of stream for every cache policy."""
