"""cudl.keras.callbacks: Keras callbacks. EarlyStopping, ReduceLROnPlateau, LearningRateScheduler and
CSVLogger run as cudl's C++ callbacks; Callback subclasses (and History, ProgbarLogger,
ModelCheckpoint, LambdaCallback) are Python, called from fit between batches and epochs.

Per-batch hooks (on_train_batch_end / on_batch_end) get the batch index and Keras's batch logs: the
running means of the loss and metrics over the epoch so far. cudl keeps them on the device, so
each batch's logs cost one device read (a synchronisation that stalls the pipeline of queued
steps); fit reads them only for callbacks that override a batch hook."""

import inspect
import math
import os
import sys
import time

from .. import _cudl


def _format_logs(logs):
    return " - ".join("%s: %.4f" % (k, v) for k, v in logs.items())


class Callback:
    """Base class of Python callbacks: override on_epoch_end(epoch, logs) etc.; self.model is the
    Keras model (set model.stop_training = True to stop after the epoch). Overriding
    on_train_batch_end / on_batch_end costs a device read per batch for its logs."""

    _reads_batch_logs = True  # batch hooks get logs (one device read per batch)

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        self.on_batch_end(batch, logs)

    def on_batch_end(self, batch, logs=None):
        pass

    def _wants_batches(self):
        t = type(self)
        return (t.on_train_batch_end is not Callback.on_train_batch_end or
                t.on_batch_end is not Callback.on_batch_end)

    def _to_cudl(self, model, params):
        """The object fit hands to the C++ loop: an adapter calling this callback."""
        if not hasattr(self, "model"):
            raise RuntimeError("%s: its __init__ must call super().__init__()" % type(self).__name__)
        self.set_model(model)
        self.set_params(params)
        return (_BatchAdapter if self._wants_batches() else _Adapter)(self, model)


class _Adapter(_cudl.Callback):
    """Calls a Python callback from cudl's fit loop, with Keras-named logs."""

    def __init__(self, cb, model):
        super().__init__()
        self.cb, self.model = cb, model

    def on_train_begin(self):
        self.cb.on_train_begin({})

    def on_epoch_begin(self, epoch):
        self.cb.on_epoch_begin(epoch, {})

    def on_epoch_end(self, epoch, logs):
        self.cb.on_epoch_end(epoch, self.model._rename(logs))
        if self.model.stop_training:
            self.model._cpp.stop_training()

    def on_train_end(self):
        self.cb.on_train_end({})


class _BatchAdapter(_Adapter):
    def on_train_batch_end(self, batch):
        logs = self.model._rename(self.model._cpp.batch_logs()) if self.cb._reads_batch_logs else {}
        self.cb.on_train_batch_end(batch, logs)
        if self.model.stop_training:
            self.model._cpp.stop_training()


class History(Callback):
    """history: {'loss': [...], 'accuracy': [...], 'val_loss': [...], ...}; epoch: the epoch indices."""

    def on_train_begin(self, logs=None):
        self.history, self.epoch = {}, []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class ProgbarLogger(Callback):
    """Keras-like progress: verbose=1 a bar (redrawn on a terminal) and the epoch's line, 2 one line
    per epoch."""

    def __init__(self, verbose=1):
        super().__init__()
        self.verbose = verbose

    _reads_batch_logs = False  # the bar shows progress only: no device read per batch

    def _wants_batches(self):
        return self.verbose == 1 and sys.stdout.isatty()

    def on_epoch_begin(self, epoch, logs=None):
        print("Epoch %d/%d" % (epoch + 1, self.params["epochs"]))
        sys.stdout.flush()
        self._t0 = self._last = time.time()

    def _bar(self, done):
        steps = self.params["steps"]
        width = 30
        filled = int(width * done / steps)
        bar = "=" * max(filled - 1, 0) + (">" if done < steps else "=") if filled else ""
        return "%*d/%d [%s%s]" % (len(str(steps)), done, steps, bar, "." * (width - len(bar)))

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self._last >= 0.1:
            self._last = now
            sys.stdout.write("\r" + self._bar(batch + 1))
            sys.stdout.flush()

    def on_epoch_end(self, epoch, logs=None):
        secs = time.time() - self._t0
        steps = self.params["steps"]
        if self.verbose == 1:
            line = "%s - %.0fs %.0fms/step - %s" % (self._bar(steps), secs, 1000 * secs / steps,
                                                   _format_logs(logs or {}))
            sys.stdout.write(("\r" if sys.stdout.isatty() else "") + line + "\n")
        else:
            print("%d/%d - %.0fs - %s" % (steps, steps, secs, _format_logs(logs or {})))
        sys.stdout.flush()


