"""Reports of a study run: paper-style tables, plots, routing heatmaps, selection overlap and
findings backed by paired tests.

    from loraocean.report import write_report, write_leaderboard
    md_path, html_path = write_report("runs/lite")
    page, csv = write_leaderboard(["runs/lite", "runs/medium"], "leaderboard")
"""

from loraocean.report.build import write_report
from loraocean.report.leaderboard import write_leaderboard
from loraocean.report.stats import compare, holm, mcnemar_exact, mdd, paired_bootstrap, sign_flip_exact

__all__ = ["compare", "holm", "mcnemar_exact", "mdd", "paired_bootstrap", "sign_flip_exact", "write_leaderboard",
           "write_report"]
