"""The `tunekit` command line: `tunekit VERB [key=value ...]` with Hydra override syntax.

Each verb is a primary config (`configs/<name>.yaml`), a dataclass schema and a runner function;
this module only dispatches. Heavy libraries are imported by the runners, so `tunekit --help`
stays fast.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from tunekit import __version__


@dataclass(frozen=True)
class Verb:
    """A CLI verb: its primary config, schema and runner, as lazily imported 'module:attr' strings."""

    name: str
    summary: str
    config: str
    schema: str
    runner: str
    example: str
    shorthands: tuple[tuple[str, str], ...] = ()  # user key → config key, e.g. data= → data.path=
    text_keys: tuple[str, ...] = ()  # keys whose value is free text taken as given (lyrics: `[verse] …` is no list)


VERBS: dict[str, Verb] = {
    v.name: v
    for v in [
        Verb(
            name="corpus synth",
            summary="Synthesise the CC0 demo corpus (known tempo and key, several styles, formats and licences).",
            config="corpus",
            schema="tunekit.corpus.synth:SynthConfig",
            runner="tunekit.corpus.synth:run_synth",
            example="tunekit corpus synth out=data/demo seed=0",
        ),
        Verb(
            name="corpus fma",
            summary="Write metadata.csv (licences, artists, titles, genres) for an FMA download.",
            config="corpus_fma",
            schema="tunekit.corpus.convert:FmaConfig",
            runner="tunekit.corpus.convert:run_fma",
            example="tunekit corpus fma tracks=fma/fma_metadata/tracks.csv audio=fma/fma_full out=fma/metadata.csv "
            "observed=2024-05-01",
        ),
        Verb(
            name="corpus jamendo",
            summary="Write metadata.csv (licences, tags, artists) for an MTG-Jamendo download.",
            config="corpus_jamendo",
            schema="tunekit.corpus.convert:JamendoConfig",
            runner="tunekit.corpus.convert:run_jamendo",
            example="tunekit corpus jamendo tsv=mtg/data/autotagging.tsv audio=mtg/audio out=mtg/metadata.csv "
            "licenses=mtg/audio_licenses.txt observed=2024-06-30",
        ),
        Verb(
            name="prep",
            summary="Turn a folder of licensed music into training data: licences, vocals removed, -14 LUFS, "
            "30 s windows, tags, captions, EnCodec tokens.",
            config="prep",
            schema="tunekit.prep.config:PrepConfig",
            runner="tunekit.prep.run:run_prep",
            example="tunekit prep corpus=data/demo out=out/demo models=tiny",
        ),
        Verb(
            name="train",
            summary="Fine-tune MusicGen (LoRA or full) on a prepared dataset with Accelerate; resumes automatically.",
            config="train",
            schema="tunekit.train.config:TrainConfig",
            runner="tunekit.train.run:run_train",
            example="tunekit train recipe=lofi data=out/lofi out=runs/lofi",
            shorthands=(("data", "data.path"), ("model", "model.name")),
        ),
        Verb(
            name="generate",
            summary="Generate music from text with a fine-tuned run (base + adapter) or any MusicGen model.",
            config="generate",
            schema="tunekit.generate:GenerateConfig",
            runner="tunekit.generate:run_generate",
            shorthands=(("model", "model.name"),),
            text_keys=("lyrics",),
            example='tunekit generate run=runs/lofi prompt="a mellow lo-fi beat with warm piano" duration=20 out=x.wav',
        ),
        Verb(
            name="export",
            summary="Export a prepared dataset for other tools: audiocraft (data.jsonl + sidecars) or Hugging Face Parquet.",
            config="export",
            schema="tunekit.export.config:ExportConfig",
            runner="tunekit.export.run:run_export",
            example="tunekit export format=audiocraft data=out/demo out=exports/demo",
        ),
        Verb(
            name="eval",
            summary="Score music against reference audio: FAD and FAD∞ per embedding, CLAP score, HTML report.",
            config="eval",
            schema="tunekit.eval.config:EvalConfig",
            runner="tunekit.eval.run:run_eval",
            example="tunekit eval generated=samples/ reference=out/demo out=out/eval models=tiny",
        ),
    ]
}

BUILTINS = {
    "ls": "List model families (with their variants), recipes, pipelines and models, one line each.",
    "config": "Print the fully merged config of a verb without running it: tunekit config VERB [overrides].",
}


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _usage() -> str:
    lines = [
        f"tunekit {__version__}: fine-tune open music generation models on music you are allowed to use.",
        "",
        "usage: tunekit VERB [key=value ...] [--help] [--cfg job]",
        "",
        "verbs:",
    ]
    for v in VERBS.values():
        lines.append(f"  {v.name:<14} {v.summary}")
    for name, summary in BUILTINS.items():
        lines.append(f"  {name:<14} {summary}")
    lines += [
        "",
        "Arguments use Hydra override syntax (key=value, group=option); `--cfg job` prints the merged config.",
        "Add models=tiny to any verb that loads a model to use tiny random models offline.",
        "",
        "example:",
        "  tunekit corpus synth out=data/demo",
    ]
    return "\n".join(lines)


def _verb_help(verb: Verb) -> str:
    """A verb's usage: every key with its default and one-line doc, nested sections as dotted keys."""
    from tunekit.config.compose import flat_keys, load_config

    lines = [f"usage: tunekit {verb.name} [key=value ...] [--cfg job]", "", verb.summary, ""]
    try:
        cfg = load_config(verb.config, [], _load(verb.schema), allow_missing=True, check=False)
        schema = verb.schema.replace(":", ".")
        lines.append(f"keys (defaults: {schema} with configs/{verb.config}.yaml's groups; ??? = required; "
                     "null = not set):")
        section = None
        for key, shown, doc in flat_keys(cfg, _load(verb.schema)):
            head = key.rpartition(".")[0]
            if head != section and head:
                lines.append("")
            section = head
            lines.append(f"  {key}={shown}" + (f"    # {doc}" if doc else ""))
    except Exception as exc:  # help must never crash; show what is wrong instead
        lines.append(f"(could not read the config: {exc})")
    lines += ["", "example:", f"  {verb.example}"]
    return "\n".join(lines)


