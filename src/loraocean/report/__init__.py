"""Reports of a study run: paper-style tables, plots, routing heatmaps, selection overlap and
findings backed by paired tests.

    from loraocean.report import write_report
    md_path, html_path = write_report("runs/lite")
"""

from loraocean.report.build import write_report
from loraocean.report.stats import compare, holm, mcnemar_exact, mdd, paired_bootstrap, sign_flip_exact

__all__ = ["compare", "holm", "mcnemar_exact", "mdd", "paired_bootstrap", "sign_flip_exact", "write_report"]
