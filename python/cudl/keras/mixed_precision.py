"""tf.keras.mixed_precision's global policy, mapped onto cudl's compile-time precision.

"mixed_bfloat16" compiles models with precision bf16 and "mixed_float16" with f16 (16-bit
activations, fp32 math, weights and optimizer state; f16 with dynamic loss scaling on the device),
"float32" with the default. The policy is read when a model is compiled, as in Keras.
"""

_NAMES = {"float32": "", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}


class Policy:
    """A dtype policy by name: "float32", "mixed_bfloat16" or "mixed_float16"."""

    def __init__(self, name):
        if name not in _NAMES:
            raise ValueError("Policy: '%s' is not one of %s" % (name, ", ".join(sorted(_NAMES))))
        self.name = name

    @property
    def compute_dtype(self):
        return {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}[self.name]

    @property
    def variable_dtype(self):
        return "float32"

    def __repr__(self):
        return '<Policy "%s">' % self.name


_global = Policy("float32")


def set_global_policy(policy):
    """Sets the policy models compiled from now on use (a Policy, a name, or None for float32)."""
    global _global
    _global = Policy("float32") if policy is None else policy if isinstance(policy, Policy) else Policy(policy)


def global_policy():
    return _global


def _compile_precision():
    """The precision name cudl's compile takes for the global policy ("" = cudl's default)."""
    return _NAMES[_global.name]
