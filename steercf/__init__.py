"""steercf: steerable collaborative filtering with sparse autoencoders."""

__version__ = "0.1.0"
