"""The model card: Hugging Face front matter, licences of the training tracks apart from evaluation-only
tracks, a "Use restrictions" section, and the same card in every weights folder."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _train_fixtures import make_dataset, train_cfg

from tunekit.data.tokens import TokenSet
from tunekit.train.export import data_card, model_card, write_model_card


def front_matter(card: str) -> dict:
    m = re.match(r"---\n(.*?)\n---\n", card, flags=re.S)
    assert m, card[:200]
    return yaml.safe_load(m.group(1))


def section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def dataset(root: Path, tracks: list[tuple[str, str]]) -> Path:
    """A token dataset with one (split, licence id) per track, the licence written as prep writes it."""
    make_dataset(root, tracks=tuple(split for split, _ in tracks), windows_per_track=1, last_partial=None)
    for name in ("windows.parquet", "tracks.parquet"):
        table = pq.read_table(root / name).to_pylist()
        for row in table:
            row["license"] = tracks[int(row["track_id"][4:], 16)][1]
        pq.write_table(pa.Table.from_pylist(table), root / name)
    return root


def card_for(tmp_path: Path, tracks: list[tuple[str, str]], *overrides: str, tiny: bool = True,
             base: str = "facebook/musicgen-small") -> str:
    root = dataset(tmp_path / "data", tracks)
    cfg = train_cfg(root, tmp_path / "run", *overrides)
    cfg.models.tiny = tiny
    tokens = TokenSet(root)
    data = data_card(tokens, tokens.indices("train"), tokens.indices("valid"))
    return model_card(tmp_path / "run", cfg=cfg, base=base, base_path=base, trainable=10, total=100, data=data,
                      metrics={"step": 4}, attribution=[])


def test_front_matter_and_restrictions_follow_the_training_tracks_only(tmp_path):
    card = card_for(tmp_path, [("train", "CC-BY-SA-4.0"), ("train", "CC0-1.0"), ("train", "CC-BY-4.0"),
                               ("valid", "CC-BY-NC-4.0"), ("test", "CC-BY-NC-SA-3.0")])
    meta = front_matter(card)
    assert meta == {
        "license": "cc-by-sa-4.0", "base_model": "facebook/musicgen-small", "base_model_relation": "adapter",
        "library_name": "peft", "pipeline_tag": "text-to-audio",
        "tags": ["tunekit", "musicgen", "text-to-audio", "lora"],
    }
    data = section(card, "Data")
    assert "training tracks: CC-BY-4.0 (1 track), CC-BY-SA-4.0 (1 track), CC0-1.0 (1 track)" in data
    assert "never trained on): 2 tracks: CC-BY-NC-4.0 (1 track), CC-BY-NC-SA-3.0 (1 track)" in data
    restrictions = section(card, "Use restrictions")
    assert "**ShareAlike**: 1 track of the training data (CC-BY-SA-4.0)" in restrictions
    assert "license it under CC BY-SA 4.0" in restrictions
    assert "NonCommercial" not in restrictions  # the NC tracks were only evaluated on
    assert "tiny random stand-in" in restrictions


def test_noncommercial_and_sharealike_obligations_are_stated(tmp_path):
    card = card_for(tmp_path, [("train", "CC-BY-NC-SA-3.0"), ("train", "CC-BY-NC-3.0"), ("valid", "CC0-1.0")])
    assert front_matter(card)["license"] == "cc-by-nc-sa-3.0"
    restrictions = section(card, "Use restrictions")
    assert "**NonCommercial**: 2 tracks of the training data (CC-BY-NC-3.0, CC-BY-NC-SA-3.0)" in restrictions
    assert "**ShareAlike**: 1 track of the training data (CC-BY-NC-SA-3.0)" in restrictions
    assert "license it under CC BY-NC-SA 3.0" in restrictions


def test_the_base_weights_licence_counts_for_a_real_base_model(tmp_path):
    card = card_for(tmp_path, [("train", "CC-BY-4.0"), ("train", "CC0-1.0"), ("valid", "CC0-1.0")], tiny=False)
    assert front_matter(card)["license"] == "cc-by-nc-4.0"  # MusicGen's weights are CC BY-NC 4.0
    restrictions = section(card, "Use restrictions")
    assert "**NonCommercial**: the base model's weights (CC-BY-NC-4.0)" in restrictions
    assert "weights licensed CC-BY-NC-4.0" in section(card, "Training")


def test_licences_without_one_common_licence_are_other_with_a_name(tmp_path):
    card = card_for(tmp_path, [("train", "CC-BY-SA-4.0"), ("train", "CC-BY-NC-4.0"), ("valid", "CC0-1.0")])
    meta = front_matter(card)
    assert (meta["license"], meta["license_name"]) == ("other", "multiple-licenses")
    restrictions = section(card, "Use restrictions")
    assert "No single licence covers" in restrictions and "**NonCommercial**" in restrictions
    unversioned = card_for(tmp_path / "b", [("train", "CC-BY-SA"), ("train", "CC0-1.0"), ("valid", "CC0-1.0")])
    assert "training tracks: CC-BY-SA (1 track), CC0-1.0 (1 track)" in section(unversioned, "Data")
    assert (front_matter(unversioned)["license"], front_matter(unversioned)["license_name"]) == ("other", "cc-by-sa")


@pytest.mark.parametrize("method,library,tag", [("lora", "peft", "lora"), ("full", "transformers", "full-fine-tune")])
def test_every_weights_folder_carries_the_card(tmp_path, method, library, tag):
    root = dataset(tmp_path / "data", [("train", "CC-BY-4.0"), ("train", "CC0-1.0"), ("valid", "CC0-1.0")])
    run = tmp_path / "run"
    cfg = train_cfg(root, run, f"method={method}")
    folder = run / ("adapter" if method == "lora" else "model")
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("# Model Card for Model ID\n")  # what peft's save_pretrained leaves
    tokens = TokenSet(root)
    data = data_card(tokens, tokens.indices("train"), tokens.indices("valid"))
    write_model_card(run, cfg=cfg, base="facebook/musicgen-small", base_path="x", trainable=1, total=2, data=data,
                     metrics={}, attribution=[])
    card, inner = (run / "README.md").read_text(), (folder / "README.md").read_text()
    assert inner == card and "Model Card for Model ID" not in inner
    meta = front_matter(inner)
    assert meta["library_name"] == library and tag in meta["tags"] and meta["license"] == "cc-by-4.0"
