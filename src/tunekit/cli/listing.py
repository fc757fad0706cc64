"""`tunekit ls`: model families with their variants, recipes, pipelines and models, one line each."""

from __future__ import annotations

from pathlib import Path

from tunekit.errors import ConfigError
from tunekit.paths import resource_dir, user_resource_dirs

SECTIONS = ("families", "recipes", "pipelines", "models")


def describe_yaml(path: Path) -> str:
    """The first comment line after the `# @package` header: the file's one-line description."""
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text.startswith("#"):
            if text:
                break
            continue
        body = text.lstrip("#").strip()
        if body and not body.startswith("@package"):
            return body
    return ""


def yaml_entries(kind: str) -> list[tuple[str, str, str]]:
    """(name, description, origin) for every recipe or pipeline; user folders shadow shipped names."""
    seen: dict[str, tuple[str, str, str]] = {}
    for origin, directory in [*[("user", d) for d in user_resource_dirs(kind)], ("shipped", resource_dir(kind))]:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.y*ml")):
            seen.setdefault(path.stem, (path.stem, describe_yaml(path), origin if origin == "user" else ""))
    return sorted(seen.values())


def model_entries() -> list[tuple[str, str, str]]:
    """(id, description, role) for every pretrained model tunekit knows."""
    try:
        from tunekit.models.registry import MODELS
    except ImportError:
        return []
    return [(m.id, m.description, m.role) for m in MODELS]


def family_lines() -> list[str]:
    """Each model family: a summary line, then what it provides and its variants, indented."""
    from tunekit.families import FAMILIES

    lines: list[str] = []
    for f in FAMILIES.values():
        lines.append(f"  {f.name}  {f.summary}")
        lines.append(f"    prep:     pipeline={f.pipeline} (its {f.prep_tail} stage writes the training inputs)")
        lines.append(f"    train:    model={' | '.join(f.options())} ({f.trainer.partition(':')[0]}); writes "
                     + ", ".join(f.run_formats))
        lines.append("    export:   format=" + " | ".join(f.dataset_exports))
        lines.append("    tiny:     models=tiny builds " + ", ".join(f.tiny_models()))
        if f.note:
            lines.append(f"    note:     {f.note}")
        lines.append("    variants: model.name=…")
        width = max((len(v.id) for v in f.variants()), default=0)
        for v in f.variants():
            lines.append(f"      {v.id:<{width}}  {v.description}")
    return lines


def list_resources(section: str | None = None) -> str:
    """The text `tunekit ls [section]` prints."""
    if section is not None and section not in SECTIONS:
        raise ConfigError(f"unknown section '{section}'; available: {', '.join(SECTIONS)}")
    lines: list[str] = []
    for kind in SECTIONS if section is None else (section,):
        lines.append(f"{kind}:")
        if kind == "families":
            lines += [*family_lines(), ""]
            continue
        entries = model_entries() if kind == "models" else yaml_entries(kind)
        if not entries:
            lines.append("  (none)")
        width = max((len(e[0]) for e in entries), default=0)
        for name, desc, extra in entries:
            tag = f" [{extra}]" if extra else ""
            lines.append(f"  {name:<{width}}  {desc}{tag}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
