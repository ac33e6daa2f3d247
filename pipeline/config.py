"""Configurations: bundled TOML files in configs/, a user's TOML file, and `key=value` overrides.

A config has two parts. `features` decides what the stored features mean, so it is hashed into
the workdir's identity; `runtime` only decides how fast they are computed, so changing it never
invalidates a workdir.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

Config = dict[str, Any]


class ConfigError(ValueError):
    """A config that cannot be loaded or an override that names no known key."""


def bundled_config_names() -> list[str]:
    """The configs a user can name: every bundled TOML file but the base that they all extend."""
    names = (p.name[:-5] for p in resources.files("gais_pipe.configs").iterdir() if p.name.endswith(".toml"))
    return sorted(name for name in names if name != BASE)


BASE = "base"


def load_config(name_or_path: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Load a bundled config by name or a TOML file by path, resolve what it extends, then apply
    `a.b.c=value` overrides. The result is the fully resolved config; it has no `extends` key."""
    config = _resolve(name_or_path, seen=())
    for override in overrides or []:
        apply_override(config, override)
    return config


def _read_toml(name_or_path: str) -> tuple[Config, Path | None]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text, origin = path.read_text(), path
    else:
        resource = resources.files("gais_pipe.configs") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(f"unknown config {name_or_path!r}; bundled: {', '.join(bundled_config_names())}")
        text, origin = resource.read_text(), None
    try:
        return tomllib.loads(text), origin
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name_or_path}: not valid TOML: {error}") from None


def _resolve(name_or_path: str, seen: tuple[str, ...]) -> Config:
    """A config merged over the one it extends (a bundled name, or a path relative to the file)."""
    if name_or_path in seen:
        raise ConfigError(f"{name_or_path}: configs extend each other in a cycle ({' -> '.join(seen)})")
    config, origin = _read_toml(name_or_path)
    parent = config.pop("extends", None)
    if parent is None:
        return config
    if origin is not None and (origin.parent / parent).is_file():
        parent = str(origin.parent / parent)
    return merge_over(_resolve(parent, (*seen, name_or_path)), config, name_or_path)


def merge_over(parent: Config, child: Config, child_name: str, prefix: str = "") -> Config:
    """The parent with the child's values set over it. A child may only set keys the parent has
    (a typo is an error, not a new key that nothing reads), except `name`."""
    merged = copy.deepcopy(parent)
    for key, value in child.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_over(merged[key], value, child_name, dotted + ".")
        elif key in merged or dotted == "name":
            merged[key] = value
        else:
            raise ConfigError(f"{child_name}: unknown key {dotted!r} (not in the config it extends)")
    return merged


def parse_value(text: str) -> Any:
    """Read an override's value as a TOML literal (8, 0.5, true, "x", [1, 2]); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(config: Config, override: str) -> None:
    """Set one dotted key. Only existing keys may be set, so that a typo is an error, not a no-op."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    parts = key.strip().split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"override {override!r}: no section {'.'.join(parts[: depth + 1])!r}")
        node = node[part]
    if parts[-1] not in node:
        known = ", ".join(sorted(k for k, v in node.items() if not isinstance(v, dict)))
        raise ConfigError(f"override {override!r}: unknown key {key.strip()!r} (known here: {known})")
    node[parts[-1]] = parse_value(raw.strip())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def short_hash(value: Any) -> str:
    """A stable 16-hex-digit digest of a JSON-able value."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


def flatten(config: Config, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: for listing which keys differ between two configs."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differing_keys(a: Config, b: Config) -> list[str]:
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def copy_config(config: Config) -> Config:
    return copy.deepcopy(config)
