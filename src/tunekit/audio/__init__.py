"""Audio I/O (`io`), resampling (`resample`), channel mixing (`channels`) and loudness (`loudness`)."""
