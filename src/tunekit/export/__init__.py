"""Exports of a prep output into formats other tools train on.

`audiocraft`: one audio file per window with its `.json` sidecar (MusicInfo fields) and a `data.jsonl`
per split, as audiocraft's `egs/<name>/data.jsonl`. `hf`: Parquet shards whose audio column is the
Hugging Face `datasets` Audio feature, loadable with `datasets.load_dataset("parquet", ...)`.
Both carry the prep output's attribution files and a README listing the licences present.
"""
