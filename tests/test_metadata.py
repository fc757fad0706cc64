"""Corpus metadata: sidecar JSON, metadata.csv/tsv, embedded tags, and the FMA / MTG-Jamendo converters."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.corpus.adapters import fma_audio_path, fma_to_metadata_csv, jamendo_to_metadata_csv
from tunekit.corpus.metadata import load_corpus_metadata
from tunekit.errors import ConfigError


def _wav(path: Path, **tags: str) -> Path:
    """0.1 s of silence (format from the extension) with the given tags (title, artist, copyright, genre…)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(str(path), "w", samplerate=8000, channels=1) as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(np.zeros(800, dtype=np.float32))
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def test_sources_merge_field_by_field(tmp_path: Path) -> None:
    audio = _wav(tmp_path / "album" / "song.wav", title="Embedded Title", artist="Embedded Artist",
                 genre="ambient", copyright="CC BY 4.0")
    _write_csv(tmp_path / "metadata.csv",
               ["path", "License", "artist", "title", "tags", "instrumental", "bpm"],
               [["album/song.wav", "CC-BY-SA-4.0", "CSV Artist", "CSV Title", "x; y", "yes", "120"]])
    (tmp_path / "album" / "song.json").write_text(json.dumps(
        {"title": "Sidecar Title", "tags": ["lofi", "chill"], "source_id": 42, "mood": "calm", "url": ""}))
    meta = load_corpus_metadata(tmp_path).for_track(audio)
    assert meta.title == "Sidecar Title"  # sidecar beats CSV and tags
    assert meta.artist == "CSV Artist"  # CSV beats embedded tags
    assert meta.genre == "ambient"  # only the embedded tags have it
    assert meta.license == "CC-BY-SA-4.0" and meta.license_source == "csv"
    assert meta.license_info.family == "by-sa" and meta.license_info.spdx == "CC-BY-SA-4.0"
    assert meta.tags == ["lofi", "chill"] and meta.instrumental is True
    assert meta.source_id == "42" and meta.url is None  # empty sidecar values do not override
    assert meta.extra == {"bpm": "120", "mood": "calm"}
    assert meta.metadata_source == "sidecar+csv+embedded"
    assert meta.problems == []


def test_a_sidecar_and_csv_licence_conflict_is_recorded(tmp_path: Path) -> None:
    _write_csv(tmp_path / "metadata.csv", ["path", "license"], [
        ["clash.wav", "CC BY-ND 4.0"],
        ["same.wav", "CC-BY-4.0"],
        ["unversioned.wav", "CC-BY-SA-4.0"],
        ["silent.wav", "CC-BY-NC-4.0"],
    ])
    sidecars = {"clash": "Attribution-NonCommercial-ShareAlike 4.0 International",
                "same": "https://creativecommons.org/licenses/by/4.0/", "unversioned": "Attribution-ShareAlike",
                "silent": "unknown"}
    for stem, licence in sidecars.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps({"license": licence}))
    corpus = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    clash = corpus.for_track(tmp_path / "clash.wav")
    assert clash.license_info.id == "CC-BY-NC-SA-4.0" and clash.license_source == "sidecar"
    assert clash.license_conflict == "sidecar: CC-BY-NC-SA-4.0; csv: CC-BY-ND-4.0"
    assert clash.license_candidates == {"sidecar": sidecars["clash"], "csv": "CC BY-ND 4.0"}
    # Two spellings of one licence, or one licence with and without its version, agree.
    for stem in ("same", "unversioned"):
        meta = corpus.for_track(tmp_path / f"{stem}.wav")
        assert meta.license_conflict is None and meta.license_candidates == {} and meta.license_source == "sidecar"
    # A sidecar that says nothing about the licence does not hide the table's licence, nor conflict with it.
    silent = corpus.for_track(tmp_path / "silent.wav")
    assert (silent.license_info.id, silent.license_source, silent.license_conflict) == ("CC-BY-NC-4.0", "csv", None)


