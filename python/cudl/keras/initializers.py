"""cudl.keras.initializers: Keras initializer names (and classes with default arguments) -> cudl's Init."""

from .. import _cudl

_NAMES = {
    "zeros": "zeros", "ones": "ones", "normal": "normal", "random_normal": "normal", "uniform": "uniform",
    "random_uniform": "uniform", "glorot_uniform": "glorot_uniform", "glorot_normal": "glorot_normal",
    "he_uniform": "he_uniform", "he_normal": "he_normal", "orthogonal": "orthogonal",
}


class Initializer:
    _name = None

    def __init__(self, **kwargs):
        if kwargs and any(v is not None for k, v in kwargs.items() if k != "seed"):
            raise ValueError("%s: cudl's initializers take no arguments (%s given); their scales are Keras's "
                             "defaults" % (type(self).__name__, ", ".join(kwargs)))


def _cls(name, cudl_name):
    return type(name, (Initializer,), {"_name": cudl_name})


Zeros, Ones = _cls("Zeros", "zeros"), _cls("Ones", "ones")
RandomNormal, RandomUniform = _cls("RandomNormal", "normal"), _cls("RandomUniform", "uniform")
GlorotUniform, GlorotNormal = _cls("GlorotUniform", "glorot_uniform"), _cls("GlorotNormal", "glorot_normal")
HeUniform, HeNormal = _cls("HeUniform", "he_uniform"), _cls("HeNormal", "he_normal")
Orthogonal = _cls("Orthogonal", "orthogonal")


def get(identifier):
    """cudl.Init for a Keras initializer name or object."""
    if isinstance(identifier, Initializer) or (isinstance(identifier, type) and issubclass(identifier, Initializer)):
        return _cudl.init_from_name(identifier._name)
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _cudl.init_from_name(_NAMES[identifier.lower()])
    raise ValueError("unknown or unsupported initializer %r (cudl has: %s)" % (identifier, ", ".join(sorted(_NAMES))))
