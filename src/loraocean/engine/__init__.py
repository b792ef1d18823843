"""The job engine shared by `loraocean run` and `loraocean library build`.

A caller describes its work as `Work` items (a module-level function and its arguments, the names
of the items it needs first, the base model it loads, its estimated cost and its resources) and
hands them to `execute` with one executor:

- `inprocess`: one after another in this process (workers=1);
- `pool`: N local worker processes, each pinned to one GPU when there are GPUs
  (`CUDA_VISIBLE_DEVICES`), jobs of one base model sent to the worker that already holds it;
- `ray`: one Ray task per item with the item's CPUs/GPUs/memory, retried when its worker is lost.

Scheduling is by dependency: an item starts as soon as the items it needs have finished. Every
worker process keeps one `ModelCache` (least recently used out under a memory bound, loads
counted). The driver writes the one failure record (`RunFolder.failed`), checks each item's
artifact after it reports success, and keeps a progress file in the run folder.

The engine sits below `library` and `study` (it imports only `artifacts`, `errors`, `models`).
"""

from loraocean.engine.cache import CACHE, ModelCache
from loraocean.engine.folder import RunFolder
from loraocean.engine.schedule import EXECUTORS, Report, execute
from loraocean.engine.work import Outcome, Resources, Work

__all__ = ["CACHE", "EXECUTORS", "ModelCache", "Outcome", "Report", "Resources", "RunFolder", "Work",
           "execute"]
