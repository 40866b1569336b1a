"""The Keras "MNIST rows as a sequence" program on cudl: each 28x28 image is 28 time steps of 28
features read by an LSTM (or --cell gru / simple_rnn); the imports say cudl.keras instead of keras.

    PYTHONPATH=build/python python3 samples/python/mnist_lstm_keras.py [--limit N] [--epochs E] [--cell lstm]
(--limit keeps the first N training and N/6 test images; for quick checks.)"""
import argparse
import time

from cudl.keras.datasets import mnist  # was: from keras.datasets import mnist
from cudl.keras.layers import GRU, LSTM, Dense, SimpleRNN  # was: from keras.layers import ...
from cudl.keras.models import Sequential  # was: from keras.models import Sequential

ap = argparse.ArgumentParser()
ap.add_argument("--limit", type=int, default=0)
ap.add_argument("--epochs", type=int, default=3)
ap.add_argument("--cell", choices=["lstm", "gru", "simple_rnn"], default="lstm")
args = ap.parse_args()

(x_train, y_train), (x_test, y_test) = mnist.load_data()
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = x_test[:max(args.limit // 6, 1)], y_test[:max(args.limit // 6, 1)]
x_train, x_test = x_train / 255.0, x_test / 255.0  # (N, 28, 28): 28 steps of 28 features

cell = {"lstm": LSTM, "gru": GRU, "simple_rnn": SimpleRNN}[args.cell]
model = Sequential([cell(128, input_shape=(28, 28)), Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
t0 = time.time()
model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, validation_split=0.1, verbose=2)
fit_seconds = time.time() - t0
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print("test accuracy: %.4f  fit: %.1fs" % (accuracy, fit_seconds))
