"""Loaders for every pretrained model tunekit uses, and the tiny-model kit behind `models=tiny`.

Each loader (`musicgen.load_musicgen`, `encodec.load_encodec`, `demucs.load_demucs`,
`clap.load_clap`, `vggish.load_vggish`) takes the configured real id and loads it with the
library's own loader. With `tiny=True` the id is swapped (`registry.resolve`) for a tiny, seeded,
randomly initialised model of the same class and variant, written once into the cache in the real
checkpoint's on-disk layout and then loaded through exactly the same code. `registry.MODELS` lists
every real id tunekit knows; `registry.DEFAULTS` the one each loader uses by default.

Nothing heavy is imported here: torch, transformers and demucs load when a loader runs.
"""
