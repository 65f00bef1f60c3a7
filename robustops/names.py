"""The rules for names that robustops hands to other systems: MLflow metric keys, registered model
names, aliases and ``models:/`` URIs, and the quoting of MLflow filter strings.

One module holds them, so the config refuses a name by the same rule as the code that later uses
it: a value that passes validation never fails mid-run in MLflow. The MLflow rules are restated
here because the core does not import MLflow; ``tests/test_names.py`` checks every rule against
MLflow's own validators and a real store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# MLflow's MAX_ENTITY_KEY_LENGTH: the longest metric, param or tag key.
MAX_KEY = 250
# The longest metric key that holds a class name is "data/class_<name>/n_synthetic" (24 more
# characters); 200 leaves room for new keys of that kind.
MAX_CLASS_SEGMENT = 200
# A registry's `name` column holds 256 characters (MLflow's SQL schema).
MAX_MODEL_NAME = 256
MAX_ALIAS = 255  # MLflow's MAX_REGISTERED_MODEL_ALIAS_LENGTH
MAX_EXPERIMENT = 500  # MLflow's MAX_EXPERIMENT_NAME_LENGTH
MAX_LABEL = 100  # a model's name in a run: MLflow run names, Prefect task run names, report columns

_SEGMENT_BAD = re.compile(r"[^\w.\-]")
# MLflow allows these characters in metric and param names (on POSIX).
METRIC_NAME = re.compile(r"[/\w.\- :]+")
_ALIAS = re.compile(r"[\w\-]+")
_VERSION_ALIAS = re.compile(r"[vV]\d+")  # reserved by MLflow: it would read as a version
_URI = "models:/NAME@ALIAS or models:/NAME/VERSION, e.g. models:/robustops-digits@champion"


def number(value: float) -> str:
    """A number as it appears in metric names: 0.1 -> '0.1', 0.25 -> '0.25', 1.0 -> '1'."""
    return f"{value:g}"


def segment(name: str) -> str:
    """A user-given name (a class folder, say) made safe for one segment of a metric name."""
    return _SEGMENT_BAD.sub("_", name) or "_"


def distinct_numbers(values: Iterable[float], what: str) -> None:
    """Refuses two different numbers that would write the same metric key (0.1 and 0.1000001)."""
    seen: dict[str, float] = {}
    for v in values:
        key = number(v)
        if key in seen and seen[key] != v:
            raise ValueError(
                f"{what} values {seen[key]!r} and {v!r} would share the metric key segment '{key}' "
                "(keys keep 6 significant digits); drop one or make them differ in the first 6 digits"
            )
        seen[key] = v


def class_segments(classes: list[str]) -> list[str]:
    """The metric key segment of each class name; refuses names that would collide or be too long.

    Raises:
        ValueError: two classes share a segment ('a b' and 'a_b'), or a name is longer than
            :data:`MAX_CLASS_SEGMENT` characters.
    """
    out, seen = [], {}
    for name in classes:
        seg = segment(name)
        if len(seg) > MAX_CLASS_SEGMENT:
            raise ValueError(
                f"class name {name[:40]!r}... is {len(name)} characters; metric keys hold class names "
                f"(clean/recall/class_<name>) and MLflow keys hold at most {MAX_KEY}: shorten it to "
                f"{MAX_CLASS_SEGMENT} or fewer"
            )
        if seg in seen:
            raise ValueError(
                f"class names {seen[seg]!r} and {name!r} would write the same MLflow metric keys "
                f"(clean/recall/class_{seg}): metric keys keep letters, digits, '_', '.' and '-' and "
                "turn anything else into '_'; rename one of them"
            )
        seen[seg] = name
        out.append(seg)
    return out


def metric_name(name: str) -> str:
    """A metric name MLflow accepts (checked where users name metrics, e.g. the gate's)."""
    if not METRIC_NAME.fullmatch(name) or len(name) > MAX_KEY:
        raise ValueError(
            f"{name!r} is not a metric name: metric names hold letters, digits and / _ . - : and spaces, "
            f"at most {MAX_KEY} characters (e.g. clean/acc)"
        )
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{name!r} is not a metric name: no empty, '.' or '..' parts between slashes")
    return name


def filter_literal(value: str) -> str:
    """``value`` quoted as a string literal of an MLflow search filter.

    MLflow strips the quotes around a literal and does not unescape what is inside, so a value
    is quoted with a quote character it does not contain; sqlparse, which tokenizes the filter,
    reads a backslash before the closing quote as an escape, so a value ending in a backslash
    takes double quotes.

    Raises:
        ValueError: the value holds both quote characters (no literal can express it).
    """
    if "'" not in value and not value.endswith("\\"):
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both ' and \" (an MLflow search filter cannot quote it)")


def registered_model_name(name: str) -> str:
    """A registered model name that MLflow accepts and that ``models:/`` URIs and search filters
    can hold; returns it unchanged.

    Raises:
        ValueError: with the rule it breaks.
    """
    rule = (
        "a registered model name is 1 to 256 printable characters without '/', ':' or '@' "
        "(they separate the parts of models:/NAME@ALIAS and models:/NAME/VERSION), with no space at "
        "either end, not '.' or starting with '..', and without both ' and \""
    )
    bad = (
        not name
        or len(name) > MAX_MODEL_NAME
        or not name.isprintable()
        or name != name.strip()
        or any(c in name for c in "/:@")
        or name == "."
        or name.startswith("..")
    )
    if not bad:
        try:
            filter_literal(name)
        except ValueError:
            bad = True
    if bad:
        raise ValueError(f"{name!r} is not usable: {rule}")
    return name


def alias(name: str) -> str:
    """A registry alias that MLflow accepts and does not reserve; returns it unchanged."""
    if not _ALIAS.fullmatch(name) or len(name) > MAX_ALIAS:
        raise ValueError(
            f"alias {name!r} is not usable: an alias is 1 to {MAX_ALIAS} letters, digits, '_' or '-' "
            "(e.g. champion)"
        )
    if name.lower() == "latest" or _VERSION_ALIAS.fullmatch(name):
        raise ValueError(
            f"alias {name!r} is reserved by MLflow ('latest' and v<number> name versions); "
            "choose another, e.g. champion"
        )
    return name


def label(name: str) -> str:
    """A model's name in a run (a defence's ``label``): printable, no space at either end."""
    if not name or len(name) > MAX_LABEL or not name.isprintable() or name != name.strip():
        raise ValueError(
            f"label {name!r} is not usable: 1 to {MAX_LABEL} printable characters, no space at either end"
        )
    return name


def experiment(name: str) -> str:
    """An MLflow experiment name: printable, not blank, at most 500 characters."""
    if not name.strip() or len(name) > MAX_EXPERIMENT or not name.isprintable():
        raise ValueError(
            f"experiment {name[:40]!r} is not usable: 1 to {MAX_EXPERIMENT} printable characters"
        )
    return name


def model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Raises:
        ValueError: not such a URI, or its name or alias breaks the rules above.
    """
    text = uri.strip()
    if not text.startswith("models:/"):
        raise ValueError(f"model URI {uri!r} is not {_URI}")
    rest = text.removeprefix("models:/")
    if "@" in rest:
        name, _, tag = rest.partition("@")
        version = None
    else:
        name, _, version = rest.rpartition("/")
        tag = None
        if not version.isdigit():
            raise ValueError(f"model URI {uri!r} is not {_URI}")
    try:
        registered_model_name(name)
        if tag is not None:
            alias(tag)
    except ValueError as e:
        raise ValueError(f"model URI {uri!r}: {e}") from None
    return name, tag, version
