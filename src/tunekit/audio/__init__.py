"""Audio I/O, resampling and loudness."""
