"""Input-aware Factorization Machine (Yu et al., IJCAI 2019): data, models, training, the book.

On your own data (see `ifm.api`): ``ifm.fit(path, target=...)``, ``ifm.load(DIR)``,
``ifm.explain(model, rows)``."""
from ifm._version import __version__

_API = ("fit", "load", "explain", "factor_figure", "Bundle")


def __getattr__(name):
    """The API on your own data, imported on first use (``import ifm`` stays light)."""
    if name in _API:
        from ifm import api

        return getattr(api, name)
    raise AttributeError(f"module 'ifm' has no attribute {name!r}")


__all__ = ["__version__", *_API]
