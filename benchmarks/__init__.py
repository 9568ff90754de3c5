"""Benchmarks: write JSON + PNG under benchmarks/results/. Not tests."""
