"""The study config: a YAML file read into plain dataclasses, validated with errors that name the
file, line and YAML path of the bad value (e.g. ``studies/lite.yaml, line 14, methods[2].name``).

    name: lite
    models: [smollm2-135m]
    tasks:
      targets: [bb_intent_recognition]          # tasks the MoE methods are fitted and scored on
      pool: [bb_social_iqa, bb_snarks, ...]     # candidate experts (one library LoRA each)
    library: {preset: lite, seed: 0}            # a preset of both the library and the MoE fits
    methods:                                    # names in the loraocean.moe registry
      - METHOD                                  # fitted on each strategy's experts (+ its own
                                                #   default_selection), or a reference (as it is)
      - {name: METHOD, config: {top_k: 2}}      # the method's options
      - {name: METHOD, train: {lr: 5.0e-5, epochs: 5}}  # a per-method budget (default: the preset's)
      - {name: METHOD, selection: [manual]}     # the strategies this method is fitted on
    selection: {strategies: [ppl, random, manual], compare: [embedding], k: 3, shots: 16}
                                                # (+ decontaminate: true, include_target: false)
    seeds: [0, 1, 2]                            # training seeds: each fitted method once per seed
    evaluation: {convention: lm-eval, batch_size: 8}  # + harness: lm-eval, harness_tasks: [arc_easy]
    caps: {max_train: 96, max_train_steps: 12, max_fit: 48, max_fit_steps: 4, max_eval: 80}
    executor: {kind: local}
    quick: {...}                                # overrides applied by `loraocean run --quick`

`quick:` holds a partial config merged over the rest (mappings merge key by key, lists replace).

Every trained method gets the preset's budget (equal budgets) unless its entry names `train:`
overrides (the report prints each one). A method fitted on selected experts is fitted on every
strategy of `selection.strategies` and, when its `Method.default_selection` names another one (e.g.
a method's own selection procedure), on that one too, unless its entry lists `selection:` itself.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loraocean import yamlio
from loraocean.artifacts import read_text
from loraocean.errors import ConfigError, LoraOceanError
from loraocean.paths import NAME, NAME_RULE

EXECUTORS = ("local", "ray")
CAPS = ("max_train", "max_train_steps", "max_fit", "max_fit_steps", "max_eval")


@dataclass
class MethodSpec:
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (default: the preset's)
    selection: list[str] | None = None  # strategies it is fitted on (default: see the module doc)

    @property
    def method(self):
        """The registered `loraocean.moe.Method`."""
        from loraocean.moe.registry import get_method

        return get_method(self.name)

    @property
    def is_reference(self) -> bool:
        return self.method.reference


@dataclass
class Tasks:
    targets: list[str]
    pool: list[str]

    @property
    def library(self) -> list[str]:
        """Every task that gets a library LoRA: the pool, then targets not in it."""
        return list(dict.fromkeys(self.pool + self.targets))


@dataclass
class Library:
    preset: str = "lite"
    seed: int = 0
    root: str | None = None  # default: <run dir>/library


@dataclass
class Selection:
    strategies: list[str] = field(default_factory=lambda: ["ppl", "random", "manual"])
    compare: list[str] = field(default_factory=list)  # ranked and compared in the report, no MoE fits
    k: int = 3
    shots: int = 16
    include_target: bool = False
    decontaminate: bool = True  # leave out candidates whose training split overlaps the target's test split


@dataclass
class Evaluation:
    convention: str = "lm-eval"
    batch_size: int = 8
    split: str = "test"
    harness: str | None = None      # lm-eval: each eval job also scores its model on harness_tasks
    harness_tasks: list[str] = field(default_factory=list)  # lm-eval task names
    include_path: str | None = None  # extra lm-eval task YAMLs (e.g. `loraocean tasks export --to lm-eval`)


@dataclass
class Caps:
    max_train: int | None = None        # training examples per library LoRA (None: the preset's)
    max_train_steps: int | None = None  # optimizer steps per library LoRA (None: the preset's)
    max_fit: int | None = None          # training examples per MoE fit (None: the preset's)
    max_fit_steps: int | None = None    # optimizer steps per MoE fit (None: the preset's)
    max_eval: int | None = None         # evaluation examples per target (None: the whole split)


@dataclass
class Executor:
    kind: str = "local"
    address: str | None = None  # ray: cluster address (None: start a local Ray)
    num_gpus: float = 0.0       # ray: GPUs requested per job
    num_cpus: float = 1.0       # ray: CPUs requested per job


@dataclass
class StudyConfig:
    name: str
    models: list[str]
    tasks: Tasks
    methods: list[MethodSpec]
    library: Library = field(default_factory=Library)
    selection: Selection = field(default_factory=Selection)
    seeds: list[int] = field(default_factory=lambda: [0])
    evaluation: Evaluation = field(default_factory=Evaluation)
    caps: Caps = field(default_factory=Caps)
    executor: Executor = field(default_factory=Executor)
    description: str = ""
    source: str = ""  # the file it was read from

    @property
    def moe_methods(self) -> list[MethodSpec]:
        return [m for m in self.methods if not m.is_reference]

    @property
    def references(self) -> list[MethodSpec]:
        return [m for m in self.methods if m.is_reference]

    def strategies_of(self, spec: MethodSpec) -> list[str]:
        """The selection strategies `spec` is fitted on: its own list when the study names one, else
        every study strategy plus the method's `default_selection`."""
        if spec.selection is not None:
            return list(spec.selection)
        own = spec.method.default_selection
        return list(dict.fromkeys(self.selection.strategies + ([own] if own else [])))

    def to_dict(self) -> dict:
        """Plain data; a method's `train` and `selection` appear only when the file gives them,
        so studies without them keep their config hash."""
        out = dataclasses.asdict(self)
        out.pop("source")
        for m in out["methods"]:
            if not m["train"]:
                m.pop("train")
            if m["selection"] is None:
                m.pop("selection")
        return out


