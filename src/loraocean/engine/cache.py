"""One model cache per process: base models by name, least recently used out under a memory bound.

`get(name)` hands out the cached base model (callers must not change it); `fresh(name)` hands out a
model a job may change: a private copy while the bound leaves room for one, else the cached model
itself. After every job the engine calls `settle()`, which drops any handed-out model whose
parameters changed (a fingerprint of names, shapes, dtypes and sums), so the next job gets a clean
one by reloading it; every load is counted in `loads`.

The bound is `$LORAOCEAN_CACHE_GB`, else half of the GPU's memory (CUDA) or of the machine's RAM.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict


def default_bound() -> int:
    if os.environ.get("LORAOCEAN_CACHE_GB"):
        return int(float(os.environ["LORAOCEAN_CACHE_GB"]) * 2**30)
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def size_of(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def fingerprint(model):
    """What a job must not change: parameter names, shapes, dtypes and per-tensor sums."""
    import torch

    params = list(model.named_parameters())
    with torch.no_grad():
        sums = torch.stack([p.detach().double().sum() for _, p in params]).cpu() if params else None
    return [(n, tuple(p.shape), str(p.dtype)) for n, p in params], sums


def _same(a, b) -> bool:
    import torch

    return a[0] == b[0] and (a[1] is None or torch.equal(a[1], b[1]))


class ModelCache:
    def __init__(self, max_bytes: int | None = None, loader=None):
        self._max_bytes = max_bytes
        self.loader = loader             # name -> (model, tokenizer); default loraocean.models.load
        self.models: OrderedDict[str, tuple] = OrderedDict()   # name -> (model, tokenizer, fingerprint)
        self.loads = 0
        self._lent: set[str] = set()

    @property
    def max_bytes(self) -> int:
        if self._max_bytes is None:
            self._max_bytes = default_bound()
        return self._max_bytes

    def used(self) -> int:
        return sum(size_of(m) for m, _, _ in self.models.values())

    def get(self, name: str):
        """(model, tokenizer), loaded once while it stays in the cache. Do not change it."""
        if name in self.models:
            self.models.move_to_end(name)
        else:
            largest = max((size_of(m) for m, _, _ in self.models.values()), default=0)
            while self.models and self.used() + largest > self.max_bytes:
                self.models.popitem(last=False)  # least recently used out
            if self.loader is None:
                from loraocean.models import load

                self.loader = load
            model, tokenizer = self.loader(name)
            self.models[name] = (model, tokenizer, fingerprint(model))
            self.loads += 1
        self._lent.add(name)
        model, tokenizer, _ = self.models[name]
        return model, tokenizer

    def fresh(self, name: str):
        """(model, tokenizer) a job may change: a private copy while there is room for one."""
        model, tokenizer = self.get(name)
        if self.used() + size_of(model) <= self.max_bytes:
            return copy.deepcopy(model), tokenizer
        return model, tokenizer  # memory is tight: `settle` drops it if the job changed it

    def settle(self) -> None:
        """After a job: drop every model it was handed that no longer matches its fingerprint."""
        for name in self._lent:
            if name in self.models:
                model, _, print_ = self.models[name]
                model.eval()
                if not _same(fingerprint(model), print_):
                    del self.models[name]
        self._lent.clear()

    def clear(self) -> None:
        self.models.clear()
        self._lent.clear()


CACHE = ModelCache()  # the one cache of this process