class LambdaCallback(Callback):
    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_end=None, on_train_begin=None,
                 on_train_end=None, **kwargs):
        super().__init__()
        if on_epoch_begin:
            self.on_epoch_begin = on_epoch_begin
        if on_epoch_end:
            self.on_epoch_end = on_epoch_end
        if on_train_begin:
            self.on_train_begin = lambda logs=None: on_train_begin(logs)
        if on_train_end:
            self.on_train_end = lambda logs=None: on_train_end(logs)
        self._batch = on_batch_end

    def _wants_batches(self):
        return self._batch is not None

    def on_train_batch_end(self, batch, logs=None):
        if self._batch:
            self._batch(batch, logs)


def _monitor(model, name):
    """The cudl log key of a Keras metric name ('val_acc' -> 'val_accuracy')."""
    pre = "val_" if name.startswith("val_") else ""
    base = name[len(pre):]
    if base in model._metric_names:
        base = model._metric_keys[model._metric_names.index(base)]
    return pre + base


def _mode(mode):
    try:
        return {"auto": _cudl.Mode.auto, "min": _cudl.Mode.min, "max": _cudl.Mode.max}[mode]
    except KeyError:
        raise ValueError("mode must be 'auto', 'min' or 'max', got %r" % (mode,)) from None


class _Native:
    """A callback that runs as a cudl C++ callback; _make builds it for one fit."""

    _cpp = None

    def _to_cudl(self, model, params):
        self._cpp = self._make(model)
        return self._cpp


class EarlyStopping(_Native):
    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        if baseline is not None or start_from_epoch:
            raise ValueError("EarlyStopping: baseline and start_from_epoch are not supported by cudl")
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), int(patience)
        self.mode, self.restore_best_weights = _mode(mode), bool(restore_best_weights)

    def _make(self, model):
        return _cudl.EarlyStopping(_monitor(model, self.monitor), self.patience, self.min_delta,
                                   self.restore_best_weights, self.mode)

    @property
    def stopped_epoch(self):
        """Epoch at which training stopped (0 when it did not stop early, as in Keras)."""
        return max(self._cpp.stopped_epoch, 0) if self._cpp else 0


class ReduceLROnPlateau(_Native):
    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0, **kwargs):
        if cooldown:
            raise ValueError("ReduceLROnPlateau: cooldown is not supported by cudl")
        if not 0 < factor < 1:
            raise ValueError("ReduceLROnPlateau: factor must be in (0, 1), got %s" % factor)
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.mode, self.min_delta, self.min_lr = _mode(mode), float(min_delta), float(min_lr)

    def _make(self, model):
        return _cudl.ReduceLROnPlateau(_monitor(model, self.monitor), self.factor, self.patience, self.min_lr,
                                       self.min_delta, self.mode)


class LearningRateScheduler(_Native):
    """schedule(epoch) or schedule(epoch, lr) -> the epoch's learning rate (set before the epoch)."""

    def __init__(self, schedule, verbose=0):
        self.schedule, self.verbose = schedule, verbose
        try:
            self._two_args = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._two_args = True

    def _make(self, model):
        cpp = model._cpp

        def rate(epoch):
            lr = self.schedule(epoch, cpp.learning_rate) if self._two_args else self.schedule(epoch)
            lr = float(lr)
            if not math.isfinite(lr) or lr < 0:
                raise ValueError("LearningRateScheduler: the schedule returned %r for epoch %d" % (lr, epoch))
            if self.verbose:
                print("\nEpoch %d: LearningRateScheduler setting learning rate to %g." % (epoch + 1, lr))
            return lr

        return _cudl.LearningRateScheduler(rate)


class CSVLogger(_Native):
    """One row per epoch: epoch, then the logs in name order (cudl's names)."""

    def __init__(self, filename, separator=",", append=False):
        if separator != ",":
            raise ValueError("CSVLogger: only separator=',' is supported by cudl")
        self.filename, self.append = str(filename), bool(append)

    def _make(self, model):
        if not self.append and os.path.exists(self.filename):
            os.remove(self.filename)
        return _cudl.CSVLogger(self.filename)


class ModelCheckpoint(Callback):
    """Saves the weights (save_weights, safetensors) each epoch, or when `monitor` improves
    (save_best_only). filepath is formatted with epoch (1-based) and the logs: 'w-{epoch:02d}.safetensors'."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError("ModelCheckpoint: only save_freq='epoch' is supported by cudl")
        if mode not in ("auto", "min", "max"):
            raise ValueError("ModelCheckpoint: mode must be 'auto', 'min' or 'max', got %r" % (mode,))
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only = bool(save_best_only)
        self._max = mode == "max" or (mode == "auto" and ("acc" in monitor or monitor.startswith("fmeasure")))
        self.best = initial_value_threshold

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            if self.monitor not in logs:
                raise ValueError("ModelCheckpoint: monitor %r is not among the logs (%s)"
                                 % (self.monitor, ", ".join(logs)))
            v = logs[self.monitor]
            if self.best is not None and not (v > self.best if self._max else v < self.best):
                return
            self.best = v
        if self.verbose:
            print("\nEpoch %d: saving model to %s" % (epoch + 1, path))
        self.model.save_weights(path)
