"""The analysis side of gwa: reads run directories only (never models or frameworks).

- :mod:`gwa.report.report`: ``gwa report``, figures and a self-contained HTML page (:func:`write_report`).
- :mod:`gwa.report.flag`: ``gwa flag``, training samples ranked as likely mislabeled (:func:`flag_samples`).
- :mod:`gwa.report.compare`: ``gwa compare``, runs ranked by alignment next to their test accuracy.

matplotlib (``pip install 'gwa-alignment[plot]'``) is imported only when a figure is drawn.
"""
