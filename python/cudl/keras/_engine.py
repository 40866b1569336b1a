"""cudl.keras engine: symbolic tensors, the Layer base, and their lowering to the C++ graph.

A Keras model is first a Python graph of KerasTensors (shapes as Keras reports them, channels last
for images). compile() lowers it to cudl Vars and a cudl.Model: images that Keras holds as
(H, W, C) are (C, H, W) in cudl, so an image model input is transposed once per fit/predict call
on the host, and layers that would need a channels-last view elsewhere raise ValueError.
"""

import re

from .. import _cudl
from ._config import Recorded

_name_counters = {}


def _unique_name(base):
    n = _name_counters.get(base, 0)
    _name_counters[base] = n + 1
    return base if n == 0 else "%s_%d" % (base, n)


def _snake(name):
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).lower()


class KerasTensor:
    """A symbolic tensor: a model input or the output of a layer applied to other KerasTensors."""

    def __init__(self, sample_shape, layer, inputs, dtype="float32", app=None, output_index=0):
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.layer = layer
        self.inputs = list(inputs)
        self.dtype = dtype
        # A layer with several outputs (return_state): every output names the first (app) and its index.
        self.app = app
        self.output_index = output_index
        # Keras's implicit mask (Embedding(mask_zero=True)): the model input of token ids whose
        # nonzero entries are the positions this tensor's mask keeps, or None.
        self.mask_tokens = None

    @property
    def shape(self):
        return (None,) + self.sample_shape

    def __repr__(self):
        return "<KerasTensor shape=%s from %s>" % (self.shape, self.layer.name)


