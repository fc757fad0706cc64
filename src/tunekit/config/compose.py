"""Compose a verb's configuration with Hydra's compose API and validate it against its schema.

Hydra runs without `@hydra.main`: no working-directory change, no `outputs/` or `.hydra/` folders.
Recipes (`recipe=lofi`) and pipelines (`pipeline=musicgen`) are Hydra config groups named
`recipes` and `pipelines`, found first in the user's directories (./recipes, $TUNEKIT_RECIPES_PATH,
a path given on the command line), then in the shipped ones. Every Hydra or OmegaConf error is
turned into a one-line `ConfigError` that names the key and the valid choices.
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.paths import resource_dir, user_resource_dirs

# User-facing override keys → Hydra group names (the folders are plural, like the repository's).
GROUP_ALIASES = {"recipe": "recipes", "pipeline": "pipelines"}
_GROUP_NOUNS = {v: k for k, v in GROUP_ALIASES.items()}
_OVERRIDE_RE = re.compile(r"^(?P<prefix>[+~]{0,2})(?P<key>[A-Za-z_][\w.@/-]*)(?P<rest>=.*)?$", re.S)


_VIEWS: dict[tuple[str, Path], Path] = {}


def _search_root(kind: str, directory: Path) -> Path:
    """A private search-path root whose only entry is `<kind>/` → `directory`.

    Hydra treats every folder of a search root as a config group, so the root must not be the
    user's working directory or the repository (where `data/` or `out/` would shadow the `data=`
    and `out=` keys).
    """
    key = (kind, directory.resolve())
    if key not in _VIEWS:
        root = Path(tempfile.mkdtemp(prefix="tunekit-search-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        (root / kind).symlink_to(key[1], target_is_directory=True)
        _VIEWS[key] = root
    return _VIEWS[key]


def _translate_overrides(overrides: list[str]) -> tuple[list[str], list[Path]]:
    """Map `recipe=`/`pipeline=` onto their groups; a value that is a YAML path adds its folder to the search."""
    out: list[str] = []
    roots: list[Path] = []
    for item in overrides:
        m = _OVERRIDE_RE.match(item)
        if not m or m["key"] not in GROUP_ALIASES:
            out.append(item)
            continue
        group = GROUP_ALIASES[m["key"]]
        rest = m["rest"] or ""
        value = rest[1:]
        if value.endswith((".yaml", ".yml")):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(f"{m['key']} file not found: {value}", key=m["key"])
            roots.append(_search_root(group, path.parent))
            rest = "=" + path.stem
        out.append(f"{m['prefix']}{group}{rest}")
    return out, roots


def search_roots(extra_roots: list[Path] | None = None) -> list[Path]:
    """Search-path roots in priority order: command-line paths, user folders, then the shipped ones."""
    roots = list(extra_roots or [])
    for kind in GROUP_ALIASES.values():
        for d in user_resource_dirs(kind):
            if d.is_dir():
                roots.append(_search_root(kind, d))
    for kind in GROUP_ALIASES.values():
        shipped = resource_dir(kind)
        if shipped.is_dir():
            roots.append(_search_root(kind, shipped))
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def group_options(group: str, extra_roots: list[Path] | None = None) -> list[str]:
    """Names available in a config group (e.g. `recipes`, `method`), across all search roots."""
    dirs = [r / group for r in search_roots(extra_roots)] + [resource_dir("configs") / group]
    names = {p.stem for d in dirs if d.is_dir() for p in d.iterdir() if p.suffix in (".yaml", ".yml")}
    return sorted(names)


def schema_name(config_name: str) -> str:
    """The ConfigStore name of a verb's schema, the first entry of `configs/<config_name>.yaml`'s defaults list."""
    return f"{config_name}_schema"


def _register_schema(config_name: str, schema: type | None) -> None:
    """Store the verb's dataclass schema in Hydra's ConfigStore: it holds every default, the YAML only overrides."""
    if schema is None:
        return
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=schema_name(config_name), node=schema)


def _hydra_compose(config_name: str, overrides: list[str], roots: list[Path], return_hydra_config: bool = False,
                   schema: type | None = None):
    from hydra import compose, initialize_config_dir

    _register_schema(config_name, schema)
    config_dir = resource_dir("configs")
    searchpath = "hydra.searchpath=[" + ",".join(f"file://{r}" for r in roots) + "]"
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3", job_name="tunekit"):
        return compose(
            config_name=config_name,
            overrides=[searchpath, *overrides],
            return_hydra_config=return_hydra_config,
        )


def _friendly(exc: Exception, config_name: str, overrides: list[str], roots: list[Path],
              schema: type | None = None) -> ConfigError:
    """Turn a Hydra/OmegaConf exception into a one-line ConfigError naming the key and the choices."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    text = str(exc)
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", text)
        if m:
            group, option = m.groups()
            noun = _GROUP_NOUNS.get(group, group)
            choices = ", ".join(group_options(group, roots)) or "(none)"
            return ConfigError(f"unknown {noun} '{option}'; available: {choices}", key=noun)
        m = re.search(r"Could not find '([^']+)'", text)
        if m and m.group(1) == config_name:
            return ConfigError(f"no config '{config_name}.yaml' in {resource_dir('configs')}")
    if isinstance(exc, OverrideParseException):
        first = text.splitlines()[0]
        m = re.search(r"Error parsing override '([^'=]+)'", first)
        if m:
            return ConfigError(
                f"cannot parse '{m.group(1)}': arguments are key=value (e.g. out={m.group(1)}); "
                f"`tunekit {config_name} --help` lists the keys"
            )
        return ConfigError(f"cannot parse override: {first}")
    if isinstance(exc, ConfigCompositionException):
        m = re.search(r"Could not override '([^']+)'", text)
        if m:
            key = m.group(1)
            return ConfigError(_unknown_key_message(key, config_name, roots, schema), key=key)
        m = re.search(r"Could not (?:append to|delete from) config\. '([^']+)'", text)
        if m:
            return ConfigError(f"{text.splitlines()[0]}", key=m.group(1))
        cause = exc.__cause__
        if cause is not None:
            return _friendly_omegaconf(cause, config_name, roots, schema)
        return ConfigError(text.splitlines()[0])
    return _friendly_omegaconf(exc, config_name, roots, schema)


