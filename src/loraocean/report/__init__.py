"""Reports of a study run: paper-style tables, plots, routing heatmaps, selection overlap and the
paper's claims tested with training seeds and test examples as units.

    from loraocean.report import write_report, write_leaderboard
    md_path, html_path = write_report("runs/lite")
    page, csv = write_leaderboard(["runs/lite", "runs/medium"], "leaderboard")
"""

from loraocean.report.build import write_report
from loraocean.report.leaderboard import write_leaderboard
from loraocean.report.stats import (Cell, Design, claim_test, compare, holm, mcnemar_exact, mdd, paired_bootstrap,
                                    sign_flip_exact)

__all__ = ["Cell", "Design", "claim_test", "compare", "holm", "mcnemar_exact", "mdd", "paired_bootstrap",
           "sign_flip_exact", "write_leaderboard", "write_report"]
