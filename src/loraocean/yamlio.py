"""The one YAML reader of the project: safe types only, bounded aliases, no duplicate keys.

Nesting is limited to MAX_DEPTH levels. An alias (`*a`) may repeat a value, but the document expanded (every alias replaced by its value)
may hold at most `MAX_NODES` nodes: a few hundred bytes of nested aliases otherwise expand to
gigabytes in any consumer that walks the result. A self-referencing alias (`a: &x [*x]`) is
refused, and so is a key given twice in one mapping (PyYAML keeps the last one silently).
Problems are raised as `yaml.YAMLError` with the line in `problem_mark`, so callers report them as
they report any other YAML syntax error.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_NODES = 100_000
MAX_DEPTH = 100


class _Loader(yaml.SafeLoader):
    """Refuses nesting deeper than MAX_DEPTH while composing (before Python's recursion limit)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes in `node` with aliases expanded; refuses cycles and anything over MAX_NODES."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise ComposerError(None, None, "an alias refers to a value that contains it (an endless "
                            "structure); write the value out", node.start_mark)
    open_.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_NODES:
            raise ComposerError(None, None, f"the document expands to more than {MAX_NODES} values "
                                "(through aliases); write it without nested aliases", node.start_mark)
    open_.discard(key)
    sizes[key] = total
    return total


def _check_duplicates(root: yaml.Node) -> None:
    todo, seen_nodes = [root], set()
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else id(key)
                if name in seen:
                    raise ConstructorError(None, None, f"duplicate key {name!r} (first on line "
                                           f"{seen[name]}); give each key once", key.start_mark)
                seen[name] = key.start_mark.line + 1
                todo += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value


def _compose(loader: _Loader) -> yaml.Node | None:
    node = loader.get_single_node()
    if node is not None:
        _expanded_size(node, {}, set())
        _check_duplicates(node)
    return node


def compose(text: str) -> yaml.Node | None:
    """The node tree of one YAML document (for line numbers), checked as described above."""
    loader = _Loader(text)
    try:
        return _compose(loader)
    finally:
        loader.dispose()


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """(Python data, node tree) of one YAML document, checked as described above."""
    loader = _Loader(text)
    try:
        node = _compose(loader)
        if node is None:
            return None, None
        return loader.construct_document(node), node
    finally:
        loader.dispose()
