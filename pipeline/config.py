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
    return sorted(p.name[:-5] for p in resources.files("gais_pipe.configs").iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str = "tiny", overrides: list[str] | None = None) -> Config:
    """Load a bundled config by name or a TOML file by path, then apply `a.b.c=value` overrides."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        text = path.read_text()
    else:
        resource = resources.files("gais_pipe.configs") / f"{name_or_path}.toml"
        if not resource.is_file():
            raise ConfigError(f"unknown config {name_or_path!r}; bundled: {', '.join(bundled_config_names())}")
        text = resource.read_text()
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{name_or_path}: not valid TOML: {error}") from None
    for override in overrides or []:
        apply_override(config, override)
    return config


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
