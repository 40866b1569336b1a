"""cudl.keras.layers: Keras layers (argument names as in tf.keras) over cudl's C++ layers.

Images are channels-last in Keras terms ((H, W, C), the default data_format) and channels-first
inside cudl; see _engine for how they are mapped. padding='same' is accepted where it equals a
symmetric zero padding for the layer's input size; otherwise ValueError.
"""

import math

import numpy as np

from .. import _cudl
from . import activations as _activations
from . import initializers as _initializers
from . import regularizers as _regularizers
from ._engine import Input, InputLayer, KerasTensor, Layer

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Conv2D", "Convolution2D", "MaxPooling2D", "MaxPool2D",
           "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D", "BatchNormalization",
           "LayerNormalization", "Dropout", "Flatten", "Reshape", "Activation", "Add", "add", "LeakyReLU", "ELU",
           "ReLU", "Softmax", "Embedding", "PaddingMask", "PositionalEmbedding", "Concatenate", "concatenate",
           "Slice", "split", "SimpleRNN",
           "LSTM", "GRU", "MultiHeadAttention", "Conv2DTranspose", "Convolution2DTranspose", "UpSampling2D",
           "RandomNormal"]


def _pair(v, what, layer):
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise ValueError("%s: %s must be one number or a square pair, got %s (cudl has square windows only)"
                             % (layer, what, tuple(v)))
        v = v[0]
    return int(v)


def _same_padding(size, kernel, stride, dilation, layer):
    """The symmetric padding that gives Keras's 'same' output size ceil(size / stride), or ValueError."""
    k_eff = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    if total % 2:
        raise ValueError("%s: padding='same' with kernel %d, stride %d on size %d needs an asymmetric padding "
                         "(%d in total), which cudl does not have; use padding='valid' or an odd kernel"
                         % (layer, kernel, stride, size, total))
    return total // 2


def _check_padding(padding, layer):
    p = str(padding).lower()
    if p not in ("valid", "same"):
        raise ValueError("%s: padding must be 'valid' or 'same', got %r" % (layer, padding))
    return p


def _check_format(data_format, layer):
    if data_format in (None, "channels_last"):
        return True
    if data_format == "channels_first":
        return False
    raise ValueError("%s: data_format must be 'channels_last' or 'channels_first', got %r" % (layer, data_format))


def _image_layout(layer, layout, shape):
    """The layout a spatial layer needs from its input (rank-3 Keras shape)."""
    if len(shape) != 3:
        raise ValueError("%s expects images of rank 3 per sample (H, W, C) or (C, H, W), got shape %s"
                         % (layer.name, (None,) + tuple(shape)))
    if layer._channels_last and layout != "cl":
        raise ValueError("%s: channels_last images must come from the model input, a Reshape to (H, W, 1) or "
                         "another channels_last image layer; this input is none of them (cudl holds images as "
                         "(C, H, W); data_format='channels_first' takes them so)" % layer.name)
    if not layer._channels_last and layout == "cl":
        raise ValueError("%s: channels_first layer applied to a channels_last image" % layer.name)


def _no_image(layer, layout):
    if layout == "cl":
        raise ValueError("%s (%s) applied to channels_last images: cudl holds them as (C, H, W); flatten or pool "
                         "them first" % (layer.name, type(layer).__name__))


class Dense(Layer):
    """Fully connected: activation(x @ kernel + bias) on the last axis."""

    _passes_mask = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError("Dense %s: units must be positive, got %s" % (self.name, units))
        self.units = int(units)
        self.activation = _activations.name_of(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        if _initializers.get(bias_initializer) != _cudl.Init.Zeros:
            raise ValueError("Dense %s: cudl starts biases at zero; bias_initializer=%r is not supported"
                             % (self.name, bias_initializer))
        for what, v in (("bias_regularizer", bias_regularizer), ("activity_regularizer", activity_regularizer),
                        ("kernel_constraint", kernel_constraint), ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError("Dense %s: %s is not supported by cudl" % (self.name, what))
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)

    def _out_shape(self, shapes):
        return tuple(shapes[0][:-1]) + (self.units,)

    def _count_params(self, shapes):
        return shapes[0][-1] * self.units + (self.units if self.use_bias else 0)

    def _count_params_hint(self):
        return 1

    def _weight_layouts(self):
        return [(1, 0), None]  # cudl kernel (units, in) -> Keras (in, units)

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        if self._cpp is None:
            split = self.activation in _activations.SEPARATE
            dense = _cudl.dense(self.units, "" if split else self.activation, self.use_bias,
                                self.kernel_initializer, self.name)
            if self.kernel_regularizer is not None:
                dense.set_regularizer(*self.kernel_regularizer._cudl_factors())
            self._cpp = [dense] + ([_activations.layer(self.activation, self.name + "_" + self.activation)]
                                   if split else [])
        y = self._cpp[0](xs[0])
        if len(self._cpp) > 1 and drop != self.activation:
            y = self._cpp[1](y)
        return y, None


class Activation(Layer):

    _passes_mask = True
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.name_of(activation)

    def _lower(self, ctx, xs, layouts, drop=None):
        if self.activation in ("softmax", "log_softmax"):
            _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _activations.layer(self.activation, self.name) if self.activation else []
        if not self.activation or drop == self.activation:
            return xs[0], layouts[0]
        return self._cpp(xs[0]), layouts[0]


class _Conv(Layer):
    _spatial = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size", self.name)
        self.strides = _pair(strides, "strides", self.name)
        self.dilation_rate = _pair(dilation_rate, "dilation_rate", self.name)
        self.groups = int(groups)
        self.padding = _check_padding(padding, self.name)
        self._channels_last = _check_format(data_format, self.name)
        self.activation = _activations.name_of(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer)
        if _initializers.get(bias_initializer) != _cudl.Init.Zeros:
            raise ValueError("%s: bias_initializer=%r is not supported (biases start at zero)"
                             % (self.name, bias_initializer))
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)

    def _hwc(self, shape):
        if len(shape) != 3:
            raise ValueError("%s expects images (H, W, C) per sample, got shape %s" % (self.name, (None,) + shape))
        return (shape[0], shape[1], shape[2]) if self._channels_last else (shape[1], shape[2], shape[0])

    def _pad(self, shape):
        h, w, _ = self._hwc(shape)
        if self.padding == "valid":
            return 0
        ph = _same_padding(h, self.kernel_size, self.strides, self.dilation_rate, self.name)
        pw = _same_padding(w, self.kernel_size, self.strides, self.dilation_rate, self.name)
        if ph != pw:
            raise ValueError("%s: padding='same' needs %d rows and %d columns of padding on %s; cudl pads both "
                             "equally" % (self.name, ph, pw, shape))
        return ph

    def _out_shape(self, shapes):
        h, w, c = self._hwc(shapes[0])
        p, k, s, d = self._pad(shapes[0]), self.kernel_size, self.strides, self.dilation_rate
        oh = (h + 2 * p - d * (k - 1) - 1) // s + 1
        ow = (w + 2 * p - d * (k - 1) - 1) // s + 1
        if oh <= 0 or ow <= 0:
            raise ValueError("%s: kernel %d does not fit input %s" % (self.name, k, (None,) + tuple(shapes[0])))
        if c % self.groups or self.filters % self.groups:
            raise ValueError("%s: groups=%d must divide the %d input channels and %d filters"
                             % (self.name, self.groups, c, self.filters))
        return (oh, ow, self.filters) if self._channels_last else (self.filters, oh, ow)

    def _count_params(self, shapes):
        c = self._hwc(shapes[0])[2]
        return self.kernel_size ** 2 * c // self.groups * self.filters + (self.filters if self.use_bias else 0)

    def _count_params_hint(self):
        return 1

    def _weight_layouts(self):
        return [(2, 3, 1, 0), None]  # cudl (O, I, kh, kw) -> Keras (kh, kw, I, O)

    def _lower(self, ctx, xs, layouts, drop=None):
        _image_layout(self, layouts[0], self._in_shapes[0])
        if self._cpp is None:
            split = self.activation in _activations.SEPARATE
            conv = _cudl.conv2d(self.filters, self.kernel_size, self.strides, self._pad(self._in_shapes[0]),
                                self.dilation_rate, self.groups, "" if split else self.activation, self.use_bias,
                                self.kernel_initializer, self.name)
            if self.kernel_regularizer is not None:
                conv.set_regularizer(*self.kernel_regularizer._cudl_factors())
            self._cpp = [conv] + ([_activations.layer(self.activation, self.name + "_" + self.activation)]
                                  if split else [])
        y = self._cpp[0](xs[0])
        if len(self._cpp) > 1 and drop != self.activation:
            y = self._cpp[1](y)
        return y, layouts[0]


