"""``gwa bench``: the benchmark grid of stop criteria and mislabel scores against their baselines.

Depends on the runner (it trains the grid) and the report (it reads run directories and flags samples).
"""
