"""cudl.keras.models: Sequential and functional Model with Keras's compile/fit/evaluate/predict.

The Keras graph is lowered to a cudl.Model when the model is compiled (or, for a Sequential without
an input shape, at the first fit). numpy data passes to the runtime once per fit/evaluate/predict
call. Inputs: every numeric array becomes float32 with its values as they are, as in Keras (uint8
images are 0..255: programs scale them, x / 255, themselves).
"""

import sys
import time

import numpy as np

from .. import _cudl
from . import _config
from . import callbacks as _callbacks
from . import losses as _losses
from . import metrics as _metrics
from . import mixed_precision as _mixed_precision
from . import optimizers as _optimizers
from ._engine import Input, InputLayer, KerasTensor, Layer, index_limit, lower_graph, walk_layers

_FIT_KWARGS_UNSUPPORTED = ("class_weight", "sample_weight", "steps_per_epoch", "validation_steps",
                           "validation_batch_size", "validation_freq", "max_queue_size", "workers",
                           "use_multiprocessing")


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


class Model:
    """Functional model: Model(inputs=keras.Input(...), outputs=<layer calls>)."""

    def __init__(self, inputs=None, outputs=None, name=None, **kwargs):
        if kwargs:
            raise TypeError("Model: unexpected argument(s) %s" % ", ".join(sorted(kwargs)))
        self.name = name or "model"
        self._cpp = None
        self._compiled = None
        self._inputs = self._outputs = None
        self.stop_training = False
        self.history = None
        if inputs is None and outputs is None:
            if type(self) is Model:
                raise ValueError("Model: give inputs= and outputs= (subclassed models with call() are not "
                                 "supported by cudl)")
            return
        ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if not ins or len(outs) != 1:
            raise ValueError("Model %s: cudl models take one or more inputs and one output, got %d and %d"
                             % (self.name, len(ins), len(outs)))
        for t in ins + outs:
            if not isinstance(t, KerasTensor):
                raise TypeError("Model %s: inputs and outputs must be symbolic tensors, got %s"
                                % (self.name, type(t).__name__))
        for i, t in enumerate(ins):
            if not isinstance(t.layer, InputLayer):
                raise ValueError("Model %s: inputs must come from keras.Input (input %d is the output of %s)"
                                 % (self.name, i, t.layer.name))
            if any(t is u for u in ins[:i]):
                raise ValueError("Model %s: input %d (%s) is given twice" % (self.name, i, t.layer.name))
        self._inputs, self._outputs = ins, outs

    # -- structure -----------------------------------------------------------------------------
    @property
    def layers(self):
        return walk_layers(self._outputs[0]) if self._outputs else []

    @property
    def inputs(self):
        return self._inputs

    @property
    def outputs(self):
        return self._outputs

    @property
    def input_shape(self):
        if not self._inputs:
            return None
        return self._inputs[0].shape if len(self._inputs) == 1 else [t.shape for t in self._inputs]

    @property
    def output_shape(self):
        return self._outputs[0].shape if self._outputs else None

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError("Model %s: no layer named %r (layers: %s)" % (self.name, name,
                                                                         ", ".join(l.name for l in self.layers)))

    def count_params(self):
        return sum(l.count_params() for l in self.layers)

    def summary(self, print_fn=None):
        print_fn = print_fn or print
        if not self._built():
            raise ValueError("Model %s: summary needs the input shape (give input_shape to the first layer, "
                             "or call fit first)" % self.name)
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for l in self.layers:
            rows.append(("%s (%s)" % (l.name, type(l).__name__), str(l.output_shape), str(l.count_params())))
        w = [max(len(r[i]) for r in rows) + 3 for i in range(3)]
        line = "_" * sum(w)
        print_fn('Model: "%s"' % self.name)
        print_fn(line)
        print_fn("".join(c.ljust(w[i]) for i, c in enumerate(rows[0])))
        print_fn("=" * sum(w))
        for r in rows[1:]:
            print_fn("".join(c.ljust(w[i]) for i, c in enumerate(r)))
        print_fn("=" * sum(w))
        total = self.count_params()
        non_trainable = sum(l.count_params() // 2 for l in self.layers if type(l).__name__ == "BatchNormalization")
        non_trainable += sum(l.count_params() for l in self.layers if not l.trainable and
                             type(l).__name__ != "BatchNormalization")
        print_fn("Total params: {:,}".format(total))
        print_fn("Trainable params: {:,}".format(total - non_trainable))
        print_fn("Non-trainable params: {:,}".format(non_trainable))
        print_fn(line)

    def _built(self):
        return self._outputs is not None

    # -- compile -------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=None, steps_per_execution=None, jit_compile=None, device=None, seed=0, **kwargs):
        """Keras's compile. device: 'cpu', 'cuda', 'cuda:1' (default: the first GPU when there is one)."""
        if kwargs:
            raise TypeError("compile: unexpected argument(s) %s" % ", ".join(sorted(kwargs)))
        if loss is None:
            raise ValueError("compile: give a loss (e.g. 'sparse_categorical_crossentropy')")
        if loss_weights is not None or weighted_metrics is not None:
            raise ValueError("compile: loss_weights and weighted_metrics are not supported by cudl")
        opt = _optimizers.get(optimizer)
        loss_obj = _losses.get(loss)
        ms = [_metrics.get(m) for m in (metrics or [])]
        if device is None:
            device = "cuda" if _cudl.cuda_device_count() > 0 else "cpu"
        self._compiled = dict(optimizer=opt, loss=loss_obj, metrics=ms, device=device, seed=int(seed))
        self.optimizer, self.loss = opt, loss_obj
        self._cpp = None
        if self._built():
            self._build_cpp()

    def _build_cpp(self):
        c = self._compiled
        if c is None:
            raise RuntimeError("Model %s: compile() the model first" % self.name)
        loss = c["loss"]
        out = self._outputs[0]
        final_act = getattr(out.layer, "activation", None)
        drop = None
        if loss._prob_activation is not None:
            if loss.from_logits:
                if final_act == loss._prob_activation:
                    raise ValueError("Model %s: loss %s with from_logits=True, but the model ends in %s "
                                     "(probabilities)" % (self.name, loss.name, final_act))
            elif final_act == loss._prob_activation:
                drop = final_act  # trained on logits; predict applies it
            else:
                raise ValueError("Model %s: loss %s on probabilities needs the model to end in a %s activation "
                                 "(it is fused into the loss); for logits use from_logits=True"
                                 % (self.name, loss.name, loss._prob_activation))
        cudl_loss = loss._to_cudl()
        metric_names = [m[0] for m in c["metrics"]]
        if "accuracy" in metric_names and loss._prob_activation != "softmax":
            raise ValueError("Model %s: cudl computes the accuracy metric for (sparse_)categorical_crossentropy "
                             "only, not for loss %s" % (self.name, loss.name))
        self._onehot_as_labels = False
        if isinstance(loss, _losses.CategoricalCrossentropy) and "accuracy" in metric_names:
            # cudl's accuracy reads integer labels: one-hot targets train as sparse labels (the same
            # loss); fit and evaluate check that the targets are one-hot.
            cudl_loss = _cudl.Loss("sparse_categorical_crossentropy")
            self._onehot_as_labels = True
        # Keras's mask (Embedding(mask_zero=True)) reaching the output weights the loss and metrics:
        # cudl gives the padded positions the loss's ignore_class (_labels).
        self._label_mask = None
        if out.mask_tokens is not None:
            if not cudl_loss.takes_labels or self._onehot_as_labels:
                raise ValueError("Model %s: the output carries the padding mask of an Embedding(mask_zero=True); "
                                 "Keras weights the loss by it, which cudl does for sparse_categorical_crossentropy "
                                 "only, not for loss %s" % (self.name, loss.name))
            k = [i for i, t in enumerate(self._inputs) if t is out.mask_tokens][0]
            ignore = cudl_loss.ignore_class
            if ignore is None:
                ignore = -1
                cudl_loss.ignore_class = ignore
            self._label_mask = (k, ignore)
        in_vars, out_var, in_layouts, out_layout = lower_graph(self._inputs, out, drop)
        self._cpp = _cudl.Model(in_vars, [out_var], self.name)
        self._in_layouts, self._out_layout, self._drop = in_layouts, out_layout, drop
        self._in_dtypes = [v.dtype for v in in_vars]
        self._index_limits = [index_limit(t, out) for t in self._inputs]
        self._cudl_loss = cudl_loss
        self._cpp.compile(c["optimizer"]._to_cudl(), cudl_loss, metric_names, c["device"], c["seed"],
                          _mixed_precision._compile_precision())
        c["optimizer"]._model = self._cpp
        self._metric_names = [m[1] for m in c["metrics"]]
        self._metric_keys = metric_names

    def _require_cpp(self, what, x=None):
        if self._cpp is None:
            if self._compiled is None:
                raise RuntimeError("Model %s: compile() the model before %s" % (self.name, what))
            if not self._built():
                self._build_from_data(x)
            self._build_cpp()
        return self._cpp

    def _build_from_data(self, x):
        raise ValueError("Model %s: the input shape is unknown" % self.name)

    # -- data ----------------------------------------------------------------------------------
    def _x(self, x, what):
        """The model's input data as cudl takes it: one array for a single-input model, else a list of
        arrays, one per input (x given as a list in the order of the model's inputs, or a dict keyed
        by their names), each checked and converted with errors naming the input."""
        ins = self._inputs
        if isinstance(x, dict):
            x = self._by_name(x, what)
        if len(ins) == 1:
            if isinstance(x, (list, tuple)) and len(x) == 1:
                x = x[0]
            return self._one_x(x, 0, what)
        if not isinstance(x, (list, tuple)) or len(x) != len(ins):
            got = "%d arrays" % len(x) if isinstance(x, (list, tuple)) else "one array"
            raise ValueError("%s: model %s takes %d inputs (%s): give a list of %d arrays (or a dict by input name), "
                             "got %s" % (what, self.name, len(ins), ", ".join(t.layer.name for t in ins), len(ins),
                                         got))
        xs = [self._one_x(a, k, what) for k, a in enumerate(x)]
        for k in range(1, len(xs)):
            if len(xs[k]) != len(xs[0]):
                raise ValueError("%s: input %s has %d rows but input %s has %d"
                                 % (what, ins[k].layer.name, len(xs[k]), ins[0].layer.name, len(xs[0])))
        return xs

    def _by_name(self, x, what):
        names = [t.layer.name for t in self._inputs]
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise ValueError("%s: model %s's inputs are %s; got keys %s" % (what, self.name, names, sorted(x)))
        return [x[n] for n in names]

    @staticmethod
    def _rows(xs):
        return len(xs[0]) if isinstance(xs, list) else len(xs)

    def _one_x(self, x, k, what):
        a = np.asarray(x)
        inp = self._inputs[k]
        label = "x" if len(self._inputs) == 1 else "input %s" % inp.layer.name
        if self._in_dtypes[k] == "i32":
            return self._indices(a, k, label, what)
        if a.dtype != np.float32:
            # uint8 too: Keras reads images as their raw values (0..255), not x / 255 as cudl's
            # C++ Dataset does for u8 images.
            if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
                raise ValueError("%s: %s must be numeric, got dtype %s" % (what, label, a.dtype))
            a = a.astype(np.float32)
        want = inp.sample_shape
        if a.ndim == 0 or tuple(a.shape[1:]) != want:
            raise ValueError("%s: %s has shape %s, the model's input is %s" % (what, label, a.shape, (None,) + want))
        if self._in_layouts[k] == "cl":
            a = a.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(a)

    def _indices(self, a, k, label, what):
        """Token indices for an input that feeds Embedding layers: int32, each in [0, input_dim)."""
        want = self._inputs[k].sample_shape
        if a.ndim == 0 or tuple(a.shape[1:]) != want:
            raise ValueError("%s: %s has shape %s, the model's input is %s (integer indices)"
                             % (what, label, a.shape, (None,) + want))
        if np.issubdtype(a.dtype, np.floating):
            if not np.all(a == np.round(a)):
                raise ValueError("%s: %s feeds an Embedding and must hold integer indices, got non-integer values"
                                 % (what, label))
        elif not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise ValueError("%s: %s feeds an Embedding and must hold integer indices, got dtype %s"
                             % (what, label, a.dtype))
        lim = self._index_limits[k]
        if a.size and lim is not None and (a.min() < 0 or a.max() >= lim):
            bad = a.min() if a.min() < 0 else a.max()
            raise ValueError("%s: %s holds index %d, outside [0, %d) of the Embedding's input_dim %d"
                             % (what, label, bad, lim, lim))
        return np.ascontiguousarray(a.astype(np.int32))

    def _y(self, y, n, what):
        a = np.asarray(y)
        if a.shape[:1] != (n,):
            raise ValueError("%s: x has %d rows but y has shape %s" % (what, n, a.shape))
        out_shape = self._outputs[0].sample_shape
        if self._cudl_loss.takes_labels:
            if self._onehot_as_labels:
                if a.shape[1:] != out_shape:
                    raise ValueError("%s: categorical_crossentropy targets must be one-hot %s, got %s"
                                     % (what, (None,) + out_shape, a.shape))
                if not (np.all((a == 0) | (a == 1)) and np.all(a.sum(axis=-1) == 1)):
                    raise ValueError("%s: with metrics=['accuracy'], categorical_crossentropy targets must be "
                                     "one-hot (cudl computes accuracy from labels); soft targets train without "
                                     "the accuracy metric" % what)
                return np.ascontiguousarray(a.argmax(axis=-1).astype(np.int32))
            lead = (n,) + out_shape[:-1]  # one label per position: (N,) or (N, T, ...)
            if a.shape == lead + (1,):
                a = a.reshape(lead)
            if a.shape != lead:
                raise ValueError("%s: sparse_categorical_crossentropy takes integer labels of shape %s for outputs "
                                 "%s, got %s (one-hot targets go with categorical_crossentropy)"
                                 % (what, lead, (None,) + out_shape, a.shape))
            if np.issubdtype(a.dtype, np.floating):
                if not np.all(a == np.round(a)):
                    raise ValueError("%s: labels must be integers" % what)
            elif not np.issubdtype(a.dtype, np.integer):
                raise ValueError("%s: labels must be integers, got dtype %s" % (what, a.dtype))
            classes = out_shape[-1]
            ignore = getattr(self._compiled["loss"], "ignore_class", None)
            kept = a if ignore is None else a[a != ignore]
            if kept.size and (kept.min() < 0 or kept.max() >= classes):
                raise ValueError("%s: labels must be in [0, %d) for an output of %d classes, got [%d, %d]"
                                 % (what, classes, classes, kept.min(), kept.max()))
            return np.ascontiguousarray(a.astype(np.int32))
        a = a.astype(np.float32)
        if a.ndim == 1 and out_shape == (1,):
            a = a.reshape(-1, 1)
        if tuple(a.shape[1:]) != out_shape:
            raise ValueError("%s: y has shape %s, the model's output is %s" % (what, a.shape, (None,) + out_shape))
        if self._out_layout == "cl":
            a = a.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(a)

    def _labels(self, xs, y, what):
        """The targets of inputs xs (checked and converted by _y), with the padded positions (token 0 of
        the masking input) set to the ignore class when the output carries an Embedding(mask_zero=True)
        mask (Keras weights the loss by it)."""
        ys = self._y(y, self._rows(xs), what)
        if self._label_mask is None:
            return ys
        k, ignore = self._label_mask
        tokens = xs[k] if isinstance(xs, list) else xs
        if tokens.shape != ys.shape:
            raise ValueError("%s: the output's padding mask is the token ids %s, which must match the labels %s"
                             % (what, tokens.shape, ys.shape))
        return np.ascontiguousarray(np.where(tokens != 0, ys, ignore).astype(np.int32))

    def _finish_output(self, p):
        if self._out_layout == "cl":
            p = p.transpose(0, 2, 3, 1)
        if self._drop == "softmax":
            p = _softmax(p)
        elif self._drop == "sigmoid":
            p = _sigmoid(p)
        return np.ascontiguousarray(p, dtype=np.float32)

    def _rename(self, logs):
        """cudl's logs with the program's metric names, in Keras's order (loss, metrics, val_...)."""
        out = {}
        for pre in ("", "val_"):
            for key, name in [("loss", "loss")] + list(zip(self._metric_keys, self._metric_names)):
                if pre + key in logs:
                    out[pre + name] = logs[pre + key]
        return out

    # -- training ------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, seed=0, **kwargs):
        for k in kwargs:
            if k not in _FIT_KWARGS_UNSUPPORTED:
                raise TypeError("fit: unexpected argument %r" % k)
            if kwargs[k] is not None:
                raise ValueError("fit: %s is not supported by cudl" % k)
        if x is None or y is None:
            raise ValueError("fit: give x and y as numpy arrays")
        self._require_cpp("fit", x)
        xs = self._x(x, "fit")
        n = self._rows(xs)
        ys = self._labels(xs, y, "fit")
        val_x = val_y = None
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("fit: validation_data must be (x_val, y_val)")
            val_x = self._x(validation_data[0], "validation_data")
            val_y = self._labels(val_x, validation_data[1], "validation_data")
            validation_split = 0.0
        if not 0 <= validation_split < 1:
            raise ValueError("fit: validation_split must be in [0, 1), got %s" % validation_split)
        if shuffle == "batch":
            shuffle = True
        verbose = 1 if verbose == "auto" else int(verbose)
        batch_size = 32 if batch_size is None else int(batch_size)
        if batch_size <= 0:
            raise ValueError("fit: batch_size must be positive, got %d" % batch_size)
        if initial_epoch:
            self._cpp.epoch = int(initial_epoch)
            epochs = int(epochs) - int(initial_epoch)
        cbs = list(callbacks or [])
        history = _callbacks.History()
        n_train = n - int(n * validation_split)
        steps = -(-n_train // batch_size)
        params = {"verbose": verbose, "epochs": int(epochs) + int(initial_epoch), "steps": steps}
        if verbose:
            cbs = [_callbacks.ProgbarLogger(verbose)] + cbs
        cbs = [history] + cbs
        cpp_cbs = [cb._to_cudl(self, params) for cb in cbs]
        self.stop_training = False
        logs = self._cpp.fit(xs, ys, epochs=int(epochs), batch_size=batch_size, shuffle=bool(shuffle), val_x=val_x,
                             val_y=val_y, validation_split=float(validation_split), callbacks=cpp_cbs,
                             seed=int(seed), verbose=0)
        del logs  # History gathered the same values, Keras-named
        self.history = history
        return history

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False, **kwargs):
        if kwargs.get("sample_weight") is not None:
            raise ValueError("evaluate: sample_weight is not supported by cudl")
        self._require_cpp("evaluate", x)
        xs = self._x(x, "evaluate")
        ys = self._labels(xs, y, "evaluate")
        bs = 256 if batch_size is None else int(batch_size)
        if bs <= 0:
            raise ValueError("evaluate: batch_size must be positive, got %d" % bs)
        t0 = time.time()
        res = self._rename(self._cpp.evaluate(xs, ys, batch_size=bs))
        verbose = 1 if verbose == "auto" else int(verbose)
        if verbose:
            steps = -(-self._rows(xs) // bs)
            print("%d/%d - %.0fs - %s" % (steps, steps, time.time() - t0, _callbacks._format_logs(res)))
            sys.stdout.flush()
        return self._results(res, return_dict)

    def _results(self, res, return_dict):
        if return_dict:
            return res
        if not self._metric_names:
            return res["loss"]
        return [res["loss"]] + [res[m] for m in self._metric_names]

    def predict(self, x, batch_size=None, verbose="auto", **kwargs):
        self._require_cpp("predict", x)
        xs = self._x(x, "predict")
        bs = 256 if batch_size is None else int(batch_size)
        if bs <= 0:
            raise ValueError("predict: batch_size must be positive, got %d" % bs)
        return self._finish_output(self._cpp.predict(xs, batch_size=bs))

    def __call__(self, x):
        if isinstance(x, KerasTensor):
            raise ValueError("Model %s: using a model as a layer is not supported by cudl" % self.name)
        return self.predict(x, verbose=0)

    def train_on_batch(self, x, y, return_dict=False, **kwargs):
        self._require_cpp("train_on_batch", x)
        xs = self._x(x, "train_on_batch")
        ys = self._labels(xs, y, "train_on_batch")
        return self._results(self._rename(self._cpp.train_on_batch(xs, ys)),
                             return_dict)

    def test_on_batch(self, x, y, return_dict=False, **kwargs):
        self._require_cpp("test_on_batch", x)
        xs = self._x(x, "test_on_batch")
        ys = self._labels(xs, y, "test_on_batch")
        return self._results(self._rename(self._cpp.test_on_batch(xs, ys)),
                             return_dict)

    def predict_on_batch(self, x):
        self._require_cpp("predict_on_batch", x)
        return self._finish_output(self._cpp.predict_on_batch(self._x(x, "predict_on_batch")))

    # -- weights -------------------------------------------------------------------------------
    def get_weights(self):
        self._require_cpp("get_weights")
        return [w for l in self.layers for w in l.get_weights()]

    def set_weights(self, weights):
        """Keras order (each layer's get_weights()); every count and shape is checked before anything is set."""
        self._require_cpp("set_weights")
        weights = list(weights)
        per_layer, i = [], 0
        for l in self.layers:
            cur = l.get_weights()
            chunk = weights[i:i + len(cur)]
            if len(chunk) != len(cur):
                raise ValueError("set_weights: model %s has %d weight arrays, got %d"
                                 % (self.name, sum(len(m.get_weights()) for m in self.layers), len(weights)))
            for c, w in zip(cur, chunk):
                if tuple(np.shape(w)) != c.shape:
                    raise ValueError("set_weights: layer %s expects a weight of shape %s, got %s"
                                     % (l.name, c.shape, np.shape(w)))
            per_layer.append((l, chunk))
            i += len(cur)
        if i != len(weights):
            raise ValueError("set_weights: model %s has %d weight arrays, got %d" % (self.name, i, len(weights)))
        for l, chunk in per_layer:
            if chunk:
                l.set_weights(chunk)

    def save_weights(self, filepath, overwrite=True, _format="cudl.keras weights", _metadata=None, _extra=(),
                     **kwargs):
        """Writes the weights (Keras order and layout) as safetensors, keyed 'NNNN/layer/index'."""
        import os
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError("save_weights: %s exists (overwrite=False)" % filepath)
        self._require_cpp("save_weights")
        named, k = [], 0
        for l in self.layers:
            for j, w in enumerate(l.get_weights()):
                named.append(("%04d/%s/%d" % (k, l.name, j), np.ascontiguousarray(w, dtype=np.float32)))
                k += 1
        named.extend(_extra)
        meta = {"format": _format, "model": self.name}
        meta.update(_metadata or {})
        _cudl.save_safetensors(str(filepath), named, meta)

    def load_weights(self, filepath, **kwargs):
        """Reads save_weights' file into this model by position (layer names may differ)."""
        self._require_cpp("load_weights")
        named, meta = _cudl.load_safetensors(str(filepath))
        if meta.get("format") not in ("cudl.keras weights", "cudl.keras model"):
            raise ValueError("load_weights: %s was not written by save_weights (metadata %s)" % (filepath, meta))
        named = sorted((nt for nt in named if not _is_training_state(nt[0])), key=lambda nt: nt[0])
        self.set_weights([t for _, t in named])


class Sequential(Model):
    """A stack of layers: Sequential([...]) or .add(layer). The input shape comes from the first layer's
    input_shape / input_dim, a leading keras.Input / InputLayer, or the data of the first fit."""

    def __init__(self, layers=None, name=None):
        super().__init__(name=name or "sequential")
        self._layers = []
        self._input = None
        for l in layers or []:
            self.add(l)

    def add(self, layer):
        if isinstance(layer, KerasTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self._layers or self._input is not None:
                raise ValueError("Sequential %s: an Input must come first" % self.name)
            self._input = layer.output
            return
        if not isinstance(layer, Layer):
            raise TypeError("Sequential %s: add() takes a layer, got %s" % (self.name, type(layer).__name__))
        if self._cpp is not None:
            raise RuntimeError("Sequential %s: add layers before compile" % self.name)
        if self._input is None and not self._layers and layer._input_shape is not None:
            self._input = Input(shape=layer._input_shape)
        self._layers.append(layer)
        if self._input is not None:
            self._connect()

    def _connect(self):
        t = self._input
        for l in self._layers:
            t = l(t)
        self._inputs, self._outputs = [self._input], [t]

    def pop(self):
        if self._cpp is not None:
            raise RuntimeError("Sequential %s: pop before compile" % self.name)
        self._layers.pop()
        if self._input is not None and self._layers:
            self._connect()

    @property
    def layers(self):
        return list(self._layers)

    def _build_from_data(self, x):
        if x is None:
            raise ValueError("Sequential %s: the input shape is unknown; give input_shape to the first layer or "
                             "fit first" % self.name)
        shape = np.shape(x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x)[1:]
        self._input = Input(shape=tuple(shape))
        self._connect()


def _layer_config(layer):
    cfg = _config.config_of(layer, "layer %s" % layer.name)
    cfg["kwargs"]["name"] = layer.name
    if not layer.trainable:
        cfg["kwargs"]["trainable"] = False
    call = layer._call_config()
    if call:
        cfg["call"] = call
    return cfg


def _architecture(model):
    if isinstance(model, Sequential):
        return {"class": "Sequential", "name": model.name, "input_shape": list(model._inputs[0].sample_shape),
                "input_name": model._inputs[0].layer.name, "layers": [_layer_config(l) for l in model._layers]}
    layers = model.layers
    layer_ids = {id(l): i for i, l in enumerate(layers)}
    tensors, index = [], {}

    def visit(kt):
        if id(kt) not in index:
            ins = [visit(x) for x in kt.inputs]
            if isinstance(kt.layer, InputLayer):
                rec = {"input": list(kt.sample_shape), "name": kt.layer.name, "dtype": kt.dtype}
            else:
                rec = {"layer": layer_ids[id(kt.layer)], "inputs": ins}
                if kt.app is not None:  # one output of a layer with several (return_state)
                    rec["output"] = kt.output_index
            index[id(kt)] = len(tensors)
            tensors.append(rec)
        return index[id(kt)]

    out = visit(model._outputs[0])
    for t in model._inputs:
        if id(t) not in index:
            raise ValueError("save: the output of model %s does not depend on its input %s"
                             % (model.name, t.layer.name))
    return {"class": "Model", "name": model.name, "layers": [_layer_config(l) for l in layers], "tensors": tensors,
            "inputs": [index[id(t)] for t in model._inputs], "output": out}


def _rebuild(arch):
    from . import layers as _layers
    built = [_config.build(c, _layers, "layer") for c in arch["layers"]]
    if arch["class"] == "Sequential":
        model = Sequential(name=arch["name"])
        model.add(InputLayer(shape=tuple(arch["input_shape"]), name=arch["input_name"]))
        for l in built:
            model.add(l)
        return model
    ts, applied = [], {}
    for rec in arch["tensors"]:
        if "input" in rec:
            ts.append(Input(shape=tuple(rec["input"]), name=rec["name"], dtype=rec.get("dtype")))
        else:
            # The outputs of one multi-output application are recorded one by one: apply it once.
            key = (rec["layer"], tuple(rec["inputs"])) if "output" in rec else len(ts)
            if key not in applied:
                ins = [ts[i] for i in rec["inputs"]]
                call = arch["layers"][rec["layer"]].get("call", {})
                applied[key] = built[rec["layer"]](ins, **call)
            out = applied[key]
            ts.append(out[rec["output"]] if "output" in rec else out)
    inputs = [ts[i] for i in arch["inputs"]] if "inputs" in arch else ts[arch["input"]]
    return Model(inputs=inputs, outputs=ts[arch["output"]], name=arch["name"])


def _compile_config(model):
    c = model._compiled
    opt = c["optimizer"]
    args, kwargs = getattr(opt, "_init_args", ((), {}))
    args, kwargs = list(args), dict(kwargs)
    kwargs.pop("lr", None)
    if args:
        args[0] = opt.learning_rate  # the current rate, as Keras saves it
    else:
        kwargs["learning_rate"] = opt.learning_rate
    opt_cfg = {"class": type(opt).__name__, "args": _config.to_json(args, "the optimizer"),
               "kwargs": _config.to_json(kwargs, "the optimizer")}
    return {"optimizer": opt_cfg, "loss": _config.config_of(c["loss"], "the loss"),
            "metrics": [m[1] for m in c["metrics"]], "seed": c["seed"]}


def _is_training_state(name):
    """Model.save's optimizer slots and hyper-parameters ('optim.*') and RNG state ('rng'), stored beside
    the weights ('NNNN/layer/index')."""
    return name.startswith("optim.") or name == "rng"


def _save(self, filepath, overwrite=True, save_format=None, **kwargs):
    """The architecture (JSON), compile settings, weights and training state in one safetensors file:
    the optimizer's slots (Adam's moments), its step count and learning rate, the RNG state and the
    epoch count, so a model loaded by load_model trains on exactly as the saved one would have."""
    import json
    self._require_cpp("save")
    meta = {"model_config": json.dumps(_architecture(self)), "compile_config": json.dumps(_compile_config(self)),
            "optimizer": self._cpp.optimizer_name, "step": str(self._cpp.step), "epoch": str(self._cpp.epoch)}
    self.save_weights(filepath, overwrite=overwrite, _format="cudl.keras model", _metadata=meta,
                      _extra=self._cpp.training_state())


Model.save = _save


def load_model(filepath, custom_objects=None, compile=True, **kwargs):
    """A model written by Model.save, compiled as it was (cudl creates weights at compile, so
    compile=False compiles too), with its weights and its training state: the optimizer's slots,
    step count and learning rate, the RNG state and the epoch count (fit continues where it stopped)."""
    import json
    if custom_objects:
        raise ValueError("load_model: custom_objects are not supported by cudl")
    named, meta = _cudl.load_safetensors(str(filepath))
    if meta.get("format") != "cudl.keras model":
        raise ValueError("load_model: %s was not written by Model.save (metadata format %r)"
                         % (filepath, meta.get("format")))
    for key in ("step", "epoch"):
        if not meta.get(key, "").isdigit():
            raise ValueError("load_model: %s: metadata %s is %r, expected a non-negative integer (a file written "
                             "before Model.save kept the optimizer state: rebuild the model and use load_weights)"
                             % (filepath, key, meta.get(key)))
    model = _rebuild(json.loads(meta["model_config"]))
    cc = json.loads(meta["compile_config"])
    model.compile(optimizer=_config.build(cc["optimizer"], _optimizers, "optimizer"),
                  loss=_config.build(cc["loss"], _losses, "loss"), metrics=cc["metrics"], seed=cc["seed"])
    model.load_weights(filepath)
    model._cpp.load_training_state([nt for nt in named if _is_training_state(nt[0])], meta.get("optimizer", ""),
                                   int(meta["step"]), int(meta["epoch"]), "load_model: %s" % filepath)
    return model


def save_model(model, filepath, overwrite=True, **kwargs):
    model.save(filepath, overwrite=overwrite, **kwargs)
