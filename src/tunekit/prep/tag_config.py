"""Settings of the `tag` stage (`TagConfig`), read by the stage (`tag`) and by the code it runs (`tag_dsp`,
`tag_semantic`)."""

from __future__ import annotations

from dataclasses import dataclass

# Essentia KeyExtractor profiles (the values `tag.key_profile` accepts).
KEY_PROFILES = (
    "bgate", "edma", "edmm", "temperley", "temperley2005", "krumhansl", "diatonic", "weichai", "tonictriad",
    "thpcp", "shaath", "gomez", "noland", "faraldo", "pentatonic", "braw",
)  # fmt: skip


@dataclass
class TagConfig:
    """Settings of the `tag` stage (Essentia DSP features and semantic tags)."""

    # Run the tagging stage (false: the stage passes windows through untouched).
    enabled: bool = True
    # Minimum RhythmExtractor2013 multifeature confidence (0-5.32) for a tempo to be stated.
    tempo_min_confidence: float = 3.5
    # Lower confidence at which a track tempo is still stated when its windows agree with it.
    tempo_confirm_confidence: float = 1.5
    # Essentia KeyExtractor profile: bgate, edma, edmm, temperley, krumhansl, ...
    key_profile: str = "bgate"
    # Minimum KeyExtractor strength (0-1) for a key to be stated (noise scores about 0.6-0.7).
    key_min_strength: float = 0.75
    # Zero-shot genre/mood/instrument tags with CLAP.
    clap: bool = True
    # CLAP checkpoint (hub id or local path) for zero-shot tags.
    clap_model: str = "laion/larger_clap_music"
    # Minimum softmax probability (over one vocabulary, CLAP's logit scale) for a zero-shot tag.
    clap_threshold: float = 0.1
    # Most genres CLAP may add.
    clap_top_k_genres: int = 1
    # Most moods/themes CLAP may add.
    clap_top_k_moods: int = 3
    # Most instruments CLAP may add.
    clap_top_k_instruments: int = 4
    # CLAP analysis window in seconds; a window's audio is cut into these and the embeddings averaged.
    clap_window_seconds: float = 10.0
    # Device for CLAP: auto (cuda when available, else cpu) | cpu | cuda | cuda:N.
    device: str = "auto"
    # Folder with Essentia discogs-effnet .pb/.json files (needs the essentia-tensorflow wheel; CC BY-NC-SA).
    effnet_models_dir: str | None = None
    # Minimum sigmoid probability for an effnet tag.
    effnet_threshold: float = 0.1
    # Map the corpus metadata fields `genre` and `tags` onto the vocabularies (trusted first).
    metadata_tags: bool = True
    # Folder with genres.txt, moodtheme.txt, instruments.txt; None uses the shipped configs/vocab.
    vocab_dir: str | None = None

    def problems(self, key: str = "tag") -> list[str]:
        """Every invalid value, each naming its key; empty when valid."""
        out = []
        if self.key_profile not in KEY_PROFILES:
            profiles = ", ".join(KEY_PROFILES)
            out.append(f"{key}.key_profile={self.key_profile!r} is not an Essentia key profile; use one of {profiles}")
        for name in ("tempo_min_confidence", "tempo_confirm_confidence"):
            if not 0 <= getattr(self, name) <= 5.32:
                out.append(f"{key}.{name}={getattr(self, name)} must be within 0..5.32")
        for name in ("key_min_strength", "clap_threshold", "effnet_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{key}.{name}={getattr(self, name)} must be within 0..1")
        for kind, k in self.top_k().items():
            if k < 0:
                out.append(f"{key}.clap_top_k_{kind}={k} must be >= 0")
        if self.clap_window_seconds <= 0:
            out.append(f"{key}.clap_window_seconds={self.clap_window_seconds} must be > 0")
        return out

    def top_k(self) -> dict[str, int]:
        """Most CLAP (or effnet) labels per vocabulary."""
        return {
            "genres": self.clap_top_k_genres,
            "moods": self.clap_top_k_moods,
            "instruments": self.clap_top_k_instruments,
        }
