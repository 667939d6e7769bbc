"""Baselines gwa is measured against: validation-free stop signals and per-sample mislabel scores.

- :mod:`gwa.baselines.labelwave`: LabelWave (Yuan et al., ICLR 2024), prediction changes on the training set.
- :mod:`gwa.baselines.disparity`: Gradient Disparity (Forouzesh & Thiran, ECML-PKDD 2021); needs torch.
- :mod:`gwa.baselines.detection`: per-sample mislabel scores (alignment, loss, AUM, EL2N, data-map confidence)
  and their AUROC/AUPRC against a noise mask.

Nothing heavy is imported here: torch only inside :func:`gwa.baselines.disparity.gradient_disparity`.
"""
