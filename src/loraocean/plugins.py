"""Named registries that other packages extend through entry points (MoE methods, selection
strategies).

A `Registry` is a dict from name to the registered object. Our own modules fill it with a
decorator when they are imported; installed packages declare modules in an entry-point group,
imported the first time a name is looked up that is not registered yet (or when every name is
listed). One name is registered once: a second object under a taken name is refused with an error
naming both sources (the module, and for an entry point its package), so nothing is overwritten
or skipped silently. Importing the same module again (the same source) replaces the entry.

    [project.entry-points."loraocean.methods"]      # or "loraocean.strategies"
    my_method = "my_package.module"                  # a module that registers on import
"""

from __future__ import annotations

from typing import Any, Callable

from loraocean.errors import LoraOceanError, UnknownNameError


class DuplicateNameError(LoraOceanError):
    """Two registrations under one name (the message names both sources)."""


class Registry(dict):
    """name -> object, with the source each came from (a module path, or an entry point)."""

    def __init__(self, kind: str, group: str, hint: str = ""):
        super().__init__()
        self.kind = kind            # e.g. "MoE method": used in messages
        self.group = group          # the entry-point group other packages declare
        self.hint = hint            # where to see the names (e.g. a CLI command)
        self.sources: dict[str, str] = {}
        self.entry_points_loaded = False

    def add(self, name: str, obj: Any, source: str) -> None:
        """Register `obj` under `name`; refuse a name another source already holds."""
        held = self.sources.get(name)
        if name in self and held != source:
            raise DuplicateNameError(f"{self.kind} {name!r} is registered twice: by {held} and by {source}; "
                                     "rename one of them (names must be unique)")
        self[name] = obj
        self.sources[name] = source

    def load_entry_points(self, accept: Callable[[str, Any], bool] | None = None) -> None:
        """Import every module the installed packages declare in the entry-point group.
        `accept(entry_name, loaded)` may register an object the entry point names directly and
        return True (e.g. a `Method` object); a module registers itself when it is imported."""
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.group):
            package = getattr(ep.dist, "name", None) or "an installed package"
            try:
                loaded = ep.load()
            except DuplicateNameError as err:
                raise DuplicateNameError(f"{err} (while loading entry point {ep.name!r} = {ep.value!r} of "
                                         f"package {package})") from None
            if accept is not None:
                accept(f"{ep.value} (entry point of package {package})", loaded)
        self.entry_points_loaded = True

    def lookup(self, name: str, accept: Callable[[str, Any], bool] | None = None) -> Any:
        """The object registered as `name` (entry points loaded first if the name is unknown)."""
        if name not in self and not self.entry_points_loaded:
            self.load_entry_points(accept)
        if name not in self:
            hint = f"see {self.hint}; " if self.hint else ""
            raise UnknownNameError(self.kind, name, self, hint=f"{hint}packages add them through the "
                                                             f"{self.group!r} entry-point group")
        return self[name]

    def everything(self, accept: Callable[[str, Any], bool] | None = None) -> dict[str, Any]:
        """Every registered name, entry points included."""
        if not self.entry_points_loaded:
            self.load_entry_points(accept)
        return dict(self)

    def forget(self, name: str) -> None:
        """Drop a registration (tests that install and remove a package)."""
        self.pop(name, None)
        self.sources.pop(name, None)


def source_of(obj: Any) -> str:
    """`module.qualname` of a function or class: the source a registration names."""
    obj = getattr(obj, "func", obj)  # functools.partial
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"
