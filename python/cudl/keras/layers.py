"""cudl.keras.layers: Keras layers (argument names as in tf.keras) over cudl's C++ layers.

Images are channels-last in Keras terms ((H, W, C), the default data_format) and channels-first
inside cudl; see _engine for how they are mapped. padding='same' is accepted where it equals a
symmetric zero padding for the layer's input size; otherwise ValueError.
"""

import math

from .. import _cudl
from . import activations as _activations
from . import initializers as _initializers
from . import regularizers as _regularizers
from ._engine import Input, InputLayer, KerasTensor, Layer

__all__ = ["Layer", "Input", "InputLayer", "Dense", "Conv2D", "Convolution2D", "MaxPooling2D", "MaxPool2D",
           "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D", "BatchNormalization",
           "LayerNormalization", "Dropout", "Flatten", "Reshape", "Activation", "Add", "add"]


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
            self._cpp = [dense] + ([_cudl.activation(self.activation, layer_name=self.name + "_" + self.activation)]
                                   if split else [])
        y = self._cpp[0](xs[0])
        if len(self._cpp) > 1 and drop != self.activation:
            y = self._cpp[1](y)
        return y, None


class Activation(Layer):
    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = _activations.name_of(activation)

    def _lower(self, ctx, xs, layouts, drop=None):
        if self.activation in ("softmax", "log_softmax"):
            _no_image(self, layouts[0])
        if self._cpp is None:
            self._cpp = _cudl.activation(self.activation or "linear", layer_name=self.name) if self.activation else []
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
            self._cpp = [conv] + ([_cudl.activation(self.activation, layer_name=self.name + "_" + self.activation)]
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


# Spatial flags for layers that are not image layers.
for _cls in (Dense, Activation, BatchNormalization, LayerNormalization, Dropout, Flatten, Reshape, Add, InputLayer):
    _cls._spatial = False
    _cls._channels_last = False
del _cls
KerasTensor = KerasTensor
