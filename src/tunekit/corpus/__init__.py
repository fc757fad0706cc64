"""Demo corpus synthesiser, licence normalisation and metadata readers."""