def _unknown_key_message(key: str, config_name: str, roots: list[Path], schema: type | None = None) -> str:
    """'unknown key a.b.c; valid keys under a.b: x, y' computed from the config without overrides."""
    from omegaconf import DictConfig

    try:
        base = _hydra_compose(config_name, [], roots, schema=schema)
    except Exception:  # noqa: BLE001 - the message is best-effort; the key is still named
        return f"unknown key '{key}'"
    parent_path, _, _ = key.rpartition(".")
    node: Any = base
    for part in [p for p in parent_path.split(".") if p]:
        if isinstance(node, DictConfig) and part in node:
            node = node[part]
        else:
            sections = sorted(str(k) for k, v in node.items_ex(resolve=False) if isinstance(v, DictConfig)) \
                if isinstance(node, DictConfig) else []
            close = difflib.get_close_matches(part, sections, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            where = f"'{parent_path}'" if parent_path == part else f"'{part}' (in '{parent_path}')"
            return f"unknown key '{key}': {where} is not a config section; {hint}sections: {', '.join(sections)}"
    where = f" under '{parent_path}'" if parent_path else ""
    valid = ", ".join(sorted(str(k) for k in node.keys())) if isinstance(node, DictConfig) else ""
    return f"unknown key '{key}'; valid keys{where}: {valid}"


def _friendly_omegaconf(exc: BaseException, config_name: str, roots: list[Path],
                        schema: type | None = None) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None) or None
        msg = str(exc).splitlines()[0]
        if isinstance(exc, ValidationError) and key:
            hint = f"; give a list, e.g. {key}=[a,b]" if "ListConfig" in msg else ""
            return ConfigError(f"invalid value for '{key}': {msg}{hint}", key=key)
        if isinstance(exc, ConfigKeyError) and key:
            return ConfigError(_unknown_key_message(key, config_name, roots, schema), key=key)
        return ConfigError(f"{key + ': ' if key else ''}{msg}", key=key)
    return ConfigError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def compose_raw(config_name: str, schema: type, overrides: list[str] | None = None,
                return_hydra_config: bool = False):
    """Compose `configs/<config_name>.yaml` over its schema with overrides; no `problems()` checks.
    Raises ConfigError."""
    translated, extra_roots = _translate_overrides(list(overrides or []))
    roots = search_roots(extra_roots)
    try:
        return _hydra_compose(config_name, translated, roots, return_hydra_config, schema)
    except ConfigError:
        raise
    except Exception as exc:  # Hydra and OmegaConf errors become one-line ConfigErrors
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(exc, (HydraException, OmegaConfBaseException)):
            raise _friendly(exc, config_name, translated, roots, schema) from exc
        raise


def load_config(
    config_name: str,
    overrides: list[str] | None,
    schema: type,
    *,
    allow_missing: bool = False,
    check: bool = True,
):
    """Compose and validate a verb's config over its schema. A schema's `fill_defaults(cfg)` classmethod, when
    defined, fills values whose default depends on others. Missing required values and the schema's own
    checks (a `problems(cfg) -> list[str]` classmethod, when defined) are all reported at once, in one
    ConfigErrors. With `allow_missing` (printing a config) required values may stay `???`; every
    other problem is still raised. `check=False` skips the schema's checks (help text)."""
    from omegaconf import OmegaConf

    overrides = _bare_lists(list(overrides or []), list_keys(schema))
    cfg = compose_raw(config_name, schema, overrides)
    OmegaConf.set_struct(cfg, True)
    filler = getattr(schema, "fill_defaults", None)
    if callable(filler):  # defaults that depend on another value (e.g. the checkpoint of the chosen family)
        filler(cfg)
    missing = missing_keys(cfg)
    problems = [] if allow_missing else [f"missing value for '{k}' (set it with {k}=...)" for k in missing]
    checker = getattr(schema, "problems", None) if check else None
    if callable(checker):
        problems += list(checker(_missing_as_none(cfg) if missing else cfg))
    if problems:
        raise ConfigErrors(problems)
    return cfg


