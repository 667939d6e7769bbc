"""Experiments: datasets, label noise, models, the training runner (``gwa train``), the demo and benchmarks.

Heavy dependencies (torch, sklearn, timm) are imported inside the functions that need them.
"""