class Conv2D(_Conv):
    pass


Convolution2D = Conv2D


class _Pool(Layer):
    _spatial = True
    _cpp_fn = None

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size", self.name)
        self.strides = _pair(strides, "strides", self.name) if strides is not None else self.pool_size
        self.padding = _check_padding(padding, self.name)
        self._channels_last = _check_format(data_format, self.name)

    _hwc = _Conv._hwc

    def _pad(self, shape):
        h, w, _ = self._hwc(shape)
        if self.padding == "valid":
            return 0
        ph = _same_padding(h, self.pool_size, self.strides, 1, self.name)
        pw = _same_padding(w, self.pool_size, self.strides, 1, self.name)
        if ph != pw or (ph and isinstance(self, AveragePooling2D)):
            raise ValueError("%s: padding='same' here needs padding %d x %d; cudl supports it for max pooling "
                             "with equal padding only" % (self.name, ph, pw))
        return ph

    def _out_shape(self, shapes):
        h, w, c = self._hwc(shapes[0])
        p, k, s = self._pad(shapes[0]), self.pool_size, self.strides
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        if oh <= 0 or ow <= 0:
            raise ValueError("%s: pool_size %d does not fit input %s" % (self.name, k, (None,) + tuple(shapes[0])))
        return (oh, ow, c) if self._channels_last else (c, oh, ow)

    def _lower(self, ctx, xs, layouts, drop=None):
        _image_layout(self, layouts[0], self._in_shapes[0])
        if self._cpp is None:
            self._cpp = type(self)._cpp_fn(self.pool_size, self.strides, self._pad(self._in_shapes[0]), self.name)
        return self._cpp(xs[0]), layouts[0]


class MaxPooling2D(_Pool):
    _cpp_fn = staticmethod(_cudl.max_pool2d)


class AveragePooling2D(_Pool):
    _cpp_fn = staticmethod(_cudl.avg_pool2d)


MaxPool2D, AvgPool2D = MaxPooling2D, AveragePooling2D


class GlobalAveragePooling2D(Layer):
    _spatial = True

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self._channels_last = _check_format(data_format, self.name)
        if keepdims:
            raise ValueError("%s: keepdims=True is not supported" % self.name)

    _hwc = _Conv._hwc

    def _out_shape(self, shapes):
        return (self._hwc(shapes[0])[2],)

    def _lower(self, ctx, xs, layouts, drop=None):
        _image_layout(self, layouts[0], self._in_shapes[0])
        if self._cpp is None:
            self._cpp = _cudl.global_avg_pool(self.name)
        y = self._cpp(xs[0])
        if list(y.shape) != [self._out_shape(self._in_shapes)[0]]:
            raise ValueError("%s: cudl gives %s per sample, expected %s" % (self.name, y.shape, self._out_shape(
                self._in_shapes)))
        return y, None


GlobalAvgPool2D = GlobalAveragePooling2D


class BatchNormalization(Layer):
    """Normalises over the channel axis (Keras axis=-1: features, or the channels of images)."""

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1, 1, 3) or not center or not scale:
            raise ValueError("%s: only axis=-1 (the channels), center=True and scale=True are supported" % self.name)
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)

    def _count_params(self, shapes):
        return 4 * self._channels(shapes[0])

    def _count_params_hint(self):
        return 1

    def _channels(self, shape):
        return shape[-1]

    def _lower(self, ctx, xs, layouts, drop=None):
        shape = self._in_shapes[0]
        if len(shape) != 1 and not (len(shape) == 3 and layouts[0] == "cl"):
            raise ValueError("%s: cudl normalises the first per-sample axis; input %s is neither features (N, F) "
                             "nor channels_last images" % (self.name, (None,) + tuple(shape)))
        if self._cpp is None:
            # Keras keeps momentum of the old statistics; cudl (like torch) weighs the new batch.
            self._cpp = _cudl.batch_norm(1.0 - self.momentum, self.epsilon, self.name)
        return self._cpp(xs[0]), layouts[0]


