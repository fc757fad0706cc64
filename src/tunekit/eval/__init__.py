"""Evaluation: Fréchet distance, FAD∞, embeddings (CLAP, EnCodec, VGGish), CLAP score, reports."""