# --- reading ------------------------------------------------------------------------------------

class _Where:
    """Maps a YAML path like ``methods[2].name`` to its line, for error messages."""

    def __init__(self, source: str, node: yaml.Node | None):
        self.source = source
        self.lines: dict[str, int] = {}
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, path: str) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = f"{path}.{key.value}" if path else str(key.value)
                self.lines[sub] = key.start_mark.line + 1
                self._walk(value, sub)
                self.lines[sub] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, f"{path}[{i}]")

    def error(self, path: str, problem: str) -> ConfigError:
        line = None
        probe = path
        while probe and line is None:
            line = self.lines.get(probe)
            probe = probe.rsplit(".", 1)[0] if "." in probe else (probe.rsplit("[", 1)[0] if "[" in probe else "")
        where = self.source + (f", line {line}" if line else "")
        return ConfigError(f"{where}: {path or '<top>'}: {problem}")


def merge(base: Any, over: Any) -> Any:
    """`over` merged into `base`: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def load_config(path: str | Path, *, quick: bool = False, overrides: dict | None = None) -> StudyConfig:
    """Read and validate a study file. `quick` merges its `quick:` section; `overrides` (a partial
    config, e.g. from command-line options) is merged last."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config {path} not found; give a YAML file or a study name "
                          "(lite, loralib, ci)")
    text = read_text(path)
    try:
        data, node = yamlio.load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return parse(data, _Where(str(path), node), quick=quick, overrides=overrides)


def parse(data: Any, where: _Where | None = None, *, quick: bool = False,
          overrides: dict | None = None) -> StudyConfig:
    where = where or _Where("<config>", None)
    if not isinstance(data, dict):
        raise where.error("", "a study config is a mapping with at least models, tasks and methods")
    data = dict(data)
    quick_part = data.pop("quick", None)
    if quick_part is not None and not isinstance(quick_part, dict):
        raise where.error("quick", "must be a mapping of overrides")
    if quick:
        if not quick_part:
            raise where.error("quick", "this study has no quick: section, so --quick has nothing to apply")
        data = merge(data, quick_part)
    if overrides:
        data = merge(data, overrides)
    cfg = _build(data, where)
    cfg.source = where.source
    validate(cfg, where)
    return cfg


