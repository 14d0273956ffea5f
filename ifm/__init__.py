"""Input-aware Factorization Machine (Yu et al., IJCAI 2019): data, models, training."""

__version__ = "0.1.0"
