"""Studies: the YAML config, the job graph (LoRAs -> selection -> MoE fit -> evaluation), the
executors (local, Ray) and the results store.

    from loraocean.study import load_config, run_study, query
    cfg = load_config("studies/lite.yaml", quick=True)
    run_study(cfg, "runs/lite")
    print(query("runs/lite", ["selection=manual"]))
"""

from loraocean.study.config import StudyConfig, load_config, parse
from loraocean.study.jobs import Job, expand
from loraocean.study.locate import find_study
from loraocean.study.runner import Context, Summary, plan, run_study
from loraocean.study.store import collect, query

__all__ = ["Context", "Job", "StudyConfig", "Summary", "collect", "expand", "find_study",
           "load_config", "parse", "plan", "query", "run_study"]
