"""YAML loading that refuses alias bombs ("billion laughs") and recursive aliases.

Used for spec files and for the values of `key=value` overrides alike.
"""

from __future__ import annotations

from typing import Any

import yaml

from reidnet.errors import ReidnetError

MAX_YAML_NODES = 100_000  # a whole TAO spec is a few hundred nodes
_RECURSIVE = "the YAML document refers to itself (a recursive alias)"


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose aliases expand past MAX_YAML_NODES.

    PyYAML shares the node an alias points to, so a 257-byte "billion laughs" document loads
    quickly, but every later walk (validation, deep copies, printing it in an error) expands
    it. Counting the expanded size on the node graph, with each node's size computed once,
    costs one pass over the distinct nodes.
    """

    def construct_document(self, node):
        _check_expanded_size(node)
        return super().construct_document(node)


def _check_expanded_size(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_NODES:
                break
            continue
        if id(node) in on_path:
            raise ReidnetError(_RECURSIVE)
        on_path.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise ReidnetError(_RECURSIVE)
            if id(child) not in sizes:
                stack.append((child, False))
    if max(sizes.values(), default=0) > MAX_YAML_NODES:
        raise ReidnetError(
            f"the YAML document expands to more than {MAX_YAML_NODES} values through its "
            "aliases (*name): a spec is a few hundred; write the values out instead"
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def safe_load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing alias bombs and recursive aliases (ReidnetError)."""
    return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