def test_embedded_tags_alone(tmp_path: Path) -> None:
    licensed = _wav(tmp_path / "a.wav", artist="X", copyright="https://creativecommons.org/licenses/by/4.0/")
    notice = _wav(tmp_path / "b.wav", artist="Y", copyright="(c) 2020 Y, all rights reserved")
    corpus = load_corpus_metadata(tmp_path)
    a = corpus.for_track(licensed)
    assert a.license_info.spdx == "CC-BY-4.0" and a.license_source == "embedded"
    assert a.metadata_source == "embedded"
    # A copyright notice is not a licence: kept aside, the licence stays unknown.
    b = corpus.for_track(notice)
    assert b.license is None and b.license_info.family == "unknown"
    assert b.extra == {"copyright": "(c) 2020 Y, all rights reserved"}
    plain = _wav(tmp_path / "c.wav")
    assert corpus.for_track(Path("c.wav")).metadata_source == "none"  # relative to the root
    assert load_corpus_metadata(tmp_path, read_embedded_tags=False).for_track(licensed).license is None
    assert plain.exists()


def test_value_parsing_and_problems(tmp_path: Path) -> None:
    _write_csv(tmp_path / "metadata.csv", ["path", "license", "tags", "instrumental"], [
        ["a.wav", "CC0-1.0", "rock, pop; jazz ,", "1"],
        ["b.wav", "CC0-1.0", "", "maybe"],
        ["c.wav", "CC0-1.0", "", "FALSE"],
    ])
    corpus = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    a = corpus.for_track(tmp_path / "a.wav")
    assert a.tags == ["rock", "pop", "jazz"] and a.instrumental is True
    b = corpus.for_track(tmp_path / "b.wav")
    assert b.instrumental is None and len(b.problems) == 1 and "instrumental" in b.problems[0]
    assert corpus.for_track(tmp_path / "c.wav").instrumental is False


def test_malformed_sidecar_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"license": "CC-BY-4.0",')
    (tmp_path / "list.json").write_text('["CC-BY-4.0"]')
    _write_csv(tmp_path / "metadata.csv", ["path", "license"], [["bad.wav", "CC-BY-SA-4.0"]])
    corpus = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    bad = corpus.for_track(tmp_path / "bad.wav")
    assert bad.problems and bad.problems[0].startswith("sidecar_invalid: bad.json")
    assert bad.license == "CC-BY-SA-4.0"  # the other sources still count
    listed = corpus.for_track(tmp_path / "list.wav")
    assert listed.problems and "JSON object" in listed.problems[0]


def test_paths_must_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    outside = _wav(tmp_path / "secret.wav", artist="Outside")
    _write_csv(root / "metadata.csv", ["path", "license"], [
        ["../secret.wav", "CC0-1.0"],
        [str(outside), "CC0-1.0"],
        ["C:\\music\\x.wav", "CC0-1.0"],
        ["sub/../../secret.wav", "CC0-1.0"],
        ["", "CC0-1.0"],
        ["sub\\ok.wav", "CC-BY-4.0"],
        ["./sub/ok.wav", "CC0-1.0"],
    ])
    corpus = load_corpus_metadata(root, read_embedded_tags=False)
    assert list(corpus.rows) == ["sub/ok.wav"]
    assert len(corpus.problems) == 6
    assert sum("not inside the corpus root" in p for p in corpus.problems) == 4
    assert any("repeats an earlier row" in p for p in corpus.problems)
    assert corpus.for_track(root / "sub" / "ok.wav").license == "CC-BY-4.0"
    assert corpus.for_track(outside).license is None  # never looked up through the table


def test_table_errors(tmp_path: Path) -> None:
    _write_csv(tmp_path / "metadata.csv", ["name", "license"], [["a.wav", "CC0-1.0"]])
    with pytest.raises(ConfigError) as e:
        load_corpus_metadata(tmp_path)
    assert e.value.key == str(tmp_path / "metadata.csv") and "'path' column" in str(e.value)
    _write_csv(tmp_path / "metadata.csv", ["path", "license"], [["a.wav", "CC0-1.0"]])
    _write_csv(tmp_path / "metadata.tsv", ["path", "license"], [["a.wav", "CC0-1.0"]], delimiter="\t")
    with pytest.raises(ConfigError, match="keep one"):
        load_corpus_metadata(tmp_path)
    (tmp_path / "metadata.csv").unlink()
    corpus = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    assert corpus.table_path == tmp_path / "metadata.tsv"
    assert corpus.for_track(tmp_path / "a.wav").license_info.family == "cc0"