def _run_ls(args: list[str]) -> int:
    from tunekit.cli.listing import list_resources

    print(list_resources(args[0] if args else None))
    return 0


def _run_config(args: list[str]) -> int:
    name, rest = _split_verb(args)
    if name is None:
        print("usage: tunekit config VERB [key=value ...]\n\nexample:\n  tunekit config train recipe=lofi")
        return 2 if not args else 0
    return _print_config(VERBS[name], rest)


def _print_config(verb: Verb, overrides: list[str]) -> int:
    """Print a verb's merged config (`tunekit config VERB`, `--cfg job`). Required values not given
    print as `???` and are listed on stderr; any other problem is an error."""
    from tunekit.config.compose import load_config, missing_keys, to_yaml

    cfg = load_config(verb.config, _expand(verb, overrides), _load(verb.schema), allow_missing=True)
    print(to_yaml(cfg), end="")
    missing = missing_keys(cfg)
    if missing:
        keys = ", ".join(missing)
        print(f"tunekit: note: required values not set (shown as ???): {keys}; "
              f"`tunekit {verb.name}` needs them, e.g. {missing[0]}=...", file=sys.stderr)
    return 0


def _expand(verb: Verb, overrides: list[str]) -> list[str]:
    """Rewrite a verb's shorthand keys (`data=x` → `data.path=x`) in Hydra overrides.

    `model=` is both a config group (`model=musicgen`, `model=acestep-1.5-base`: a family and its checkpoint) and
    the shorthand of `model.name`: a value that is not an option is a checkpoint, and selects the option it
    belongs to as well (its family's, and for ACE-Step its variant's, training defaults).
    """
    out = []
    shorthands = dict(verb.shorthands)
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq and key in verb.text_keys and not (value[:1] in "'\"" and value[-1:] == value[:1]):
            escaped = value.replace("'", "\\'")
            out.append(f"{key}='{escaped}'")
            continue
        if not eq or key not in shorthands:
            out.append(item)
            continue
        if key == "model":
            from tunekit.config.compose import group_options
            from tunekit.families import option_for_checkpoint

            if value in group_options("model"):
                out.append(item)
                continue
            option = option_for_checkpoint(value)
            out += [] if option == "musicgen" else [f"model={option}"]
        out.append(f"{shorthands[key]}={value}")
    return out


def _split_verb(args: list[str]) -> tuple[str | None, list[str]]:
    """('corpus synth', rest) for ['corpus', 'synth', ...]; raises ConfigError for an unknown verb."""
    from tunekit.errors import ConfigError

    if not args or args[0] in ("-h", "--help"):
        return None, args
    for n in (2, 1):
        name = " ".join(args[:n])
        if name in VERBS:
            return name, args[n:]
    groups = sorted({v.name.split()[0] for v in VERBS.values() if " " in v.name})
    if args[0] in groups:
        subs = [v.name for v in VERBS.values() if v.name.startswith(args[0] + " ")]
        raise ConfigError(f"unknown command '{' '.join(args[:2])}'; available: {', '.join(subs)}")
    choices = sorted({v.name.split()[0] for v in VERBS.values()} | set(BUILTINS))
    raise ConfigError(f"unknown verb '{args[0]}'; available: {', '.join(choices)}")


def run(argv: list[str]) -> int:
    """Dispatch argv (without the program name); returns the exit code."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    if argv[0] == "ls":
        return _run_ls(argv[1:])
    if argv[0] == "config":
        return _run_config(argv[1:])
    name, rest = _split_verb(argv)
    if name is None:
        print(_usage())
        return 0
    verb = VERBS[name]
    if any(a in ("-h", "--help") for a in rest):
        print(_verb_help(verb))
        return 0
    if "--cfg" in rest:
        i = rest.index("--cfg")
        return _print_config(verb, rest[:i] + rest[i + 2 :])
    from tunekit.config.compose import load_config

    cfg = load_config(verb.config, _expand(verb, rest), _load(verb.schema))
    return int(_load(verb.runner)(cfg) or 0)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one-line errors with exit code 2 for config problems, 1 for others."""
    from tunekit.errors import TunekitError

    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except TunekitError as exc:
        print(f"tunekit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tunekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `tunekit ls | head`): not an error; silence the final flush.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
