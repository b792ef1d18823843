"""Tasks: the unified `Example` / `TaskSpec` format, the catalog, sources, prompts, extraction."""

from loraocean.tasks.catalog import CATALOG, get_task, register
from loraocean.tasks.example import SPLITS, Example, SplitPolicy, TaskSpec
from loraocean.tasks.extract import extract
from loraocean.tasks.load import data_hash, load_split
from loraocean.tasks.prompts import Rendered, render, template_name

__all__ = ["CATALOG", "SPLITS", "Example", "Rendered", "SplitPolicy", "TaskSpec", "data_hash",
           "extract", "get_task", "load_split", "register", "render", "template_name"]
