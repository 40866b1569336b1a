"""cudl.keras.utils: to_categorical (also as utils.np_utils.to_categorical)."""

from . import np_utils
from .np_utils import to_categorical

__all__ = ["np_utils", "to_categorical"]
