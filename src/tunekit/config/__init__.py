"""Configuration: Hydra composition, schemas and validation."""
