"""cudl.keras.activations: activation names (and functions named like Keras's) mapped to cudl's."""

_NAMES = {
    None: "", "linear": "", "relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "softmax": "softmax",
    "log_softmax": "log_softmax", "elu": "elu", "gelu": "gelu", "swish": "silu", "silu": "silu",
    "softplus": "softplus", "leaky_relu": "leaky_relu",
}
# Activations cudl's Dense/Conv2d do not fuse: the Keras layer adds them as a separate cudl layer,
# so a final softmax/sigmoid can be left out of the graph when the loss takes logits.
SEPARATE = ("softmax", "sigmoid", "log_softmax", "elu", "leaky_relu")
# Keras's parameters of the activations that have one (cudl's layers default to alpha 0.01).
ALPHA = {"elu": 1.0, "leaky_relu": 0.2}


def layer(name, layer_name, alpha=None):
    """The cudl activation layer for a cudl activation name, with Keras's parameter unless given."""
    from .. import _cudl
    a = ALPHA.get(name, 0.01) if alpha is None else float(alpha)
    return _cudl.activation(name, alpha=a, layer_name=layer_name)


def name_of(activation):
    """The cudl name of a Keras activation (a string, None, or one of this module's functions)."""
    key = activation
    if callable(activation):
        key = getattr(activation, "__name__", None)
    if key not in _NAMES:
        raise ValueError("unknown or unsupported activation %r (cudl has: %s)"
                         % (activation, ", ".join(sorted(k for k in _NAMES if k))))
    return _NAMES[key]


def _marker(name):
    def f(x):
        raise TypeError("cudl.keras.activations.%s names an activation for a layer; it is not applied eagerly"
                        % name)
    f.__name__ = name
    return f


relu, sigmoid, tanh, softmax, log_softmax, elu, gelu, swish, silu, softplus, leaky_relu, linear = (
    _marker(n) for n in ("relu", "sigmoid", "tanh", "softmax", "log_softmax", "elu", "gelu", "swish", "silu",
                         "softplus", "leaky_relu", "linear"))


def get(identifier):
    name_of(identifier)
    return identifier