class LayerNormalization(Layer):

    _passes_mask = True
    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1, [-1], (-1,)) or not center or not scale:
            raise ValueError("%s: only axis=-1, center=True and scale=True are supported" % self.name)
        self.epsilon = float(epsilon)

    def _count_params(self, shapes):
        return 2 * shapes[0][-1]

    def _count_params_hint(self):
        return 1

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _cudl.layer_norm(self.epsilon, self.name)
        return self._cpp(xs[0]), None


class Dropout(Layer):

    _passes_mask = True
    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= float(rate) < 1:
            raise ValueError("%s: rate must be in [0, 1), got %s" % (self.name, rate))
        if noise_shape is not None:
            raise ValueError("%s: noise_shape is not supported" % self.name)
        self.rate = float(rate)

    def _lower(self, ctx, xs, layouts, drop=None):
        if self._cpp is None:
            self._cpp = _cudl.dropout(self.rate, self.name)
        return self._cpp(xs[0]), layouts[0]


class Flatten(Layer):
    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)

    def _out_shape(self, shapes):
        n = 1
        for d in shapes[0]:
            n *= d
        return (n,)

    def _lower(self, ctx, xs, layouts, drop=None):
        # Channels_last images flatten in cudl's (C, H, W) order: the same features, permuted.
        if self._cpp is None:
            self._cpp = _cudl.flatten(self.name)
        return self._cpp(xs[0]), None


class Reshape(Layer):
    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def _out_shape(self, shapes):
        n = math.prod(shapes[0])
        t = list(self.target_shape)
        if t.count(-1) > 1:
            raise ValueError("%s: at most one -1 in target_shape %s" % (self.name, self.target_shape))
        if -1 in t:
            known = -math.prod(t)
            if known == 0 or n % known:
                raise ValueError("%s: cannot reshape %s into %s" % (self.name, shapes[0], self.target_shape))
            t[t.index(-1)] = n // known
        if math.prod(t) != n:
            raise ValueError("%s: cannot reshape input %s (%d values) into %s"
                             % (self.name, (None,) + tuple(shapes[0]), n, self.target_shape))
        return tuple(t)

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        out = self._out_shape(self._in_shapes)
        layout = None
        if len(out) == 3 and out[2] == 1:
            # (H, W, 1) has the memory order of cudl's (1, H, W): a channels_last image as it is.
            out, layout = (1, out[0], out[1]), "cl"
        if self._cpp is None:
            self._cpp = _cudl.reshape(list(out), self.name)
        return self._cpp(xs[0]), layout


class Add(Layer):

    _passes_mask = True
    def _out_shape(self, shapes):
        if len(shapes) != 2 or shapes[0] != shapes[1]:
            raise ValueError("%s: Add takes two inputs of the same shape, got %s" % (self.name, shapes))
        return shapes[0]

    def _lower(self, ctx, xs, layouts, drop=None):
        if layouts[0] != layouts[1]:
            raise ValueError("%s: inputs have different image layouts" % self.name)
        self._cpp = []
        return _cudl.add(xs[0], xs[1]), layouts[0]


def add(inputs, **kwargs):
    return Add(**kwargs)(inputs)


KerasTensor = KerasTensor


# --- activation layers --------------------------------------------------------------------------

class _ActivationLayer(Layer):
    """An activation layer with Keras's parameter (LeakyReLU, ELU, ReLU, Softmax)."""

    _passes_mask = True

    _act = None

    def _alpha(self):
        return None

    def _lower(self, ctx, xs, layouts, drop=None):
        if self._act in ("softmax", "log_softmax"):
            _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _activations.layer(self._act, self.name, self._alpha())
        if drop == self._act:
            return xs[0], layouts[0]
        return self._cpp(xs[0]), layouts[0]

    @property
    def activation(self):
        return self._act


class LeakyReLU(_ActivationLayer):
    """max(x, alpha * x); tf.keras's alpha (default 0.3), or Keras 3's negative_slope."""

    _act = "leaky_relu"

    def __init__(self, alpha=None, negative_slope=None, **kwargs):
        super().__init__(**kwargs)
        if alpha is not None and negative_slope is not None:
            raise ValueError("LeakyReLU %s: give alpha or negative_slope, not both" % self.name)
        v = alpha if alpha is not None else negative_slope if negative_slope is not None else 0.3
        if float(v) < 0:
            raise ValueError("LeakyReLU %s: alpha must be >= 0, got %s" % (self.name, v))
        self.alpha = float(v)

    def _alpha(self):
        return self.alpha


class ELU(_ActivationLayer):
    _act = "elu"

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def _alpha(self):
        return self.alpha


class ReLU(_ActivationLayer):
    """max(x, 0), or with negative_slope a leaky ReLU; max_value and threshold are not supported."""

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        if max_value is not None or float(threshold) != 0:
            raise ValueError("ReLU %s: max_value and threshold are not supported by cudl (got %s, %s)"
                             % (self.name, max_value, threshold))
        self.negative_slope = float(negative_slope)
        self._act = "leaky_relu" if self.negative_slope else "relu"

    def _alpha(self):
        return self.negative_slope


class Softmax(_ActivationLayer):
    _act = "softmax"

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if axis not in (-1, [-1], (-1,)):
            raise ValueError("Softmax %s: cudl takes the softmax over the last axis only, got axis=%s"
                             % (self.name, axis))


# --- sequence layers ----------------------------------------------------------------------------

def _no_args(layer, **given):
    """ValueError naming the first argument whose value cudl does not support (given: name -> (value, ok))."""
    for what, (value, ok) in given.items():
        if not ok:
            raise ValueError("%s %s: %s=%r is not supported by cudl" % (type(layer).__name__, layer.name, what, value))


