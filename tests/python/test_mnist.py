"""Keras MNIST programs on a slice of MNIST (6000 training images): the tf.keras beginner model, a
CNN, and the samples/python programs of issue 16 run as they are (with --limit)."""
import os
import re
import subprocess
import sys

import cudl as tf


def test_tf_keras_beginner_program(mnist_slice):
    (x_train, y_train), (x_test, y_test) = mnist_slice
    x_train, x_test = x_train / 255.0, x_test / 255.0
    model = tf.keras.models.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(128, activation='relu'),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    h = model.fit(x_train, y_train, epochs=3, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert acc > 0.88, acc


def test_cnn_on_scaled_images(mnist_slice):
    (x_train, y_train), (x_test, y_test) = mnist_slice
    x_train, x_test = x_train / 255.0, x_test / 255.0  # Keras reads uint8 as 0..255: programs scale
    k = tf.keras
    model = k.Sequential([
        k.layers.Reshape((28, 28, 1), input_shape=(28, 28)),
        k.layers.Conv2D(8, 3, activation="relu", data_format="channels_last"),
        k.layers.MaxPooling2D(),
        k.layers.Flatten(),
        k.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.85


def run_sample(root, name, *args):
    env = dict(os.environ, CUDL_DATA=str(root / "data"))
    r = subprocess.run([sys.executable, str(root / "samples" / "python" / name), *args], env=env, cwd=str(root),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"test accuracy: ([0-9.]+)", r.stdout)
    assert m, r.stdout
    return float(m.group(1)), r.stdout


def test_sample_tf_keras(root, mnist_slice):
    acc, out = run_sample(root, "mnist_tf_keras.py", "--limit", "6000", "--epochs", "2")
    assert "Epoch 2/2" in out and acc > 0.85


def test_sample_keras_mlp(root, mnist_slice):
    acc, out = run_sample(root, "mnist_keras_mlp.py", "--limit", "6000", "--epochs", "2")
    assert "Baseline Error:" in out and acc > 0.85


def test_sample_lstm(root, mnist_slice):
    acc, out = run_sample(root, "mnist_lstm_keras.py", "--limit", "1200", "--epochs", "2")
    assert "Epoch 2/2" in out and "lstm (LSTM)" in out
    assert acc > 0.25, out  # 10 classes: chance is 0.1; two short epochs reach about 0.4
