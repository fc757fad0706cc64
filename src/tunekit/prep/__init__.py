"""`tunekit prep`: turn a folder of music into a training-ready dataset.

Rows (`rows`), stages (one module each: ingest, licensing, decode, quality, dedupe, loudness, window,
split), the stage registry, the cache, the executors and the engine that ties them together;
`run.run_prep` is the entry point.
"""
