"""Third-party chatter stays out of tunekit's output: transformers' progress bars and false token warnings on
building and loading models, Essentia's import-time INFO line."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
from tunekit.models.musicgen import load_musicgen
from tunekit.models.clap import load_clap
from tunekit.models.encodec import load_encodec
from tunekit.prep.tag_dsp import _essentia
load_musicgen("facebook/musicgen-small", tiny=True)  # built on first use, then loaded
load_clap(tiny=True)
load_encodec("facebook/encodec_32khz", tiny=True)
_essentia()
print("loaded")
"""


def test_building_and_loading_models_prints_nothing(tmp_path):
    env = {**os.environ, "TUNEKIT_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "loaded", res.stdout
    noise = [line for line in res.stderr.splitlines() if line.strip()]
    assert noise == [], noise
