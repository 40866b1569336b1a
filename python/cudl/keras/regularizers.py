"""cudl.keras.regularizers: L1/L2 penalties on a layer's kernel (Keras's l1(x) adds x*sum|w|, l2(x)
adds x*sum(w^2) to the loss). cudl adds their gradients to the kernel's gradient in the optimizer
step; the reported loss does not include the penalty."""


class Regularizer:
    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)
        if self.l1 < 0 or self.l2 < 0:
            raise ValueError("regularizer factors must be >= 0, got l1=%s l2=%s" % (l1, l2))

    def _cudl_factors(self):
        # cudl's penalty adds l1*sign(w) + l2*w to the gradient; Keras's l2 term x*w^2 has gradient 2*x*w.
        return self.l1, 2.0 * self.l2

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1L2(Regularizer):
    pass


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)


def l1(l1=0.01):
    return L1(l1)


def l2(l2=0.01):
    return L2(l2)


def l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1, l2)


def get(identifier):
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if identifier in ("l1", "l2", "l1_l2"):
        return {"l1": l1, "l2": l2, "l1_l2": l1_l2}[identifier]()
    raise ValueError("unknown regularizer %r (use cudl.keras.regularizers.l1/l2/l1_l2)" % (identifier,))