def test_a_hugging_face_audiofolder_layout_is_read(tmp_path: Path) -> None:
    """AudioFolder datasets name the file in `file_name`, in metadata.csv or metadata.jsonl (JSON values typed)."""
    audio = _wav(tmp_path / "train" / "a.wav")
    other = _wav(tmp_path / "train" / "b.wav")
    lines = [json.dumps({"file_name": "train/a.wav", "license": "CC-BY-4.0", "artist": "Ana", "tags": ["lofi", "jazz"],
                         "instrumental": True, "bpm": 90}),
             "",
             "not json",
             json.dumps(["train/b.wav"]),
             json.dumps({"file_name": "train/b.wav", "licence": "cc0"})]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    a, b = corpus.for_track(audio), corpus.for_track(other)
    assert (a.license, a.artist, a.tags, a.instrumental, a.extra) == ("CC-BY-4.0", "Ana", ["lofi", "jazz"], True,
                                                                     {"bpm": 90})
    assert a.license_source == "csv" and b.license_info.family == "cc0"
    assert corpus.problems == ["metadata.jsonl line 3: not JSON (Expecting value); row ignored",
                               "metadata.jsonl line 4: not a JSON object; row ignored"]
    (tmp_path / "metadata.jsonl").unlink()
    _write_csv(tmp_path / "metadata.csv", ["file_name", "license"], [["train/a.wav", "CC0-1.0"]])
    assert load_corpus_metadata(tmp_path, read_embedded_tags=False).for_track(audio).license == "CC0-1.0"
    (tmp_path / "metadata.jsonl").write_text("{}\n")
    with pytest.raises(ConfigError, match="metadata.csv and metadata.jsonl; keep one"):
        load_corpus_metadata(tmp_path)


FMA_HEADER = [
    ["", "album", "album", "artist", "artist", "set", "set", "track", "track", "track", "track", "track", "track",
     "track"],
    ["", "id", "title", "bio", "name", "split", "subset", "duration", "genre_top", "genres", "genres_all",
     "license", "tags", "title"],
    ["track_id", "", "", "", "", "", "", "", "", "", "", "", "", ""],
]


