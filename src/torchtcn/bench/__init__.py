"""Benchmarks behind ``torchtcn bench`` (one module each)."""
