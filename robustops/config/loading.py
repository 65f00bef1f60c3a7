"""Config files: reading YAML safely, ``--set`` overrides, and the resolved config as YAML and params."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from robustops.config.messages import format_errors
from robustops.config.root import Config
from robustops.errors import ConfigError


def set_key(tree: dict[str, Any], dotted: str, value: Any, defaults: Any = None) -> None:
    """Sets ``a.b.c`` in a nested tree of dicts and lists; a number indexes a list
    (``defences.0.eps``), and a defence given by name alone becomes a block to set keys in.

    ``defaults`` is the same tree with every default filled in: a list the tree does not hold
    yet (``defences`` when no config file names them) is copied from it first, so an override
    applies to what the run would use whatever the config's source."""
    keys = dotted.split(".")
    node: Any = tree
    default: Any = defaults
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit():
                raise ConfigError(
                    f"--set {dotted}: {'.'.join(keys[:i])} is a list: index it by number, e.g. "
                    f"{'.'.join([*keys[:i], '0', *keys[i + 1 :]])}"
                )
            if int(k) >= len(node):
                have = f"items 0 to {len(node) - 1}" if node else "no items"
                raise ConfigError(
                    f"--set {dotted}: index {k} is out of range: {'.'.join(keys[:i])} has {have}; "
                    f"to add an item, set the whole list, e.g. --set {'.'.join(keys[:i])}=[...]"
                )
            if last:
                node[int(k)] = value
                return
            if isinstance(node[int(k)], str):
                node[int(k)] = {"name": node[int(k)]}
            node = node[int(k)]
            default = None  # an item's own defaults come from its block's class
        elif isinstance(node, dict):
            if last:
                node[k] = value
                return
            sub = default.get(k) if isinstance(default, dict) else None
            if k not in node and isinstance(sub, list):
                node[k] = copy.deepcopy(sub)
            node = node.setdefault(k, {})
            default = sub
        else:
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[:i])} is not a section")
    if not isinstance(node, (dict, list)):
        raise ConfigError(f"--set {dotted}: {keys[-2]} is not a section")


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Turns ``["train.epochs=5", "evaluation.eps=[0.1,0.2]"]`` into (key, value) pairs.

    Values are parsed as YAML, so numbers, lists and booleans work as they do in a file.
    """
    pairs = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not k for k in key.split(".")):
            raise ConfigError(f"bad --set {item!r}: use KEY=VALUE, e.g. --set train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"bad --set {item!r}: value is not valid YAML ({e.problem})") from None
        except RecursionError:
            raise ConfigError(f"bad --set {key}=...: value is nested too deeply; {_NESTING_FIX}") from None
        _check_tree(value, f"--set {key}")
        pairs.append((key, value))
    return pairs


MAX_DEPTH = 32  # the deepest real config is about 4 levels
MAX_VALUES = 50_000  # the default config holds a few hundred
_NESTING_FIX = "a config holds sections of plain values (see configs/default.yaml)"


def _check_tree(tree: Any, source: str) -> None:
    """Refuses a YAML tree too deep or too large to be a config before anything walks it.

    ``yaml.safe_load`` keeps aliases as shared references, so a few lines of anchors (a "billion
    laughs") or an alias to itself load fine and only blow up when validation and error messages
    walk them; an explicit stack with limits keeps the walk bounded.
    """
    stack, seen = [(tree, 0)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"{source} is nested more than {MAX_DEPTH} levels deep (a recursive YAML alias?); {_NESTING_FIX}"
            )
        if seen > MAX_VALUES:
            raise ConfigError(
                f"{source} holds more than {MAX_VALUES:,} values (a very long list, or YAML aliases "
                f"that repeat?); {_NESTING_FIX}"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        found, folder = path.is_file(), path.is_dir()
    except (OSError, ValueError) as e:  # a name too long, or with a NUL byte
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(
            f"config file {path} cannot be used ({reason}); pass an existing file, e.g. configs/default.yaml"
        ) from None
    if folder:
        raise ConfigError(f"config file {path} is a folder; pass a YAML file, e.g. configs/default.yaml")
    if not found:
        raise ConfigError(f"config file {path} not found; pass an existing file, e.g. configs/default.yaml")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: fix its syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply; {_NESTING_FIX}") from None
    except OSError as e:
        raise ConfigError(
            f"config file {path} cannot be read ({e.strerror}); check its permissions"
        ) from None
    _check_tree(tree, f"config file {path}")
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(tree).__name__}")
    return tree


def build_config(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(f"invalid {source}: {format_errors(e, Config)}") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a YAML config (defaults when ``path`` is None) and applies ``--set`` overrides."""
    tree = read_yaml(path) if path is not None else {}
    pairs = parse_overrides(overrides or [])
    defaults = Config().model_dump(mode="json") if pairs else None
    for key, value in pairs:
        set_key(tree, key, value, defaults)
    return build_config(tree, source=str(path) if path else "config")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flatten(cfg: Config) -> dict[str, str]:
    """Dotted key -> string value, the shape MLflow params want."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, BaseModel):
            # A defence block not yet typed holds its own keys as extras.
            for k in [*type(node).model_fields, *(node.model_extra or {})]:
                walk(f"{prefix}.{k}" if prefix else k, getattr(node, k))
        else:
            # A mapping (gate.min, train_class_fraction) is one value: its keys are users' names,
            # which need not be valid MLflow param keys.
            out[prefix] = json.dumps(_plain(node)) if isinstance(node, dict) else str(_plain(node))

    walk("", cfg)
    return out


def _plain(value: Any) -> Any:
    """A config value as JSON-able data (enums, paths and sub-models as their dumped form)."""
    return TypeAdapter(Any).dump_python(value, mode="json")
