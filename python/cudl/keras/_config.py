"""Constructor arguments of layers, optimizers and losses, recorded so that Model.save can write a
model's architecture (JSON in the safetensors metadata) and load_model can rebuild it."""

import functools


class Recorded:
    """Base that records the arguments of the outermost __init__ call in self._init_args."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        init = cls.__dict__.get("__init__")
        if init is None or getattr(init, "_records", False):
            return

        @functools.wraps(init)
        def wrapped(self, *args, **kwargs):
            if "_init_args" not in self.__dict__:
                self.__dict__["_init_args"] = (args, dict(kwargs))
            init(self, *args, **kwargs)

        wrapped._records = True
        cls.__init__ = wrapped


def to_json(value, what):
    """A JSON-able form of a constructor argument (regularizers, initializers, activations by name)."""
    from . import initializers, regularizers
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_json(v, what) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v, what) for k, v in value.items()}
    if isinstance(value, regularizers.Regularizer):
        return {"__regularizer__": [value.l1, value.l2]}
    if isinstance(value, initializers.Initializer) or (isinstance(value, type) and
                                                       issubclass(value, initializers.Initializer)):
        return value._name
    if callable(value) and getattr(value, "__name__", None):
        return value.__name__  # activations and losses named by their functions
    raise TypeError("save: %s has an argument of type %s that cannot be saved" % (what, type(value).__name__))


def from_json(value):
    from . import regularizers
    if isinstance(value, dict):
        if set(value) == {"__regularizer__"}:
            return regularizers.L1L2(*value["__regularizer__"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def config_of(obj, what):
    args, kwargs = getattr(obj, "_init_args", ((), {}))
    return {"class": type(obj).__name__, "args": to_json(list(args), what), "kwargs": to_json(kwargs, what)}


def build(config, namespace, what):
    cls = getattr(namespace, config["class"], None)
    if not isinstance(cls, type):
        raise ValueError("load_model: unknown %s class %r" % (what, config["class"]))
    return cls(*from_json(config["args"]), **from_json(config["kwargs"]))
