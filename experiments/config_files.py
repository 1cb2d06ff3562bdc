"""Config files in and out: the YAML a user writes, ``key=value`` overrides, one-line errors, and the
resolved config written back. The schema itself is :mod:`experiments.config`; what the machine must offer
before a run starts (a writable runs folder, W&B credentials, enough prompts) is :mod:`experiments.preflight`.

>>> config = load_config(None, ["seed=3", "env.max_turns=2"])
>>> (config.seed, config.env.max_turns)
(3, 2)
>>> load_config(None, ["env.feedback=stars"])
Traceback (most recent call last):
...
experiments.config.ConfigError: env.feedback: Input should be 'rating', 'utility', 'pairwise', 'critique' or 'implicit' (got 'stars')
"""

from __future__ import annotations

import copy
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from experiments.config import ConfigError, ExperimentConfig, _Section


def format_validation_error(exc: ValidationError) -> str:
    """pydantic's errors as one line, ``field: problem (got value)`` each, joined by "; "."""
    lines = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        head, sep, rest = message.partition(": ")
        names_field = bool(sep) and re.fullmatch(r"[A-Za-z_][A-Za-z_.0-9-]*", head) is not None
        if not location:  # a cross-field check: its message starts with the field it is about
            location, message = (head, rest) if names_field else ("config", message)
        elif names_field and head.split(".")[0] == location.split(".")[0] and len(head) >= len(location):
            location, message = head, rest  # a check of a section that names the exact key (trainer.max_steps)
        if error["type"] == "extra_forbidden":
            message = "unknown key; check the spelling (see `attune run --help` for the fields)"
        got = error.get("input")
        shown = error["type"] not in ("extra_forbidden", "missing") and not isinstance(got, dict)
        suffix = f" (got {_short(got)})" if shown and "(got " not in message else ""
        lines.append(f"{location}: {message}{suffix}")
    return "; ".join(lines)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _DuplicateKeyError(yaml.YAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise _DuplicateKeyError(f"line {line}: key {key!r} is given twice (first on line {seen}); "
                                             "keep one, YAML would silently use the last")
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads 1e-5 as the string "1e-5"; a learning rate written that way is a number (as in YAML 1.2).
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    """YAML text -> Python data, with :class:`StrictLoader` (duplicate keys are errors)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what."""
    if isinstance(exc, _DuplicateKeyError):
        return str(exc)
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


_OVERRIDE_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a', 'b', 'c'], value parsed as a YAML scalar)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. trainer.max_steps=10")
    if not _OVERRIDE_KEY.fullmatch(key):
        raise ConfigError(f"override {item!r}: the key must be a dotted path of names or list indices, "
                          "e.g. env.max_turns or rewards.0.weight")
    try:
        value = parse_yaml(raw) if raw.strip() else ""
    except _DuplicateKeyError as exc:
        raise ConfigError(f"override {key}: {exc}") from None
    except yaml.YAMLError:
        value = raw  # not YAML: the plain text (a name, a path)
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {'.'.join(path)}: {where} is not a valid list index (0..{len(node) - 1})")
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {'.'.join(path)}: {where} is a value, not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {'.'.join(path)}: not a valid list index (0..{len(node) - 1})")
        node[int(last)] = value
    else:
        node[last] = value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises :class:`ConfigError` for anything but a non-empty mapping."""
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.y*ml"))[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise ConfigError(f"config {str(path)!r} is a folder; give a YAML file{hint}, e.g. experiments/configs/quickstart.yaml")
    if not path.is_file():
        kind = "not found" if not path.exists() else "not a regular file"
        raise ConfigError(f"config file {str(path)!r} {kind}; the bundled configs are in experiments/configs/")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: a binary file, not a YAML config")
    try:
        loaded = parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if loaded is None or loaded == {}:
        raise ConfigError(f"{path}: the config is empty; give at least the settings to change, or start from "
                          "experiments/configs/quickstart.yaml")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (env:, policy:, ...)")
    return loaded


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``key=value`` overrides, validate. Raises :class:`ConfigError`."""
    data: dict[str, Any] = {}
    if path is not None:
        data = copy.deepcopy(read_config_file(path))
    for item in overrides:
        apply_override(data, *parse_override(item))
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    config.variant_configs()  # validate every variant now, before anything runs
    return config


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def field_reference(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """One line per config field, generated from the model: ``dotted.name (allowed or type, default): help``.

    ``attune run --help`` shows these, so a field, its allowed values and its description live in one place.
    """
    model = model or ExperimentConfig
    lines = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = _section_of(annotation)
        if nested is not None and name not in ("sweep",):
            lines += field_reference(nested, f"{prefix}{name}.")
            continue
        kind = _describe_annotation(annotation)
        if (field.json_schema_extra or {}).get("allowed") == "methods":
            import agents

            kind = "|".join(agents.method_names())
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = "see its fields"
        elif isinstance(default, list):
            default = [d.model_dump() if isinstance(d, BaseModel) else d for d in default]
        shown = "" if field.is_required() else f", default {default!r}"
        lines.append(f"{prefix}{name} ({kind}{shown})" + (f": {field.description}" if field.description else ""))
    return lines


def _section_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation
    return None


def _describe_annotation(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "|".join(str(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe_annotation(a) for a in typing.get_args(annotation))
    if origin in (list, dict):
        return origin.__name__
    if isinstance(annotation, type):
        return "section" if issubclass(annotation, BaseModel) else annotation.__name__
    return str(annotation)
