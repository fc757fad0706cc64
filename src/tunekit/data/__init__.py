"""The token dataset a trainer reads: memory-mapped per-track token files, crops, masks and captions."""