def _sample_axis(axis, rank, layer):
    """A Keras axis of the batched tensor (rank + 1 dims, negative from the back) as a sample axis in
    [0, rank); the batch axis is refused."""
    a = int(axis)
    b = a + rank + 1 if a < 0 else a
    if not 1 <= b <= rank:
        raise ValueError("%s: axis %d is not a sample axis of a batched tensor of rank %d (the batch axis 0 "
                         "cannot be used)" % (layer.name, a, rank + 1))
    return b - 1


class Embedding(Layer):
    """Integer indices (..., ) in [0, input_dim) -> their rows of a learned (input_dim, output_dim)
    table, initialised uniform(-0.05, 0.05) (Keras's 'uniform'). The model input it reads becomes
    an int32 input: fit/evaluate/predict take integer arrays (indices outside the range raise
    ValueError). mask_zero=True: token 0 is padding, as in Keras: the mask passes through
    position-wise layers (Dense, Dropout, Activation, ReLU, LeakyReLU, ELU, Softmax,
    LayerNormalization, Add, PositionalEmbedding),
    MultiHeadAttention takes it as its key-padding mask, and when it reaches the model's output
    the sparse_categorical_crossentropy loss and accuracy skip the padded positions (their labels
    become the loss's ignore_class); any other layer it reaches raises ValueError."""

    _takes_indices = True

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 activity_regularizer=None, embeddings_constraint=None, mask_zero=False, input_length=None,
                 sparse=False, **kwargs):
        if input_length is not None and "input_shape" not in kwargs:
            kwargs["input_shape"] = tuple(input_length) if isinstance(input_length, (list, tuple)) else (
                int(input_length),)
        super().__init__(**kwargs)
        if int(input_dim) <= 0 or int(output_dim) <= 0:
            raise ValueError("Embedding %s: input_dim and output_dim must be positive, got %s and %s"
                             % (self.name, input_dim, output_dim))
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        _no_args(self, embeddings_initializer=(embeddings_initializer,
                                               _initializers.get(embeddings_initializer) == _cudl.Init.Uniform),
                 embeddings_regularizer=(embeddings_regularizer, embeddings_regularizer is None),
                 activity_regularizer=(activity_regularizer, activity_regularizer is None),
                 embeddings_constraint=(embeddings_constraint, embeddings_constraint is None),
                 sparse=(sparse, not sparse))
        self.input_length = input_length
        self.mask_zero = bool(mask_zero)

    def __call__(self, inputs):
        out = super().__call__(inputs)
        if self.mask_zero:  # Keras's implicit mask: the positions whose token id is not 0
            out.mask_tokens = out.inputs[0]
        return out

    def _out_shape(self, shapes):
        return tuple(shapes[0]) + (self.output_dim,)

    def _count_params(self, shapes):
        return self.input_dim * self.output_dim

    def _count_params_hint(self):
        return 1

    def _lower(self, ctx, xs, layouts, drop=None):
        if xs[0].dtype != "i32":
            raise ValueError("%s: Embedding reads a model input of integer indices directly; its input here is "
                             "the %s output of another layer" % (self.name, xs[0].dtype))
        if self._cpp is None:
            self._cpp = _cudl.embedding(self.input_dim, self.output_dim, self.name)
        return self._cpp(xs[0]), None


class PaddingMask(Layer):
    """cudl's layer for Keras's Embedding(mask_zero=True) mask: integer token ids (...) -> float32
    (...), 1 where the id is not 0, else 0, computed on the device (a key-padding attention_mask
    from the tokens themselves). MultiHeadAttention adds one by itself for a masked input."""

    _takes_indices = True

    def _lower(self, ctx, xs, layouts, drop=None):
        if xs[0].dtype != "i32":
            raise ValueError("%s: PaddingMask reads a model input of integer token ids, got a %s tensor"
                             % (self.name, xs[0].dtype))
        if self._cpp is None:
            self._cpp = _cudl.padding_mask(self.name)
        return self._cpp(xs[0]), None


def _padding_mask_of(tokens):
    """The PaddingMask of a token input (one per input, shared by the layers that need it)."""
    if getattr(tokens, "_padding_mask", None) is None:
        tokens._padding_mask = PaddingMask(name=tokens.layer.name + "_padding_mask")(tokens)
    return tokens._padding_mask


class PositionalEmbedding(Layer):
    """cudl's learned positional embedding: x (time, dim) -> x + table[:time] with a learned
    (sequence_length, dim) table (uniform(-0.05, 0.05)); time <= sequence_length."""

    _passes_mask = True

    def __init__(self, sequence_length, **kwargs):
        super().__init__(**kwargs)
        if int(sequence_length) <= 0:
            raise ValueError("PositionalEmbedding %s: sequence_length must be positive, got %s"
                             % (self.name, sequence_length))
        self.sequence_length = int(sequence_length)

    def _out_shape(self, shapes):
        s = shapes[0]
        if len(s) != 2 or s[0] > self.sequence_length:
            raise ValueError("PositionalEmbedding %s: expects (time, dim) samples with time <= sequence_length "
                             "%d, got %s" % (self.name, self.sequence_length, (None,) + tuple(s)))
        return s

    def _count_params(self, shapes):
        return self.sequence_length * shapes[0][1]

    def _count_params_hint(self):
        return 1

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _cudl.positional_embedding(self.sequence_length, self._in_shapes[0][1], self.name)
        return self._cpp(xs[0]), None