class Layer(Recorded):
    """Base of every cudl.keras layer. Subclasses give _out_shape (Keras shapes) and _lower (cudl)."""

    _base_name = None

    def __init__(self, name=None, input_shape=None, input_dim=None, batch_input_shape=None, trainable=True,
                 dtype=None, **kwargs):
        if kwargs:
            raise TypeError("%s: unsupported argument(s): %s" % (type(self).__name__, ", ".join(sorted(kwargs))))
        self.name = name or _unique_name(self._base_name or _snake(type(self).__name__))
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None:
            input_shape = (int(input_dim),)
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self._input_shape = tuple(input_shape) if input_shape is not None else None
        self._trainable = bool(trainable)
        self._cpp = None  # the C++ layer(s), created at first lowering; shared by every model using it
        self._in_shapes = None

    # -- symbolic use --------------------------------------------------------------------------
    def __call__(self, inputs):
        xs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for x in xs:
            if not isinstance(x, KerasTensor):
                raise TypeError("%s: layers are applied to symbolic tensors (keras.Input or layer outputs), got %s"
                                % (self.name, type(x).__name__))
        shapes = [x.sample_shape for x in xs]
        if self._in_shapes is not None and shapes != self._in_shapes:
            raise ValueError("layer %s was built for inputs %s, applied to %s" % (self.name, self._in_shapes, shapes))
        out = self._out_shape(shapes)
        self._in_shapes = shapes
        kt = KerasTensor(out, self, xs)
        if any(x.mask_tokens is not None for x in xs):
            kt.mask_tokens = self._propagate_mask(xs)
        return kt

    def _out_shape(self, shapes):
        return shapes[0]

    # Layers that pass Keras's implicit mask on unchanged (position-wise layers).
    _passes_mask = False

    def _propagate_mask(self, xs):
        """The mask (token input) of this layer's output when an input carries one (Keras's
        mask_zero): passed on by position-wise layers; anywhere else Keras would apply it in a way
        cudl does not, so it is an error naming the layer."""
        masks = [x.mask_tokens for x in xs if x.mask_tokens is not None]
        if self._passes_mask and all(m is masks[0] for m in masks):
            return masks[0]
        raise ValueError("%s %s: the padding mask of an Embedding(mask_zero=True) reaches this layer, which Keras "
                         "would apply it to and cudl cannot; MultiHeadAttention uses it as its key-padding mask, and "
                         "Dense, Dropout, Activation, ReLU, LeakyReLU, ELU, Softmax, LayerNormalization, Add (of one "
                         "mask) and PositionalEmbedding "
                         "pass it on" % (type(self).__name__, self.name))

    def _call_config(self):
        """Keyword arguments of the layer's call that Model.save must keep (JSON values)."""
        return {}

    def _lower(self, ctx, xs, layouts):
        """cudl Vars and layouts of the inputs -> (output Var, layout). layout 'cl': Keras (H, W, C) held
        as cudl (C, H, W)."""
        raise NotImplementedError

    def _cpp_layers(self):
        if self._cpp is None:
            return []
        return self._cpp if isinstance(self._cpp, list) else [self._cpp]

    # -- weights -------------------------------------------------------------------------------
    def _weight_layouts(self):
        """Per weight: the numpy transpose from cudl's layout to Keras's, or None."""
        return None

    def get_weights(self):
        if not self._cpp_layers():
            if self._cpp is None and self._count_params_hint():
                raise RuntimeError("layer %s: its weights exist once a model using it is compiled" % self.name)
            return []
        ws = [t.numpy() for t in self._cpp_layers()[0].get_weights()]
        if not ws and self._count_params_hint():
            raise RuntimeError("layer %s: its weights exist once a model using it is compiled" % self.name)
        return self._keras_weights(ws)

    def _keras_weights(self, ws):
        """cudl's weight arrays -> Keras's (layouts from _weight_layouts; layers with other shapes override)."""
        perms = self._weight_layouts()
        if perms:
            ws = [w.transpose(p) if p is not None else w for w, p in zip(ws, perms)]
        return ws

    def _to_cudl_weights(self, weights):
        """Keras's weight arrays -> cudl's: the inverse of _keras_weights."""
        import numpy as np
        perms = self._weight_layouts()
        out = []
        for i, w in enumerate(weights):
            w = np.asarray(w, dtype=np.float32)
            p = perms[i] if perms and i < len(perms) else None
            if p is not None:
                w = w.transpose(np.argsort(p))
            out.append(np.ascontiguousarray(w))
        return out

    def set_weights(self, weights):
        if not self._cpp_layers():
            if not weights and not self._count_params_hint():
                return
            raise RuntimeError("layer %s: set_weights needs a compiled model that uses the layer" % self.name)
        self._cpp_layers()[0].set_weights([_cudl.Tensor.from_numpy(w) for w in self._to_cudl_weights(weights)])

    @property
    def weights(self):
        return self.get_weights()

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for c in self._cpp_layers():
            c.trainable = self._trainable

    def _count_params_hint(self):
        return 0

    def count_params(self):
        if self._in_shapes is None:
            raise ValueError("layer %s is not built yet: count_params needs its input shape" % self.name)
        return self._count_params(self._in_shapes)

    def _count_params(self, shapes):
        return 0

    @property
    def input_shape(self):
        return (None,) + tuple(self._in_shapes[0]) if self._in_shapes else None

    @property
    def output_shape(self):
        return (None,) + tuple(self._out_shape(self._in_shapes)) if self._in_shapes else None

    def _set_trainable_cpp(self):
        for c in self._cpp_layers():
            c.trainable = self._trainable

    def __repr__(self):
        return "<%s name=%s>" % (type(self).__name__, self.name)


class InputLayer(Layer):
    _base_name = "input"

    def __init__(self, input_shape=None, dtype=None, name=None, shape=None, **kwargs):
        super().__init__(name=name, input_shape=shape if shape is not None else input_shape, **kwargs)
        if self._input_shape is None or any(d is None for d in self._input_shape):
            raise ValueError("Input: the per-sample shape must be fully known, got %s" % (self._input_shape,))
        import numpy as np
        self.dtype = np.dtype(dtype).name if dtype is not None else "float32"
        self.output = KerasTensor(self._input_shape, self, [], self.dtype)
        self._in_shapes = [self._input_shape]


def Input(shape=None, batch_size=None, name=None, dtype=None, batch_shape=None, **kwargs):
    """A symbolic model input with per-sample shape `shape` (Keras's keras.Input)."""
    if batch_shape is not None:
        shape = tuple(batch_shape)[1:]
    if shape is None:
        raise ValueError("Input: give shape=(...) (the per-sample shape)")
    if isinstance(shape, int):
        shape = (shape,)
    return InputLayer(shape=tuple(shape), name=name, dtype=dtype, **kwargs).output


