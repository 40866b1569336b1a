"""Errors reach Python as exceptions with cudl's message: ValueError for bad shapes and arguments,
RuntimeError for the rest; Ctrl-C during fit is a KeyboardInterrupt and leaves the model usable."""
import os
import signal
import threading

import numpy as np
import pytest

import cudl
from cudl import _cudl
from cudl.keras import callbacks, layers, optimizers
from cudl.keras.layers import Dense
from cudl.keras.models import Model, Sequential


def compiled(features=8, classes=3):
    m = Sequential([Dense(classes, activation="softmax", input_shape=(features,))])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_bad_input_shape_names_both():
    m = compiled()
    with pytest.raises(ValueError, match=r"\(10, 7\).*\(None, 8\)"):
        m.fit(np.zeros((10, 7)), np.zeros(10), verbose=0)
    with pytest.raises(ValueError, match="rows"):
        m.fit(np.zeros((10, 8)), np.zeros(9), verbose=0)


def test_bad_labels():
    m = compiled()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        m.fit(np.zeros((4, 8)), np.array([0, 1, 2, 3]), verbose=0)
    with pytest.raises(ValueError, match="integers"):
        m.fit(np.zeros((4, 8)), np.array([0.5, 1, 2, 0]), verbose=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="activation"):
        Dense(3, activation="nope")
    with pytest.raises(ValueError, match="loss"):
        Sequential([Dense(3, input_dim=2)]).compile(loss="nope")
    with pytest.raises(ValueError, match="optimizer"):
        Sequential([Dense(3, input_dim=2)]).compile(optimizer="nope", loss="mse")
    with pytest.raises(TypeError, match="unsupported argument"):
        Dense(3, not_an_argument=1)
    with pytest.raises(ValueError, match="batch_size"):
        compiled().fit(np.zeros((4, 8)), np.zeros(4), batch_size=0, verbose=0)


def test_same_padding_only_when_symmetric():
    layers.Conv2D(2, 3, padding="same")(cudl.keras.Input((8, 8, 1)))
    with pytest.raises(ValueError, match="asymmetric"):
        layers.Conv2D(2, 2, padding="same")(cudl.keras.Input((8, 8, 1)))
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(2, 3, padding="full")


def test_probability_loss_needs_the_activation():
    m = Sequential([Dense(3, input_shape=(8,))])
    with pytest.raises(ValueError, match="from_logits"):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.compile(optimizer="adam", loss=cudl.keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def test_accuracy_needs_a_categorical_loss():
    m = Sequential([Dense(1, activation="sigmoid", input_shape=(4,))])
    with pytest.raises(ValueError, match="accuracy"):
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])


def test_order_of_calls():
    m = Sequential([Dense(3, input_shape=(8,))])
    with pytest.raises(RuntimeError, match="compile"):
        m.fit(np.zeros((4, 8)), np.zeros((4, 3)), verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        m.predict(np.zeros((4, 8)))


def test_cudl_errors_map_to_python_exceptions(tmp_path):
    with pytest.raises(ValueError, match="unknown optimizer"):
        _cudl.Optimizer("nope")
    with pytest.raises(ValueError, match="cannot reshape"):
        _cudl.reshape([3], "r")(_cudl.Input([4]))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 4)
    with pytest.raises(RuntimeError, match="bad.safetensors"):
        _cudl.load_safetensors(str(bad))
    with pytest.raises(RuntimeError, match="fetch-mnist"):
        _cudl.load_mnist(str(tmp_path), True)
    m = compiled()
    with pytest.raises(ValueError, match="save_weights"):
        _cudl.save_safetensors(str(tmp_path / "x.safetensors"), [("a", np.zeros(2, np.float32))])
        m.load_weights(tmp_path / "x.safetensors")


def test_missing_dataset_names_the_fetch_script(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDL_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="scripts/fetch-mnist.sh --dataset fashion"):
        cudl.keras.datasets.fashion_mnist.load_data()
    with pytest.raises(FileNotFoundError, match="scripts/fetch-mnist.sh"):
        cudl.keras.datasets.mnist.load_data()


def test_exception_in_a_callback_propagates():
    class Boom(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise ZeroDivisionError("from the callback")

    m = compiled()
    with pytest.raises(ZeroDivisionError, match="from the callback"):
        m.fit(np.zeros((8, 8)), np.zeros(8), verbose=0, callbacks=[Boom()])
    m.fit(np.zeros((8, 8)), np.zeros(8), verbose=0)  # still usable


def test_ctrl_c_during_fit_raises_keyboard_interrupt():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach only the main thread")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20000, 64)).astype(np.float32), rng.integers(0, 3, 20000)
    m = Sequential([Dense(256, activation="relu", input_shape=(64,)), Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            m.fit(x, y, epochs=1000, batch_size=32, verbose=0)  # far longer than 0.5 s
    finally:
        timer.cancel()
    assert m.evaluate(x[:100], y[:100], verbose=0) > 0  # the model survives the interrupt
