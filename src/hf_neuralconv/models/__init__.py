"""The LSTM models (Vinyals & Le 2015; Li et al. 2016 speaker vectors; Luan et al. 2017 autoencoder encoder)."""

from . import lstm
from .lstm import *  # noqa: F403 (the names of lstm.__all__)

__all__ = lstm.__all__