def list_keys(schema: type, prefix: str = "") -> set[str]:
    """Dotted keys of the schema's list-valued fields, nested sections included."""
    import typing

    out: set[str] = set()
    if not dataclasses.is_dataclass(schema):
        return out
    try:
        hints = typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 - without hints no key is known to be a list
        return out
    for name, t in hints.items():
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if typing.get_origin(t) is list or any(typing.get_origin(a) is list for a in args):
            out.add(prefix + name)
        elif dataclasses.is_dataclass(t):
            out |= list_keys(t, f"{prefix}{name}.")
    return out


def _bare_lists(overrides: list[str], keys: set[str]) -> list[str]:
    """`key=a` or `key=a,b` for a list key becomes `key=[a]` / `key=[a,b]` (Hydra reads the first as a
    string and the second as a sweep)."""
    out = []
    for item in overrides:
        key, eq, value = item.partition("=")
        bare = eq and key in keys and value and not value.startswith("[") and value not in ("null", "???")
        out.append(f"{key}=[{value}]" if bare else item)
    return out


def missing_keys(cfg: Any) -> list[str]:
    """The dotted keys of required values (`???`) not given, sorted."""
    from omegaconf import OmegaConf

    return sorted(OmegaConf.missing_keys(cfg))


def _missing_as_none(cfg: Any) -> Any:
    """A copy of `cfg` in which every missing value (`???`) reads as None, so the schema's checks
    can look at all the other values (reading a missing value would raise)."""
    from omegaconf import OmegaConf

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return None if node == "???" else node

    return OmegaConf.create(fill(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)))


def as_schema(schema: type, cfg: Any) -> Any:
    """A plain `schema` instance (picklable, typed) from an instance, a dict or a DictConfig."""
    if isinstance(cfg, schema):
        return cfg
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg))


def flat_keys(cfg: Any, schema: type | None) -> list[tuple[str, str, str]]:
    """(dotted key, value as typed on the command line, one-line doc) for every leaf of a composed config;
    docs come from the schema's dataclasses, nested sections included."""
    from omegaconf import DictConfig, OmegaConf

    out: list[tuple[str, str, str]] = []

    def walk(node: Any, prefix: str, cls: Any) -> None:
        docs = field_docs(cls) if cls is not None else {}
        hints = _field_types(cls)
        for key in node:
            dotted = f"{prefix}{key}"
            if OmegaConf.is_missing(node, key):
                out.append((dotted, "???", docs.get(str(key), "")))
                continue
            value = node[key]
            if isinstance(value, DictConfig):
                walk(value, f"{dotted}.", hints.get(str(key)))
                continue
            out.append((dotted, _as_override(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value),
                        docs.get(str(key), "")))

    walk(cfg, "", schema)
    return out


def _as_override(value: Any) -> str:
    """A value as it is typed in a key=value override: null, true, [a,b], {k: v}."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_as_override(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_as_override(v)}" for k, v in value.items()) + "}"
    return str(value)


def _field_types(cls: Any) -> dict[str, Any]:
    """Field name -> dataclass type of nested sections of a dataclass (empty for anything else)."""
    import typing

    if cls is None or not dataclasses.is_dataclass(cls):
        return {}
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - docs are best-effort
        return {}
    return {name: t for name, t in hints.items() if dataclasses.is_dataclass(t)}


def field_docs(schema: type) -> dict[str, str]:
    """One-line docs of a dataclass's fields, read from the trailing `# comment` of each field line."""
    import inspect

    docs: dict[str, str] = {}
    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return docs
    names = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else set()
    above: list[str] = []  # a comment block directly above a field documents it too
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"\s+(\w+)\s*:[^#]*?(?:#\s*(.+))?$", line)
        if m and m.group(1) in names:
            doc = m.group(2) or " ".join(above)
            if doc:
                docs[m.group(1)] = doc.strip()
        above = []
    return docs


def to_yaml(cfg) -> str:
    """The resolved config as YAML (what `--cfg job` prints and what runs record)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def group_choices(config_name: str, schema: type, overrides: list[str] | None = None) -> dict[str, str | None]:
    """The config groups a composed config used and the option chosen for each (Hydra's runtime choices)."""
    cfg = compose_raw(config_name, schema, overrides, return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    return {k: v for k, v in choices.items() if not k.startswith("hydra/")}