class Concatenate(Layer):
    """Joins its inputs along `axis` (of the batched tensor; -1: the last); every other dim must agree.
    Channels-last images join along Keras's axes (channels with axis=-1)."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _out_shape(self, shapes):
        if len(shapes) < 2:
            raise ValueError("%s: Concatenate takes a list of at least 2 inputs, got %d" % (self.name, len(shapes)))
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes):
            raise ValueError("%s: inputs of different ranks: %s" % (self.name, [(None,) + tuple(s) for s in shapes]))
        a = _sample_axis(self.axis, rank, self)
        for s in shapes[1:]:
            if tuple(s[:a]) + tuple(s[a + 1:]) != tuple(shapes[0][:a]) + tuple(shapes[0][a + 1:]):
                raise ValueError("%s: input %s does not match %s outside axis %d"
                                 % (self.name, (None,) + tuple(s), (None,) + tuple(shapes[0]), self.axis))
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out)

    def _lower(self, ctx, xs, layouts, drop=None):
        if len(set(layouts)) != 1:
            raise ValueError("%s: inputs have different image layouts" % self.name)
        rank = len(self._in_shapes[0])
        a = _sample_axis(self.axis, rank, self)
        if layouts[0] == "cl":
            a = {0: 1, 1: 2, 2: 0}[a]  # Keras (H, W, C) axis -> cudl (C, H, W) axis
        if self._cpp is None:
            self._cpp = _cudl.concatenate(a + 1, self.name)
        return self._cpp(list(xs)), layouts[0]


def concatenate(inputs, axis=-1, **kwargs):
    return Concatenate(axis=axis, **kwargs)(inputs)


class Slice(Layer):
    """cudl's slice: the part [start, start + length) of the input along `axis` (of the batched
    tensor, as in Concatenate)."""

    def __init__(self, axis, start, length, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.start, self.length = int(axis), int(start), int(length)

    def _out_shape(self, shapes):
        a = _sample_axis(self.axis, len(shapes[0]), self)
        if self.start < 0 or self.length <= 0 or self.start + self.length > shapes[0][a]:
            raise ValueError("%s: [%d, %d) along axis %d is outside input %s"
                             % (self.name, self.start, self.start + self.length, self.axis, (None,) + tuple(shapes[0])))
        out = list(shapes[0])
        out[a] = self.length
        return tuple(out)

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _cudl.slice(_sample_axis(self.axis, len(self._in_shapes[0]), self) + 1, self.start,
                                    self.length, self.name)
        return self._cpp(xs[0]), None


def split(x, sizes, axis=-1):
    """cudl's split: x cut along `axis` into consecutive parts of the given sizes (one Slice each)."""
    if not isinstance(x, KerasTensor):
        raise TypeError("split: x must be a symbolic tensor, got %s" % type(x).__name__)
    rank = len(x.sample_shape)
    b = int(axis) + rank + 1 if int(axis) < 0 else int(axis)
    if not 1 <= b <= rank:
        raise ValueError("split: axis %s is not a sample axis of %s" % (axis, x.shape))
    if any(int(n) <= 0 for n in sizes) or sum(int(n) for n in sizes) != x.sample_shape[b - 1]:
        raise ValueError("split: sizes %s must be positive and add up to %d, the size of %s along axis %s"
                         % (list(sizes), x.sample_shape[b - 1], x.shape, axis))
    parts, start = [], 0
    for n in sizes:
        parts.append(Slice(axis, start, int(n))(x))
        start += int(n)
    return parts


class _RNN(Layer):
    """Keras's recurrent layers over (time, features) samples: zero initial state, tanh / sigmoid,
    kernel glorot_uniform, recurrent_kernel orthogonal, bias zeros. Weights in Keras's layout and gate
    order: kernel (features, G*units), recurrent_kernel (units, G*units), bias (G*units)."""

    _cell, _gates = None, 1

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, reset_after=True, time_major=False, **kwargs):
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError("%s %s: units must be positive, got %s" % (type(self).__name__, self.name, units))
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        init = _initializers.get
        _no_args(self, activation=(activation, _activations.name_of(activation) == "tanh"),
                 recurrent_activation=(recurrent_activation,
                                       self._cell == "simple" or _activations.name_of(recurrent_activation) == "sigmoid"),
                 use_bias=(use_bias, bool(use_bias)),
                 kernel_initializer=(kernel_initializer, init(kernel_initializer) == _cudl.Init.GlorotUniform),
                 recurrent_initializer=(recurrent_initializer, init(recurrent_initializer) == _cudl.Init.Orthogonal),
                 bias_initializer=(bias_initializer, init(bias_initializer) == _cudl.Init.Zeros),
                 unit_forget_bias=(unit_forget_bias, bool(unit_forget_bias)),
                 kernel_regularizer=(kernel_regularizer, kernel_regularizer is None),
                 recurrent_regularizer=(recurrent_regularizer, recurrent_regularizer is None),
                 bias_regularizer=(bias_regularizer, bias_regularizer is None),
                 activity_regularizer=(activity_regularizer, activity_regularizer is None),
                 kernel_constraint=(kernel_constraint, kernel_constraint is None),
                 recurrent_constraint=(recurrent_constraint, recurrent_constraint is None),
                 bias_constraint=(bias_constraint, bias_constraint is None),
                 dropout=(dropout, not dropout), recurrent_dropout=(recurrent_dropout, not recurrent_dropout),
                 go_backwards=(go_backwards, not go_backwards),
                 stateful=(stateful, not stateful), reset_after=(reset_after, self._cell != "gru" or reset_after),
                 time_major=(time_major, not time_major))
        self.unroll = bool(unroll)  # a scheduling hint in Keras; cudl's recurrence is one op either way

    def _out_shape(self, shapes):
        s = shapes[0]
        if len(s) != 2:
            raise ValueError("%s %s expects (time, features) samples, i.e. inputs (batch, time, features), got %s"
                             % (type(self).__name__, self.name, (None,) + tuple(s)))
        return (s[0], self.units) if self.return_sequences else (self.units,)

    def __call__(self, inputs, initial_state=None, mask=None, training=None):
        """The output, or with return_state=True Keras's list [output, h] ([output, h, c] for an LSTM):
        the final states (batch, units), through which gradients flow like through the output."""
        _no_args(self, initial_state=(initial_state, initial_state is None), mask=(mask, mask is None))
        out = super().__call__(inputs)
        if not self.return_state:
            return out
        out.app = out
        n = 3 if self._cell == "lstm" else 2
        return [out] + [KerasTensor((self.units,), self, out.inputs, app=out, output_index=k) for k in range(1, n)]

    def _count_params(self, shapes):
        f, h, g = shapes[0][1], self.units, self._gates
        return g * h * (f + h + (2 if self._cell == "gru" else 1))

    def _count_params_hint(self):
        return 1

    def _weight_layouts(self):
        return [(1, 0), (1, 0), None]  # cudl (G*H, F), (G*H, H) -> Keras (F, G*H), (H, G*H)

    def _lower(self, ctx, xs, layouts, drop=None):
        _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _cudl.recurrent(self._cell, self.units, self.return_sequences, self.name, self.return_state)
        if self.return_state:
            return self._cpp.apply([xs[0]]), None  # [output, h(, c)]
        return self._cpp(xs[0]), None