def _fma_fixture(meta_dir: Path, audio_root: Path) -> None:
    """tracks.csv and genres.csv in FMA's layout; audio for tracks 2 and 140 (not 5)."""
    meta_dir.mkdir(parents=True, exist_ok=True)
    rows = [
        ["2", "1", "AWOL - A Way Of Life", "<p>Line one\nline two, with \"quotes\"</p>" + "x" * 200_000, "AWOL",
         "training", "small", "168", "Hip-Hop", "[21]", "[21]",
         "Attribution-NonCommercial-ShareAlike 3.0 International", "[]", "Food"],
        ["5", "1", "AWOL - A Way Of Life", "", "AWOL", "training", "small", "206", "Hip-Hop", "[21]", "[21]",
         "Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International", "['boom bap', 'lo-fi']",
         "This World"],
        ["140", "60", "Constant Hitmaker", "", "Alec K. Redfearn & the Eyesores", "training", "medium", "253",
         "Folk", "[17]", "[17, 103]", "Attribution-Noncommercial-Share Alike 3.0 United States", "", "Queen Of The Wires"],
    ]
    with open(meta_dir / "tracks.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(FMA_HEADER + rows)
    _write_csv(meta_dir / "genres.csv", ["genre_id", "#tracks", "parent", "title", "top_level"],
               [["17", "5", "0", "Folk", "17"], ["21", "8", "0", "Hip-Hop", "21"], ["103", "2", "17", "Folk-Rock", "17"]])
    for track_id in (2, 140):
        path = fma_audio_path(audio_root, track_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ID3")


def test_fma_converter(tmp_path: Path) -> None:
    meta_dir = tmp_path / "fma_metadata"
    corpus = tmp_path / "fma"
    audio_root = corpus / "fma_large"
    _fma_fixture(meta_dir, audio_root)
    assert fma_audio_path(audio_root, 2) == audio_root / "000" / "000002.mp3"

    report = fma_to_metadata_csv(meta_dir / "tracks.csv", audio_root, corpus / "metadata.csv", observed="2024-05-01")
    assert (report.written, report.missing_audio, report.problems) == (2, 1, [])
    with open(corpus / "metadata.csv", encoding="utf-8", newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["path"] for r in written] == ["fma_large/000/000002.mp3", "fma_large/000/000140.mp3"]
    assert written[1]["tags"] == "Folk; Folk-Rock" and written[1]["fma_subset"] == "medium"

    meta = load_corpus_metadata(corpus)
    food = meta.for_track(audio_root / "000" / "000002.mp3")  # not decodable: embedded tags are skipped
    assert (food.title, food.artist, food.genre, food.source, food.source_id) == ("Food", "AWOL", "Hip-Hop", "fma", "2")
    assert food.license_info.spdx == "CC-BY-NC-SA-3.0" and food.date_observed == "2024-05-01"
    queen = meta.for_track(audio_root / "000" / "000140.mp3")
    assert queen.artist == "Alec K. Redfearn & the Eyesores"
    assert (queen.license_info.family, queen.license_info.jurisdiction) == ("by-nc-sa", "us")
    assert queen.extra == {"fma_subset": "medium"}

    everything = fma_to_metadata_csv(meta_dir / "tracks.csv", audio_root, corpus / "all.csv", only_existing=False)
    assert everything.written == 3
    with pytest.raises(ConfigError, match="not inside the folder"):
        fma_to_metadata_csv(meta_dir / "tracks.csv", audio_root, tmp_path / "elsewhere" / "m.csv")
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        fma_to_metadata_csv(meta_dir / "tracks.csv", audio_root, corpus / "m.csv", observed="May 2024")
    (meta_dir / "plain.csv").write_text("track_id,title\n2,Food\n5,This World\n")
    with pytest.raises(ConfigError, match="third header row"):
        fma_to_metadata_csv(meta_dir / "plain.csv", audio_root, corpus / "m.csv")
    (meta_dir / "short.csv").write_text("track_id,title\n")
    with pytest.raises(ConfigError, match="three-row header"):
        fma_to_metadata_csv(meta_dir / "short.csv", audio_root, corpus / "m.csv")
    (meta_dir / "nolicence.csv").write_text(",track,artist\n,title,name\ntrack_id,,\n2,Food,AWOL\n")
    with pytest.raises(ConfigError, match=r"\(track, license\)"):
        fma_to_metadata_csv(meta_dir / "nolicence.csv", audio_root, corpus / "m.csv")


def _jamendo_fixture(repo: Path, audio_root: Path) -> None:
    """MTG-Jamendo's metadata files under `repo` (data/autotagging.tsv, data/raw.meta.tsv,
    audio_licenses.txt) and audio for three of its four tracks."""
    data = repo / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "autotagging.tsv").write_text(
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
        "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\n"
        "track_0000382\tartist_000020\talbum_000046\t82/382.mp3\t211.1\tgenre---classical\tinstrument---voice\n"
        "track_0006719\tartist_000937\talbum_001020\t19/6719.mp3\t190.2\tgenre---alternative\tgenre---pop\t"
        "instrument---piano\tmood/theme---relaxing\n"
        "track_0000759\tartist_000103\talbum_000124\t59/759.mp3\t379.8\tgenre---pop\n",
        encoding="utf-8")
    # Titles in raw.meta.tsv hold unmatched quotes; one row has an empty extra cell after the title.
    (data / "raw.meta.tsv").write_text(
        "TRACK_ID\tARTIST_ID\tALBUM_ID\tTRACK_NAME\tARTIST_NAME\tALBUM_NAME\tRELEASEDATE\tURL\n"
        "track_0000214\tartist_000014\talbum_000031\t\"Ouverture\tSlightly\tAlbum\t2004-12-28\t"
        "https://www.jamendo.com/track/214\n"
        "track_0006719\tartist_000937\talbum_001020\tRain\t\tPianist\tRecords\t2008-01-01\t"
        "https://www.jamendo.com/track/6719\n",
        encoding="utf-8")
    (repo / "audio_licenses.txt").write_text(
        "14/214.mp3\n"
        "Ouverture by Slightly: https://www.jamendo.com/track/214\n"
        "Available under a Creative Commons Attribution-NonCommercial-ShareAlike license: "
        "http://creativecommons.org/licenses/by-nc-sa/3.0/\n"
        "\n"
        "19/6719.mp3\n"
        "Rain by Pianist: https://www.jamendo.com/track/6719\n"
        "Available under a Creative Commons Attribution license: http://creativecommons.org/licenses/by/3.0/\n",
        encoding="utf-8")
    for rel in ("14/214.mp3", "19/6719.low.mp3", "82/382.mp3"):  # 6719 only in the low-quality download
        (audio_root / rel).parent.mkdir(parents=True, exist_ok=True)
        (audio_root / rel).write_bytes(b"ID3")


def test_jamendo_converter(tmp_path: Path) -> None:
    data = tmp_path / "mtg" / "data"
    audio_root = tmp_path / "mtg" / "audio"
    _jamendo_fixture(tmp_path / "mtg", audio_root)
    out = tmp_path / "mtg" / "metadata.csv"
    report = jamendo_to_metadata_csv(data / "autotagging.tsv", audio_root, out, observed="2024-06-30",
                                     licenses=tmp_path / "mtg" / "audio_licenses.txt", meta_tsv=data / "raw.meta.tsv")
    assert (report.written, report.missing_audio) == (3, 1)
    corpus = load_corpus_metadata(tmp_path / "mtg")
    assert sorted(corpus.rows) == ["audio/14/214.mp3", "audio/19/6719.low.mp3", "audio/82/382.mp3"]

    ouverture = corpus.for_track(audio_root / "14" / "214.mp3")
    assert (ouverture.title, ouverture.artist, ouverture.url) == (
        '"Ouverture', "Slightly", "https://www.jamendo.com/track/214")
    assert ouverture.license_info.spdx == "CC-BY-NC-SA-3.0" and ouverture.date_observed == "2024-06-30"
    rain = corpus.for_track(audio_root / "19" / "6719.low.mp3")
    assert (rain.artist, rain.genre) == ("Pianist", "alternative, pop")
    assert rain.tags == ["alternative", "pop", "piano", "relaxing"]
    assert rain.extra == {"moods": "relaxing", "instruments": "piano"}
    assert rain.license_info.spdx == "CC-BY-3.0"
    voice = corpus.for_track(audio_root / "82" / "382.mp3")  # no licence known: no observation date either
    assert voice.license_info.family == "unknown" and voice.date_observed is None
    assert voice.url == "https://www.jamendo.com/track/382"

    # Licences as a CSV keyed by track id, as fetched from Jamendo's API (license_ccurl).
    _write_csv(tmp_path / "lic.csv", ["track_id", "license_ccurl"],
               [["track_0000382", "http://creativecommons.org/licenses/by-sa/3.0/"]])
    jamendo_to_metadata_csv(data / "autotagging.tsv", audio_root, out, observed="2024-07-01",
                            licenses=tmp_path / "lic.csv")
    voice = load_corpus_metadata(tmp_path / "mtg").for_track(audio_root / "82" / "382.mp3")
    assert voice.license_info.spdx == "CC-BY-SA-3.0" and voice.date_observed == "2024-07-01"

    _write_csv(tmp_path / "bad.csv", ["id_of_track", "lic"], [["track_0000382", "CC0-1.0"]])
    with pytest.raises(ConfigError, match="track id column"):
        jamendo_to_metadata_csv(data / "autotagging.tsv", audio_root, out, licenses=tmp_path / "bad.csv")
    (data / "wrong.tsv").write_text("ID\tFILE\n1\ta.mp3\n")
    with pytest.raises(ConfigError, match="not an MTG-Jamendo TSV"):
        jamendo_to_metadata_csv(data / "wrong.tsv", audio_root, out)


def _readme_blocks(repo_root: Path, language: str) -> list[str]:
    """Code blocks of data/README.md in the sections on metadata and corpora (before "Prep output")."""
    text = (repo_root / "data" / "README.md").read_text(encoding="utf-8").split("\n## Prep output")[0]
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_data_readme_examples_run(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metadata examples and both converter snippets in data/README.md work as written."""
    sidecar, = _readme_blocks(repo_root, "json")
    table, = _readme_blocks(repo_root, "csv")
    _wav(tmp_path / "album" / "night_drive.flac")
    (tmp_path / "metadata.csv").write_text(table)
    (tmp_path / "album" / "night_drive.json").write_text(sidecar)
    meta = load_corpus_metadata(tmp_path).for_track(tmp_path / "album" / "night_drive.flac")
    assert meta.problems == [] and meta.metadata_source == "sidecar+csv"
    assert (meta.license_info.spdx, meta.tags, meta.instrumental) == ("CC-BY-4.0", ["synthwave", "night"], True)

    monkeypatch.chdir(tmp_path)
    _fma_fixture(Path("fma/fma_metadata"), Path("fma/fma_full"))
    _jamendo_fixture(Path("mtg-jamendo-dataset"), Path("mtg/audio"))
    snippets = _readme_blocks(repo_root, "python")
    assert len(snippets) == 2
    for code in snippets:
        exec(compile(code, "data/README.md", "exec"), {})
    # Relative paths given to for_track are relative to the corpus root.
    assert load_corpus_metadata(Path("fma")).for_track(Path("fma_full/000/000002.mp3")).title == "Food"
    rain = load_corpus_metadata(Path("mtg")).for_track(Path("audio/19/6719.low.mp3"))
    assert rain.license_info.spdx == "CC-BY-3.0" and rain.date_observed == "2024-06-30"


def test_converter_verbs_write_what_the_functions_write(tmp_path: Path) -> None:
    """`tunekit corpus fma` / `corpus jamendo` are the converters on the command line; nothing written is a failure."""
    from tunekit.cli.main import main

    meta_dir, corpus = tmp_path / "fma_metadata", tmp_path / "fma"
    _fma_fixture(meta_dir, corpus / "fma_large")
    args = [f"tracks={meta_dir / 'tracks.csv'}", f"audio={corpus / 'fma_large'}", "observed=2024-05-01"]
    assert main(["corpus", "fma", *args, f"out={corpus / 'metadata.csv'}"]) == 0
    fma_to_metadata_csv(meta_dir / "tracks.csv", corpus / "fma_large", corpus / "direct.csv", observed="2024-05-01")
    assert (corpus / "metadata.csv").read_text() == (corpus / "direct.csv").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["corpus", "fma", f"tracks={meta_dir / 'tracks.csv'}", f"audio={empty}",
                 f"out={tmp_path / 'none.csv'}"]) == 1  # no track has audio there

    mtg = tmp_path / "mtg"
    _jamendo_fixture(mtg, mtg / "audio")
    assert main(["corpus", "jamendo", f"tsv={mtg / 'data' / 'autotagging.tsv'}", f"audio={mtg / 'audio'}",
                 f"out={mtg / 'metadata.csv'}", f"licenses={mtg / 'audio_licenses.txt'}",
                 f"meta={mtg / 'data' / 'raw.meta.tsv'}", "observed=2024-06-30"]) == 0
    assert sorted(load_corpus_metadata(mtg).rows) == ["audio/14/214.mp3", "audio/19/6719.low.mp3", "audio/82/382.mp3"]
    assert main(["corpus", "jamendo", f"tsv={tmp_path / 'nope.tsv'}", f"audio={mtg / 'audio'}",
                 f"out={mtg / 'x.csv'}"]) == 2
