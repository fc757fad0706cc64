"""Fine-tuning: shared training math (delay pattern, masked loss, accumulation, checkpoints, metrics)
and one trainer file per model family (`musicgen.py`)."""
