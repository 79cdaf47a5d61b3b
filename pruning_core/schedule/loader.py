"""Reading schedule YAML with line numbers, bounded: sizes, depth, aliases and nodes are counted from
the parser's events before anything is built, so a hostile document costs no more than its bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .errors import ScheduleError

Path_ = tuple  # a key path such as ("pruners", "p1", "weights", 2)


# --------------------------------------------------------------------------------------------------
# Reading YAML with line numbers
# --------------------------------------------------------------------------------------------------


def _key_text(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


class _Lines:
    """Line of every key path (1-based), filled while converting the composed YAML tree."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple, int] = {}
        #: what was accepted but deserves a look (a key given twice with the same value), located
        self.warnings: list[str] = []

    def line(self, path: Sequence[Any]) -> int | None:
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: Sequence[Any], message: str) -> ScheduleError:
        return ScheduleError(message, key=_key_text(path), line=self.line(path), source=self.source)


def _to_python(node: yaml.Node, path: tuple, lines: _Lines, loader: yaml.SafeLoader) -> Any:
    """Convert a composed node to plain data, recording the line of each key; duplicate keys are errors."""
    lines.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScheduleError("a key must be a plain value", key=_key_text(path),
                                    line=key_node.start_mark.line + 1, source=lines.source)
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in out:
                first = lines.lines[path + (key,)]
                again = _to_python(value_node, path + (key,), _Lines(lines.source), loader)
                where = f"{lines.source} line {line}: {_key_text(path + (key,))}"
                if again != out[key]:
                    raise ScheduleError(f"key given twice with different values (line {first}: {out[key]!r}, "
                                        f"line {line}: {again!r}); keep one", key=_key_text(path + (key,)),
                                        line=line, source=lines.source)
                lines.warnings.append(f"{where}: key given twice (lines {first} and {line}) with the same value; "
                                      "the second is ignored")
                continue
            lines.lines[path + (key,)] = line  # a key's line, not its value's
            out[key] = _to_python(value_node, path + (key,), lines, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(item, path + (i,), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


#: Bounds on a schedule document, checked on the event stream before anything is built, because YAML
#: anchors and aliases let a few hundred bytes describe billions of nodes (the "billion laughs"). The
#: published Distiller schedules are at most 28 KB, 5 levels deep and 177 nodes, and use no alias at all.
YAML_MAX_BYTES = 128 * 1024
YAML_MAX_DEPTH = 32
YAML_MAX_ALIASES = 50
YAML_MAX_NODES = 10_000  # counted with every alias expanded, as converting to Python data would
_FIX = "write the values out (no anchors and aliases) or split the schedule"


def _check_bounds(text: str, source: str) -> None:
    """Refuse a document over the size, nesting, alias or expanded-node bound, cheaply: one pass over the
    parser's events (iterative, so deep nesting cannot overflow the stack), counting each alias as the
    size of what its anchor names, so nothing the document describes is ever allocated."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > YAML_MAX_BYTES:
        raise ScheduleError(f"the document is {size:,} bytes, over the {YAML_MAX_BYTES:,}-byte limit of a schedule; "
                            "shorten it (comments count too)", source=source)
    nodes = aliases = 0
    opened: list[tuple[str | None, int]] = []  # (anchor, node count when the collection opened)
    sizes: dict[str, int] = {}  # anchor -> expanded node count of what it names

    def fail(event: yaml.Event, message: str) -> ScheduleError:
        return ScheduleError(message, line=event.start_mark.line + 1 if event.start_mark else None, source=source)

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > YAML_MAX_ALIASES:
                    raise fail(event, f"more than {YAML_MAX_ALIASES} YAML aliases (*name), the limit; {_FIX}")
                nodes += sizes.get(event.anchor, 1)
            elif isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
                nodes += 1
                if isinstance(event, yaml.CollectionStartEvent):
                    opened.append((event.anchor, nodes - 1))
                    if len(opened) > YAML_MAX_DEPTH:
                        raise fail(event, f"nested more than {YAML_MAX_DEPTH} levels deep, the limit; flatten it")
                elif event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionEndEvent) and opened:
                anchor, start = opened.pop()
                if anchor is not None:
                    sizes[anchor] = nodes - start
            else:
                continue
            if nodes > YAML_MAX_NODES:
                raise fail(event, f"the document expands to more than {YAML_MAX_NODES:,} YAML nodes (aliases "
                                  f"expanded), the limit: refused before building it (an alias bomb?); {_FIX}")
    except yaml.YAMLError:
        return  # reported, with its line, by the composer below


def _compose(text: str, source: str) -> tuple[Any, _Lines]:
    lines = _Lines(source)
    _check_bounds(text, source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScheduleError(f"not valid YAML: {problem}", line=mark.line + 1 if mark else None,
                            source=source) from None
    if root is None:
        raise ScheduleError("the schedule is empty", line=1, source=source)
    try:
        return _to_python(root, (), lines, yaml.SafeLoader("")), lines
    except ScheduleError:
        raise
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:  # '=', '2020-99-99', '!!float x'
        raise ScheduleError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=source) from None


# --------------------------------------------------------------------------------------------------
# The data model
# --------------------------------------------------------------------------------------------------
