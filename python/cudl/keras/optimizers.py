"""cudl.keras.optimizers: Keras optimizer objects (learning_rate and Keras's defaults) -> cudl.Optimizer.
Once a model is compiled with one, optimizer.learning_rate reads and sets the model's rate."""

from .. import _cudl
from ._config import Recorded


class Optimizer(Recorded):
    _kind = None

    def __init__(self, learning_rate=0.001, clipnorm=None, weight_decay=None, name=None, lr=None, **kwargs):
        for k in ("clipvalue", "global_clipnorm", "use_ema", "ema_momentum", "jit_compile", "decay"):
            if kwargs.get(k) not in (None, False, 0, 0.0):
                raise ValueError("%s: %s is not supported by cudl" % (type(self).__name__, k))
        unknown = set(kwargs) - {"clipvalue", "global_clipnorm", "use_ema", "ema_momentum", "jit_compile", "decay",
                                 "ema_overwrite_frequency", "amsgrad"}
        if unknown:
            raise TypeError("%s: unexpected argument(s) %s" % (type(self).__name__, ", ".join(sorted(unknown))))
        self._lr = float(lr if lr is not None else learning_rate)
        self.clipnorm = clipnorm
        self.weight_decay = weight_decay
        self.name = name or type(self).__name__
        self._model = None  # the cudl.Model this optimizer trains, once compiled

    @property
    def learning_rate(self):
        return self._model.learning_rate if self._model is not None else self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        self._lr = float(value)
        if self._model is not None:
            self._model.learning_rate = self._lr

    lr = learning_rate

    def _to_cudl(self):
        o = _cudl.Optimizer(self._kind)
        o.lr = self._lr
        if self.clipnorm:
            o.clip_norm = float(self.clipnorm)
        if self.weight_decay:
            o.weight_decay = float(self.weight_decay)
        self._fill(o)
        return o

    def _fill(self, o):
        pass


class SGD(Optimizer):
    _kind = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _fill(self, o):
        o.momentum, o.nesterov = self.momentum, self.nesterov


class Adam(Optimizer):
    _kind = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        if amsgrad:
            raise ValueError("Adam: amsgrad is not supported by cudl")
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _fill(self, o):
        o.beta1, o.beta2, o.eps = self.beta_1, self.beta_2, self.epsilon
        o.keras_epsilon = True  # Keras adds epsilon before the bias correction (torch after it)


class AdamW(Adam):
    _kind = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    _kind = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        if momentum or centered:
            raise ValueError("RMSprop: momentum and centered are not supported by cudl")
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def _fill(self, o):
        o.alpha, o.eps = self.rho, self.epsilon
        o.keras_epsilon = True  # Keras adds epsilon under the square root (torch after it)


class Adagrad(Optimizer):
    """Keras's initial_accumulator_value (0.1) is not modelled: cudl's accumulator starts at 0."""

    _kind = "adagrad"

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.epsilon = float(epsilon)

    def _fill(self, o):
        o.eps = self.epsilon


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier):
    """An Optimizer object from a Keras name ('adam', ...; Keras's defaults) or an Optimizer."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError("unknown optimizer %r (cudl has: %s)" % (identifier, ", ".join(_BY_NAME)))