class SimpleRNN(_RNN):
    """h_t = tanh(x_t W + h_{t-1} U + b)."""

    _cell, _gates = "simple", 1


class LSTM(_RNN):
    """Keras's LSTM: gates i, f, c, o; the forget gate's bias starts at 1 (unit_forget_bias)."""

    _cell, _gates = "lstm", 4


class GRU(_RNN):
    """Keras's GRU with reset_after=True (its default): gates z, r, h; bias (2, 3*units), the input
    bias then the recurrent bias."""

    _cell, _gates = "gru", 3

    def _keras_weights(self, ws):
        k, rk, b, rb = ws
        return [k.T, rk.T, np.stack([b, rb])]

    def _to_cudl_weights(self, weights):
        k, rk, b = (np.asarray(w, dtype=np.float32) for w in weights)
        if b.shape != (2, 3 * self.units):
            raise ValueError("GRU %s: bias must be (2, %d) (input and recurrent biases), got %s"
                             % (self.name, 3 * self.units, b.shape))
        return [np.ascontiguousarray(a) for a in (k.T, rk.T, b[0], b[1])]


class MultiHeadAttention(Layer):
    """Keras's MultiHeadAttention over (time, features) samples, called as mha(query, value) or
    mha(query, value, key) (self-attention: mha(x, x)); use_causal_mask=True lets position i attend
    to positions <= i. attention_mask: a key-padding mask, a tensor (batch, 1, Tk) or (batch, Tk)
    (e.g. a second model input), true / nonzero for the keys to attend to; a key where it is 0 gets
    no weight (a query with no key left gives 0, where Keras averages every value). A full (batch,
    Tq, Tk) mask with Tq > 1 raises ValueError. Weights in Keras's layout: query/key/value kernels
    (features, heads, dim) and biases (heads, dim), the output kernel (heads, value_dim, output) and
    bias (output). Not supported: return_attention_scores, attention_axes."""

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_heads) <= 0 or int(key_dim) <= 0:
            raise ValueError("MultiHeadAttention %s: num_heads and key_dim must be positive, got %s and %s"
                             % (self.name, num_heads, key_dim))
        self.num_heads, self.key_dim = int(num_heads), int(key_dim)
        self.value_dim = int(value_dim) if value_dim else self.key_dim
        if not 0 <= float(dropout) < 1:
            raise ValueError("MultiHeadAttention %s: dropout must be in [0, 1), got %s" % (self.name, dropout))
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        if isinstance(output_shape, (list, tuple)):
            if len(output_shape) != 1:
                raise ValueError("MultiHeadAttention %s: output_shape must be one size (the features), got %s"
                                 % (self.name, output_shape))
            output_shape = output_shape[0]
        self.output_dim = int(output_shape) if output_shape else None
        self.kernel_initializer = _initializers.get(kernel_initializer)
        _no_args(self, attention_axes=(attention_axes, attention_axes in (None, -2, (-2,), [-2], 1, (1,), [1])),
                 bias_initializer=(bias_initializer, _initializers.get(bias_initializer) == _cudl.Init.Zeros),
                 kernel_regularizer=(kernel_regularizer, kernel_regularizer is None),
                 bias_regularizer=(bias_regularizer, bias_regularizer is None),
                 activity_regularizer=(activity_regularizer, activity_regularizer is None),
                 kernel_constraint=(kernel_constraint, kernel_constraint is None),
                 bias_constraint=(bias_constraint, bias_constraint is None))
        self._causal = None
        self._masked = None  # called with an attention_mask (fixed per layer, like use_causal_mask)
        self._mask_reshape = None

    def __call__(self, query, value=None, key=None, attention_mask=None, return_attention_scores=False,
                 training=None, use_causal_mask=False, mask_last=False):
        if isinstance(query, (list, tuple)):  # a list of inputs, as other layers take them
            ins = list(query)
            if mask_last:  # [query, (value, (key,)) attention_mask], as Model.save records a masked call
                attention_mask, ins = ins[-1], ins[:-1]
            if value is not None or not 1 <= len(ins) <= 3:
                raise ValueError("MultiHeadAttention %s: call it as mha(query, value[, key])" % self.name)
            query, value, key = ins[0], ins[1] if len(ins) > 1 else ins[0], ins[2] if len(ins) > 2 else None
        _no_args(self, return_attention_scores=(return_attention_scores, not return_attention_scores))
        if value is None:
            raise ValueError("MultiHeadAttention %s: give the value tensor: mha(query, value) (mha(x, x) for "
                             "self-attention)" % self.name)
        if self._causal is not None and self._causal != bool(use_causal_mask):
            raise ValueError("MultiHeadAttention %s: cudl fixes use_causal_mask per layer; this layer was called "
                             "with %s before" % (self.name, self._causal))
        self._causal = bool(use_causal_mask)
        # Keras's implicit mask (Embedding(mask_zero=True)) of the keys: their key-padding mask.
        keys = key if key is not None else value
        implicit = keys.mask_tokens if isinstance(keys, KerasTensor) else None
        if implicit is not None:
            pm = _padding_mask_of(implicit)
            same = attention_mask is pm or (isinstance(attention_mask, KerasTensor) and isinstance(
                attention_mask.layer, PaddingMask) and attention_mask.inputs[0] is implicit)
            if attention_mask is not None and not same:
                raise ValueError("MultiHeadAttention %s: the keys carry the padding mask of an Embedding(mask_zero="
                                 "True) and an attention_mask is given too; Keras would combine them, cudl takes one "
                                 "key-padding mask" % self.name)
            attention_mask = pm if attention_mask is None else attention_mask
        masked = attention_mask is not None
        if self._masked is not None and self._masked != masked:
            raise ValueError("MultiHeadAttention %s: cudl fixes the attention_mask input per layer; this layer was "
                             "called %s one before" % (self.name, "with" if self._masked else "without"))
        ins = [query, value] if key is None or key is value else [query, value, key]
        if len(ins) == 2 and ins[0] is ins[1]:
            ins = [query]  # self-attention: one input, the projections read it three times
        if masked:
            if not isinstance(attention_mask, KerasTensor):
                raise TypeError("MultiHeadAttention %s: attention_mask must be a symbolic tensor (a model input or "
                                "a layer output), got %s" % (self.name, type(attention_mask).__name__))
            tk = keys.sample_shape[0]
            m = attention_mask.sample_shape
            if m not in ((tk,), (1, tk)):
                raise ValueError("MultiHeadAttention %s: cudl takes a key-padding attention_mask (batch, 1, %d) or "
                                 "(batch, %d) for keys of length %d, got %s (a mask per query and key is not "
                                 "supported)" % (self.name, tk, tk, tk, (None,) + tuple(m)))
            ins = ins + [attention_mask]
        self._masked = masked
        return super().__call__(ins)

    def _call_config(self):
        c = {"use_causal_mask": True} if self._causal else {}
        if self._masked:
            c["mask_last"] = True
        return c

    def _propagate_mask(self, xs):
        """Keras: the output carries the query's mask (the keys' mask was used above)."""
        return xs[0].mask_tokens

    def _roles(self, shapes):
        if self._masked:
            shapes = shapes[:-1]  # the key-padding mask comes last
        q = shapes[0]
        v = shapes[1] if len(shapes) > 1 else q
        k = shapes[2] if len(shapes) > 2 else v
        return q, k, v

    def _out_shape(self, shapes):
        for s in shapes[:-1] if self._masked else shapes:
            if len(s) != 2:
                raise ValueError("MultiHeadAttention %s: query, value and key must be (time, features) samples, got "
                                 "%s" % (self.name, [(None,) + tuple(x) for x in shapes]))
        q, k, v = self._roles(shapes)
        if k[0] != v[0]:
            raise ValueError("MultiHeadAttention %s: key %s and value %s must have the same length"
                             % (self.name, (None,) + tuple(k), (None,) + tuple(v)))
        return (q[0], self.output_dim or q[1])

    def _sizes(self):
        q, k, v = self._roles(self._in_shapes)
        return q[1], k[1], v[1], self.output_dim or q[1]

    def _count_params(self, shapes):
        q, k, v = self._roles(shapes)
        h, d, dv, out = self.num_heads, self.key_dim, self.value_dim, self.output_dim or q[1]
        b = 1 if self.use_bias else 0
        return (q[1] + b) * h * d + (k[1] + b) * h * d + (v[1] + b) * h * dv + (h * dv + b) * out

    def _count_params_hint(self):
        return 1

    def _keras_shapes(self):
        """Keras's weight shapes in cudl's order (query, key, value, output; kernel then bias)."""
        eq, ek, ev, out = self._sizes()
        h, d, dv = self.num_heads, self.key_dim, self.value_dim
        shapes = []
        for e, dim in ((eq, d), (ek, d), (ev, dv)):
            shapes += [(e, h, dim)] + ([(h, dim)] if self.use_bias else [])
        return shapes + [(h, dv, out)] + ([(out,)] if self.use_bias else [])

    def _keras_weights(self, ws):
        # cudl kernels are (out, in): Keras's are their transposes, split by head.
        return [(w.T if w.ndim == 2 else w).reshape(s) for w, s in zip(ws, self._keras_shapes())]

    def _to_cudl_weights(self, weights):
        shapes = self._keras_shapes()
        if len(weights) != len(shapes):
            raise ValueError("MultiHeadAttention %s: expected %d weights, got %d" % (self.name, len(shapes), len(weights)))
        out = []
        for i, (w, s) in enumerate(zip(weights, shapes)):
            w = np.asarray(w, dtype=np.float32)
            if w.shape != s:
                raise ValueError("MultiHeadAttention %s: expected a weight of shape %s, got %s" % (self.name, s, w.shape))
            if len(s) == 3:  # projections (features, heads, dim) -> (heads*dim, features); output -> (out, heads*dim)
                w = w.reshape(-1, s[2]).T if i == len(shapes) - 1 - int(self.use_bias) else w.reshape(s[0], -1).T
            out.append(np.ascontiguousarray(w.reshape(-1) if len(s) < 3 else w))
        return out

    def _lower(self, ctx, xs, layouts, drop=None):
        for l in layouts:
            _no_image(self, l)
        if self._cpp is None:
            self._cpp = _cudl.multi_head_attention(self.num_heads, self.key_dim, self.value_dim, self.output_dim or 0,
                                                   self.dropout, self.use_bias, bool(self._causal),
                                                   bool(self._masked), self.kernel_initializer, self.name)
        xs = list(xs)
        if self._masked and len(xs[-1].shape) == 2:  # (1, Tk) per sample -> (Tk)
            if self._mask_reshape is None:
                self._mask_reshape = _cudl.reshape([xs[-1].shape[1]], self.name + "_mask")
            xs[-1] = self._mask_reshape(xs[-1])
        return self._cpp(xs if len(xs) > 1 else xs[0]), None


