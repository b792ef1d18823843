"""Reports of a study run: paper-style tables, plots, routing heatmaps, selection overlap and
findings backed by paired tests.

    from loraocean.report import write_report
    md_path, html_path = write_report("runs/lite")
"""

from loraocean.report.build import write_report
from loraocean.report.stats import compare, mcnemar_exact, paired_bootstrap

__all__ = ["compare", "mcnemar_exact", "paired_bootstrap", "write_report"]