def _fields(cls, raw: Any, path: str, where: _Where) -> dict:
    """Check a mapping's keys against a dataclass; returns the mapping."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise where.error(path, f"must be a mapping (fields: {', '.join(f.name for f in dataclasses.fields(cls))})")
    known = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    for key in raw:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
            raise where.error(f"{path}.{key}" if path else str(key), f"unknown key {key!r}{hint}")
    return raw


def _str_list(raw: Any, path: str, where: _Where, *, allow_empty: bool = False) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise where.error(path, "must be a list of names")
    if not raw and not allow_empty:
        raise where.error(path, "must name at least one entry")
    if len(set(raw)) != len(raw):
        dup = next(x for x in raw if raw.count(x) > 1)
        raise where.error(path, f"{dup!r} is listed twice")
    return list(raw)


def _typed(value: Any, kind: type | tuple, path: str, where: _Where, what: str):
    if value is None or (isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)):
        return value
    raise where.error(path, f"must be {what} (got {value!r})")


def _build(data: dict, where: _Where) -> StudyConfig:
    top = _fields(StudyConfig, data, "", where)
    for need in ("models", "tasks", "methods"):
        if need not in top:
            raise where.error(need, "is required")
    name = top.get("name") or Path(where.source).stem
    models = _str_list(top["models"], "models", where)

    raw_tasks = _fields(Tasks, top["tasks"], "tasks", where)
    if "targets" not in raw_tasks:
        raise where.error("tasks.targets", "is required (the tasks the methods are scored on)")
    tasks = Tasks(targets=_str_list(raw_tasks["targets"], "tasks.targets", where),
                  pool=_str_list(raw_tasks.get("pool", []), "tasks.pool", where, allow_empty=True))

    methods = []
    if not isinstance(top["methods"], list) or not top["methods"]:
        raise where.error("methods", "must be a non-empty list of method names or {name, config}")
    for i, raw in enumerate(top["methods"]):
        path = f"methods[{i}]"
        if isinstance(raw, str):
            raw = {"name": raw}
        raw = _fields(MethodSpec, raw, path, where)
        if not isinstance(raw.get("name"), str):
            raise where.error(f"{path}.name", "is required (a method name)")
        conf = raw.get("config") or {}
        if not isinstance(conf, dict):
            raise where.error(f"{path}.config", "must be a mapping of the method's options")
        train = raw.get("train") or {}
        if not isinstance(train, dict):
            raise where.error(f"{path}.train", "must be a mapping of training settings, e.g. {lr: 5.0e-5, epochs: 5}")
        selection = raw.get("selection")
        if selection is not None:
            selection = _str_list(selection, f"{path}.selection", where)
        methods.append(MethodSpec(name=raw["name"], config=dict(conf), train=dict(train), selection=selection))
    names = [m.name for m in methods]
    for i, m in enumerate(methods):
        if names.count(m.name) > 1:
            raise where.error(f"methods[{i}].name", f"method {m.name!r} is listed twice")

    lib = _fields(Library, top.get("library"), "library", where)
    library = Library(preset=_typed(lib.get("preset", "lite"), str, "library.preset", where, "a preset name"),
                      seed=_typed(lib.get("seed", 0), int, "library.seed", where, "an integer"),
                      root=_typed(lib.get("root"), str, "library.root", where, "a folder path"))
    sel = _fields(Selection, top.get("selection"), "selection", where)
    selection = Selection(
        strategies=_str_list(sel.get("strategies", ["ppl", "random", "manual"]), "selection.strategies",
                             where, allow_empty=True),
        compare=_str_list(sel.get("compare", []), "selection.compare", where, allow_empty=True),
        k=_typed(sel.get("k", 3), int, "selection.k", where, "an integer"),
        shots=_typed(sel.get("shots", 16), int, "selection.shots", where, "an integer"),
        include_target=_typed(sel.get("include_target", False), bool, "selection.include_target",
                              where, "true or false"),
        decontaminate=_typed(sel.get("decontaminate", True), bool, "selection.decontaminate",
                             where, "true or false"))
    seeds = top.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise where.error("seeds", "must be a non-empty list of integers")
    ev = _fields(Evaluation, top.get("evaluation"), "evaluation", where)
    evaluation = Evaluation(
        convention=_typed(ev.get("convention", "lm-eval"), str, "evaluation.convention", where, "a name"),
        batch_size=_typed(ev.get("batch_size", 8), int, "evaluation.batch_size", where, "an integer"),
        split=_typed(ev.get("split", "test"), str, "evaluation.split", where, "a split name"),
        harness=_typed(ev.get("harness"), str, "evaluation.harness", where, "lm-eval or null"),
        harness_tasks=_str_list(ev.get("harness_tasks", []), "evaluation.harness_tasks", where,
                                allow_empty=True),
        include_path=_typed(ev.get("include_path"), str, "evaluation.include_path", where, "a folder path"))
    cp = _fields(Caps, top.get("caps"), "caps", where)
    caps = Caps(**{k: _typed(cp.get(k), int, f"caps.{k}", where, "a positive integer or null")
                   for k in CAPS})
    ex = top.get("executor")
    if isinstance(ex, str):
        ex = {"kind": ex}
    ex = _fields(Executor, ex, "executor", where)
    executor = Executor(kind=_typed(ex.get("kind", "local"), str, "executor.kind", where, "local or ray"),
                        address=_typed(ex.get("address"), str, "executor.address", where, "an address"),
                        num_gpus=float(_typed(ex.get("num_gpus", 0.0), (int, float), "executor.num_gpus",
                                              where, "a number")),
                        num_cpus=float(_typed(ex.get("num_cpus", 1.0), (int, float), "executor.num_cpus",
                                              where, "a number")))
    return StudyConfig(name=str(name), models=models, tasks=tasks, methods=methods, library=library,
                       selection=selection, seeds=seeds, evaluation=evaluation, caps=caps,
                       executor=executor, description=str(top.get("description") or ""))


# --- validation against the registries ------------------------------------------------------------

def known_methods() -> list[str]:
    """Names in the MoE room's registry (ours + entry points)."""
    from loraocean.moe.registry import all_methods

    return list(all_methods())