# --- generative layers ----------------------------------------------------------------------------

class Conv2DTranspose(_Conv):
    """Transposed 2-D convolution with Keras's output sizes: padding='valid' gives
    (in - 1) * strides + kernel_size (in * strides when kernel_size < strides), 'same' in * strides;
    with output_padding, (in - 1) * strides + kernel_size - 2 * pad + output_padding (pad 0 for
    'valid', kernel_size // 2 for 'same'), cropped where TensorFlow crops. Kernel in Keras's layout
    (kh, kw, filters, in)."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, **kwargs)
        if self.filters <= 0:
            raise ValueError("Conv2DTranspose %s: filters must be positive, got %s" % (self.name, filters))
        self.output_padding = None if output_padding is None else _pair(output_padding, "output_padding", self.name)
        if self.output_padding is not None and self.output_padding >= max(self.strides, self.dilation_rate):
            raise ValueError("Conv2DTranspose %s: output_padding %d must be smaller than strides %d (or the dilation)"
                             % (self.name, self.output_padding, self.strides))

    def _geometry(self, size):
        """(output size, cudl padding, cudl output_padding, rows to crop at the end) along one axis of
        `size` for Keras's (TensorFlow's) rules: cudl crops `padding` at both ends and adds
        output_padding at the end; where TensorFlow crops one more at the end than at the start (an
        odd 'same' padding), a slice removes it."""
        k, s = self.dilation_rate * (self.kernel_size - 1) + 1, self.strides
        full = (size - 1) * s + k
        if self.output_padding is None:
            out = size * s if self.padding == "same" else size * s + max(k - s, 0)
        else:
            pad = self.kernel_size // 2 if self.padding == "same" else 0
            out = (size - 1) * s + k - 2 * pad + self.output_padding
        if out <= 0:
            raise ValueError("Conv2DTranspose %s: kernel %d, strides %d, padding=%r on size %d gives no output"
                             % (self.name, self.kernel_size, s, self.padding, size))
        # TensorFlow's crop at the start: 0 for 'valid', half (rounded down) of the 'same' padding.
        before = 0 if self.padding == "valid" else max(full - out, 0) // 2
        extra = out - (full - 2 * before)
        if extra >= max(s, self.dilation_rate):
            raise ValueError("Conv2DTranspose %s: output size %d on input size %d needs output_padding %d, at least "
                             "the stride %d" % (self.name, out, size, extra, s))
        return out, before, max(extra, 0), max(-extra, 0)

    def _out_shape(self, shapes):
        h, w, c = self._hwc(shapes[0])
        oh, ow = self._geometry(h)[0], self._geometry(w)[0]
        return (oh, ow, self.filters) if self._channels_last else (self.filters, oh, ow)

    def _count_params(self, shapes):
        c = self._hwc(shapes[0])[2]
        return self.kernel_size ** 2 * c * self.filters + (self.filters if self.use_bias else 0)

    def _count_params_hint(self):
        return 1

    def _weight_layouts(self):
        return [(2, 3, 1, 0), None]  # cudl (in, filters, kh, kw) -> Keras (kh, kw, filters, in)

    def _lower(self, ctx, xs, layouts, drop=None):
        _image_layout(self, layouts[0], self._in_shapes[0])
        if self._cpp is None:
            h, w, _ = self._hwc(self._in_shapes[0])
            oh, ph, oph, crop_h = self._geometry(h)
            ow, pw, opw, crop_w = self._geometry(w)
            if (ph, oph) != (pw, opw):
                raise ValueError("%s: input %s needs padding %d and output_padding %d on rows but %d and %d on "
                                 "columns; cudl's are the same on both" % (self.name, (None,) + tuple(
                                     self._in_shapes[0]), ph, oph, pw, opw))
            conv = _cudl.conv2d_transpose(self.filters, self.kernel_size, self.strides, ph, oph, self.dilation_rate,
                                          1, "", self.use_bias, self.kernel_initializer, self.name)
            if self.kernel_regularizer is not None:
                conv.set_regularizer(*self.kernel_regularizer._cudl_factors())
            chain = [conv]
            if crop_h:
                chain.append(_cudl.slice(2, 0, oh, self.name + "_crop_rows"))
            if crop_w:
                chain.append(_cudl.slice(3, 0, ow, self.name + "_crop_cols"))
            self._act_layer = (_activations.layer(self.activation, self.name + "_" + self.activation)
                               if self.activation else None)
            self._cpp = chain + ([self._act_layer] if self._act_layer is not None else [])
        y = xs[0]
        for layer in self._cpp:
            if layer is self._act_layer and drop == self.activation:
                break
            y = layer(y)
        return y, layouts[0]


Convolution2DTranspose = Conv2DTranspose


class UpSampling2D(Layer):
    """Repeats (interpolation='nearest') or interpolates ('bilinear', half-pixel centres) images by
    an integer factor, the same on both axes."""

    _spatial = True

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = _pair(size, "size", self.name)
        if self.size <= 0:
            raise ValueError("UpSampling2D %s: size must be positive, got %s" % (self.name, size))
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError("UpSampling2D %s: interpolation must be 'nearest' or 'bilinear', got %r"
                             % (self.name, interpolation))
        self.interpolation = interpolation
        self._channels_last = _check_format(data_format, self.name)

    _hwc = _Conv._hwc

    def _out_shape(self, shapes):
        h, w, c = self._hwc(shapes[0])
        return (h * self.size, w * self.size, c) if self._channels_last else (c, h * self.size, w * self.size)

    def _lower(self, ctx, xs, layouts, drop=None):
        _image_layout(self, layouts[0], self._in_shapes[0])
        if self._cpp is None:
            self._cpp = _cudl.upsampling2d(self.size, self.interpolation, self.name)
        return self._cpp(xs[0]), layouts[0]


class RandomNormal(Layer):
    """cudl's noise source: (batch,) + shape samples of N(mean, stddev^2), fresh at every call of
    fit/evaluate/predict; only its input's batch size is used (e.g. a (1,)-feature placeholder)."""

    def __init__(self, shape, mean=0.0, stddev=1.0, **kwargs):
        super().__init__(**kwargs)
        self.shape = (int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape)
        if not self.shape or any(d <= 0 for d in self.shape) or float(stddev) < 0:
            raise ValueError("RandomNormal %s: shape must be positive sizes and stddev >= 0, got %s and %s"
                             % (self.name, shape, stddev))
        self.mean, self.stddev = float(mean), float(stddev)

    def _out_shape(self, shapes):
        return self.shape

    def _lower(self, ctx, xs, layouts, drop=None):
        if self._cpp is None:
            self._cpp = _cudl.random_normal(list(self.shape), self.mean, self.stddev, self.name)
        return self._cpp(xs[0]), None


# Spatial flags for layers that are not image layers.
for _cls in (Dense, Activation, BatchNormalization, LayerNormalization, Dropout, Flatten, Reshape, Add, InputLayer,
             _ActivationLayer, Embedding, PositionalEmbedding, Concatenate, Slice, _RNN, MultiHeadAttention,
             RandomNormal):
    _cls._spatial = False
    _cls._channels_last = False
del _cls
