"""Tasks: the unified `Example` / `TaskSpec` format, the catalog, sources, prompts, extraction."""

from loraocean.tasks.catalog import CATALOG, CATALOG_40, get_task, portable_ref, register, same_data
from loraocean.tasks.example import SPLITS, Example, SplitPolicy, TaskSpec, data_hash
from loraocean.tasks.extract import extract, references
from loraocean.tasks.load import load_split
from loraocean.tasks.prompts import Rendered, render, template_name

__all__ = ["CATALOG", "CATALOG_40", "SPLITS", "Example", "Rendered", "SplitPolicy", "TaskSpec", "portable_ref",
           "data_hash", "extract", "get_task", "load_split", "references", "register", "render",
           "same_data", "template_name"]