def known_strategies() -> list[str]:
    from loraocean.selection import all_strategies

    return list(all_strategies())


def _method_config_fields(name: str) -> list[str] | None:
    """The option names of a registered method's config dataclass, when the registry has one."""
    try:
        from loraocean.moe.registry import get_method
    except ImportError:
        return None
    cfg_cls = getattr(get_method(name), "config", None)
    if cfg_cls is None or not dataclasses.is_dataclass(cfg_cls):
        return None
    return [f.name for f in dataclasses.fields(cfg_cls)]


def _check_options(m: MethodSpec, i: int, k: int, where: _Where) -> None:
    """The method's own config dataclass checks types and ranges; top_k must fit the k experts."""
    from loraocean.moe.registry import OptionError, get_method

    try:
        get_method(m.name).make_config(m.config, n_experts=k)
    except OptionError as err:
        raise where.error(f"methods[{i}].config.{err.field}", str(err)) from None


def _check_train(m: MethodSpec, i: int, where: _Where) -> None:
    """A method's `train:` overrides: only for methods that train, known fields, sane values."""
    if m.train and not m.method.trains:
        raise where.error(f"methods[{i}].train", f"{m.name} does not train, so it takes no training overrides")
    from loraocean.presets import override_problem

    for key, value in m.train.items():
        problem = override_problem(key, value)
        if problem:
            raise where.error(f"methods[{i}].train.{key}", problem)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    from loraocean.errors import UnknownNameError

    return str(UnknownNameError(kind, name, known))


