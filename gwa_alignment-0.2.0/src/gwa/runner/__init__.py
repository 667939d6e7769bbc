"""The training runner behind ``gwa train`` and ``gwa demo``: datasets, label noise, models, and one epoch
loop (:mod:`gwa.runner.loop`) shared by the torch and jax backends.

Heavy dependencies (torch, jax, sklearn, timm) are imported inside the functions that need them.
"""
