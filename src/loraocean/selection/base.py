"""What every selection strategy shares: the `Choice` it returns, the `Selection` result saved to
disk, the base model handle, and the strategy registry.

A strategy is a small class with a `select(target_task, candidates, model, k, examples)` method that
returns EVERY candidate ranked best first as `Choice`s; the first k are the chosen experts. The
`@strategy(name, needs=..., order=...)` decorator registers it and says what it reads besides the
candidates' names, so that the code running it names no strategy:
- `needs`: "examples" (K target train examples are loaded for it), "oracle" (it reads the target's
  labels: its selections are marked `uses_target_labels`), "library" (it reads the LoRAs' weights);
- `order`: its place in `--strategy all` (lower first);
- an instance may name another strategy in `reuses` and take that strategy's ranking through its
  `base_ranking` attribute when the same run has already computed it (diversity over ppl).
Other packages add strategies through the `loraocean.strategies` entry-point group (a module that
applies the decorator when imported); a name is registered once.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from loraocean.artifacts import package_versions, write_json_atomic
from loraocean.errors import ConfigError, DataError
from loraocean.models import name_of
from loraocean.plugins import Registry, source_of

ENTRY_POINT_GROUP = "loraocean.strategies"
NEEDS = ("examples", "oracle", "library")


@dataclass
class Choice:
    """One ranked candidate: the library task its LoRA was trained on, the strategy's score for it
    (`None` when the strategy has none for this candidate) and a one-line reason."""

    task: str
    score: float | None
    reason: str
    adapter: str = ""  # the LoRA folder

    def to_dict(self) -> dict:
        return asdict(self)


class ModelRef:
    """A base model by name, loaded on first use and then kept, so that every strategy of one run
    shares one copy. Pass `model`/`tokenizer` to reuse an already loaded pair."""

    def __init__(self, name: str, model=None, tokenizer=None):
        self.name = name
        self._pair = (model, tokenizer) if model is not None else None

    @classmethod
    def of(cls, model, tokenizer) -> "ModelRef":
        return cls(name_of(model) or "", model, tokenizer)

    def loaded(self):
        """(model, tokenizer), loading the model the first time."""
        if self._pair is None:
            from loraocean.models import load

            self._pair = load(self.name)
        return self._pair


class Selector(Protocol):
    name: str                 # set by @strategy
    needs: frozenset[str]     # set by @strategy (see the module docstring)
    order: int                # set by @strategy
    uses_target_labels: bool  # set by @strategy: "oracle" in needs
    higher_is_better: bool
    # Optional: `estimate_seconds(scoring, shots)`, a staticmethod giving the strategy's rough cost
    # for a study's time estimate, `scoring` being the seconds to score one example with every
    # candidate LoRA; a strategy without it is taken as free (0.1 s). Optional on an instance:
    # `reuses` (a strategy name) and `base_ranking` (see the module docstring).

    def select(self, target_task: str, candidates: list, model: ModelRef, k: int,
               examples: list) -> list[Choice]:
        ...


STRATEGIES = Registry("selection strategy", ENTRY_POINT_GROUP, hint="`loraocean select --help` (or `all`)")


def strategy(name: str, *, needs: tuple[str, ...] = (), order: int = 100):
    """Class decorator adding a strategy to the registry under `name`, with what it `needs`
    ("examples", "oracle", "library") and its `order` in `--strategy all`."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ConfigError(f"selection strategy {name!r}: unknown needs {sorted(unknown)}; use {NEEDS}")

    def deco(cls):
        cls.name = name
        cls.needs = frozenset(needs)
        cls.order = order
        cls.uses_target_labels = "oracle" in needs
        STRATEGIES.add(name, cls, source_of(cls))
        return cls

    return deco


def all_strategies() -> dict[str, Callable[..., Selector]]:
    """Every strategy class by name (ours and those of installed packages)."""
    return STRATEGIES.everything()


def ordered(names=None) -> list[str]:
    """`names` (default: every strategy) in their declared order (`--strategy all`)."""
    known = all_strategies()
    names = list(known) if names is None else list(names)
    return sorted(names, key=lambda n: (getattr(known.get(n), "order", 100), n))


def estimate_seconds(name: str, scoring: float, shots: int) -> float:
    """A strategy's rough cost for a study's time estimate (see `Selector`)."""
    estimate = getattr(all_strategies().get(name), "estimate_seconds", None)
    return 0.1 if estimate is None else float(estimate(scoring, shots))


def get_strategy(name: str, **options) -> Selector:
    """A strategy instance by name; `options` are given to the strategies that take them (others
    ignore them), e.g. seed, map_file, base, pool."""
    import inspect

    cls = STRATEGIES.lookup(name)
    accepted = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


@dataclass
class Selection:
    """The result of one strategy for one target, saved as JSON so a study can reuse it."""

    strategy: str
    target: str
    model: str
    k: int
    seed: int
    shots: int
    data_hash: str              # of the target examples the strategy saw
    ranking: list[Choice]       # every candidate, best first
    higher_is_better: bool
    uses_target_labels: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    library: str = ""
    excluded: dict[str, dict] = field(default_factory=dict)  # contaminated candidates left out: overlap
    unchecked: list[str] = field(default_factory=list)       # candidates whose data could not be checked
    created: str = ""
    versions: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> list[str]:
        return [c.task for c in self.ranking[: self.k]]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["chosen"] = self.chosen
        return out

    @classmethod
    def from_dict(cls, row: dict) -> "Selection":
        row = {k: v for k, v in row.items() if k != "chosen"}
        row["ranking"] = [Choice(**c) for c in row["ranking"]]
        return cls(**row)

    def stamp(self) -> "Selection":
        """Record the creation time and package versions (once)."""
        if not self.created:
            self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if not self.versions:
            self.versions = package_versions()
        return self

    def save(self, path: str | Path) -> Path:
        """Write atomically as JSON (stamped with time and package versions)."""
        return write_json_atomic(path, self.stamp().to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(path, f"not a saved selection ({err})",
                            fix="write it with `loraocean select --json PATH`") from None