def validate(cfg: StudyConfig, where: _Where) -> None:
    from loraocean.models import resolve
    from loraocean.tasks import get_task

    for i, model in enumerate(cfg.models):
        try:
            resolve(model)
        except LoraOceanError as err:
            raise where.error(f"models[{i}]", str(err)) from None
    for group in ("targets", "pool"):
        for i, task in enumerate(getattr(cfg.tasks, group)):
            try:
                get_task(task)
            except LoraOceanError as err:
                raise where.error(f"tasks.{group}[{i}]", str(err)) from None
    methods = known_methods()
    strategies = known_strategies()
    for i, m in enumerate(cfg.methods):
        if m.name not in methods:
            raise where.error(f"methods[{i}].name", _unknown("method", m.name, methods))
        if m.is_reference:
            for key in ("config", "train", "selection"):
                if getattr(m, key):
                    raise where.error(f"methods[{i}].{key}", f"{m.name!r} is a reference, evaluated as it "
                                      f"is: it takes no {key}")
            continue
        _check_train(m, i, where)
        for j, s in enumerate(m.selection or []):
            if s not in strategies:
                raise where.error(f"methods[{i}].selection[{j}]", _unknown("selection strategy", s, strategies))
        own = m.method.default_selection
        if m.selection is None and own and own not in strategies:
            raise where.error(f"methods[{i}].name", f"{m.name}'s default selection {own!r} is not an installed "
                              f"strategy; list the strategies it is fitted on with `selection:`")
        fields = _method_config_fields(m.name)
        if fields is not None:
            for key in m.config:
                if key not in fields:
                    raise where.error(f"methods[{i}].config.{key}",
                                      f"unknown option {key!r} of {m.name}; known: {', '.join(fields)}")
        _check_options(m, i, cfg.selection.k, where)
    for group in ("strategies", "compare"):
        for i, s in enumerate(getattr(cfg.selection, group)):
            if s not in strategies:
                raise where.error(f"selection.{group}[{i}]", _unknown("selection strategy", s, strategies))
    if cfg.moe_methods and not cfg.selection.strategies:
        raise where.error("selection.strategies", "MoE methods need at least one selection strategy")
    if cfg.moe_methods:
        for target in cfg.tasks.targets:
            candidates = candidates_for(cfg, target)
            if not 1 <= cfg.selection.k <= len(candidates):
                raise where.error("selection.k", f"k={cfg.selection.k} is out of range: target {target!r} "
                                  f"has {len(candidates)} candidate experts in tasks.pool; use 1..{len(candidates)} "
                                  "or add tasks to the pool")
    if cfg.selection.shots < 1:
        raise where.error("selection.shots", "must be at least 1")
    from loraocean.evaluation.evaluate import CONVENTIONS

    if cfg.evaluation.convention not in CONVENTIONS:
        raise where.error("evaluation.convention", _unknown("convention", cfg.evaluation.convention,
                                                            list(CONVENTIONS)))
    if cfg.evaluation.split not in ("train", "dev", "test"):
        raise where.error("evaluation.split", "must be train, dev or test")
    if cfg.evaluation.batch_size < 1:
        raise where.error("evaluation.batch_size", "must be at least 1")
    if cfg.evaluation.harness not in (None, "lm-eval"):
        raise where.error("evaluation.harness", _unknown("harness", cfg.evaluation.harness, ["lm-eval"]))
    if bool(cfg.evaluation.harness) != bool(cfg.evaluation.harness_tasks):
        raise where.error("evaluation.harness_tasks" if cfg.evaluation.harness else "evaluation.harness",
                          "harness: lm-eval needs harness_tasks (lm-eval task names), and the other "
                          "way round")
    for key in CAPS:
        value = getattr(cfg.caps, key)
        if value is not None and value < 1:
            raise where.error(f"caps.{key}", "must be a positive integer or null (no cap)")
    if cfg.executor.kind not in EXECUTORS:
        raise where.error("executor.kind", _unknown("executor", cfg.executor.kind, list(EXECUTORS)))
    _validate_values(cfg, where)


def _validate_values(cfg: StudyConfig, where: _Where) -> None:
    """Values that become folder names, table keys or method configs."""
    from loraocean.library.presets import PRESETS
    from loraocean.moe.registry import MAX_SEED

    if not NAME.fullmatch(cfg.name):
        raise where.error("name", f"{cfg.name!r} becomes the run folder runs/<name>; {NAME_RULE}")
    from loraocean.moe.presets import PRESETS as FIT_PRESETS

    both = [p for p in PRESETS if p in FIT_PRESETS]  # library.preset names one of each table
    if cfg.library.preset not in both:
        raise where.error("library.preset", _unknown("preset", cfg.library.preset, both))
    for path, seed in [("library.seed", cfg.library.seed)] + [(f"seeds[{i}]", s) for i, s in enumerate(cfg.seeds)]:
        if not 0 <= seed <= MAX_SEED:
            raise where.error(path, f"seed {seed} is out of range; use 0..{MAX_SEED}")


def candidates_for(cfg: StudyConfig, target: str) -> list[str]:
    """The library tasks a selection strategy may choose from for `target`: not the target itself
    nor a task built from the same data (`tasks.same_data`), unless selection.include_target. (The
    selection also leaves out, at run time, those whose training data overlaps the target's test
    split.)"""
    from loraocean.tasks import same_data

    own = {target} | same_data(target)
    return [t for t in cfg.tasks.library if cfg.selection.include_target or t not in own]
