"""voxshard: multilingual speech pretraining corpora as deterministic WebDataset shards."""

__version__ = "0.1.0"