class _LowerContext:
    """Lowers a Keras graph to cudl Vars. final: the output KerasTensor; drop: the activation to leave
    out of the cudl graph on the final layer ('softmax'/'sigmoid', applied in predict) or None."""

    def __init__(self, final, drop):
        self.final, self.drop = final, drop
        self.vars = {}
        self.outputs = {}  # id(first output KerasTensor) -> every output Var of a multi-output layer
        self.input_layouts = {}

    def lower(self, kt, layout_request=None):
        key = id(kt)
        if key in self.vars:
            return self.vars[key]
        if isinstance(kt.layer, InputLayer):
            raise AssertionError("inputs are lowered by the model")
        if kt.app is not None and kt.app is not kt:  # a further output of an application
            self.lower(kt.app)
            var, layout = self.outputs[id(kt.app)][kt.output_index], None
            self.vars[key] = (var, layout)
            return var, layout
        ins = [self.lower(x) for x in kt.inputs]
        var, layout = kt.layer._lower(self, [v for v, _ in ins], [l for _, l in ins],
                                      drop=self.drop if kt is self.final else None)
        if isinstance(var, list):  # every output of a layer with several: the first is this tensor
            self.outputs[key] = var
            var = var[0]
        kt.layer._set_trainable_cpp()
        self.vars[key] = (var, layout)
        return var, layout


def _consumers(outputs):
    """Map id(KerasTensor) -> list of layers that consume it, within the graph reaching outputs."""
    seen, cons = set(), {}
    stack = list(outputs)
    while stack:
        kt = stack.pop()
        if id(kt) in seen:
            continue
        seen.add(id(kt))
        for x in kt.inputs:
            cons.setdefault(id(x), []).append(kt.layer)
            stack.append(x)
    return cons


def lower_graph(inputs, output, drop):
    """(cudl input Vars, cudl output Var, input layouts, output layout) for a Keras graph."""
    ctx = _LowerContext(output, drop)
    cons = _consumers([output])
    in_vars, in_layouts = [], []
    for kt in inputs:
        shape = kt.sample_shape
        users = cons.get(id(kt), [])
        spatial = [l for l in users if getattr(l, "_spatial", False)]
        layout = None
        if spatial and len(shape) == 3 and all(l._channels_last for l in spatial):
            layout = "cl"
            shape = (shape[2], shape[0], shape[1])
        var = _cudl.Input(list(shape), input_dtype(kt, users), kt.layer.name)
        ctx.vars[id(kt)] = (var, layout)
        in_vars.append(var)
        in_layouts.append(layout)
    out_var, out_layout = ctx.lower(output)
    return in_vars, out_var, in_layouts, out_layout


def input_dtype(kt, users):
    """cudl's dtype of a model input: "i32" (token indices) when it feeds Embedding layers or was
    declared integer (keras.Input(dtype="int32")), else "f32". Integer inputs feed Embeddings only,
    or are the attention_mask of MultiHeadAttention layers (read as floats)."""
    integer = str(kt.dtype).startswith(("int", "uint")) and kt.dtype != "uint8"
    takes_indices = [getattr(l, "_takes_indices", False) for l in users]
    if integer and users and all(getattr(l, "_masked", False) for l in users):
        return "f32"  # a 0/1 attention_mask declared integer: MultiHeadAttention reads it as floats
    if any(takes_indices) or integer:
        if not all(takes_indices):
            others = [l.name for l, t in zip(users, takes_indices) if not t]
            raise ValueError("input %s holds integer indices (it feeds an Embedding or has dtype %s); it also feeds "
                             "%s, which take floats: cudl gives an integer input to Embedding layers only"
                             % (kt.layer.name, kt.dtype, ", ".join(others)))
        return "i32"
    return "f32"


def index_limit(inp, output):
    """The smallest input_dim of the Embedding layers that read model input `inp` (indices must lie
    in [0, limit)), or None."""
    dims = [l.input_dim for l in _consumers([output]).get(id(inp), []) if getattr(l, "input_dim", None)
            and getattr(l, "_takes_indices", False)]
    return min(dims) if dims else None


def walk_layers(output):
    """Layers of the graph reaching `output`, inputs first (each once), without InputLayers."""
    order, seen = [], set()

    def visit(kt):
        for x in kt.inputs:
            visit(x)
        if not isinstance(kt.layer, InputLayer) and id(kt.layer) not in seen:
            seen.add(id(kt.layer))
            order.append(kt.layer)

    visit(output)
    return order

