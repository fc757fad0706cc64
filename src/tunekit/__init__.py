"""tunekit: fine-tune open music generation models on music you are allowed to use."""

__version__ = "0.1.0"
