"""The classic standalone-Keras MNIST baseline (a 784-784-10 MLP) on cudl: the imports say
cudl.keras instead of keras.

    PYTHONPATH=build/python python3 samples/python/mnist_keras_mlp.py [--limit N] [--epochs E]"""
import argparse
import time

import numpy
from cudl.keras.datasets import mnist  # was: from keras.datasets import mnist
from cudl.keras.layers import Dense  # was: from keras.layers import Dense
from cudl.keras.models import Sequential  # was: from keras.models import Sequential
from cudl.keras.utils import np_utils  # was: from keras.utils import np_utils

ap = argparse.ArgumentParser()
ap.add_argument("--limit", type=int, default=0)
ap.add_argument("--epochs", type=int, default=10)
args = ap.parse_args()

seed = 7
numpy.random.seed(seed)
(X_train, y_train), (X_test, y_test) = mnist.load_data()
if args.limit:
    X_train, y_train = X_train[:args.limit], y_train[:args.limit]
    X_test, y_test = X_test[:max(args.limit // 6, 1)], y_test[:max(args.limit // 6, 1)]
num_pixels = X_train.shape[1] * X_train.shape[2]
X_train = X_train.reshape(X_train.shape[0], num_pixels).astype('float32')
X_test = X_test.reshape(X_test.shape[0], num_pixels).astype('float32')
X_train = X_train / 255
X_test = X_test / 255
y_train = np_utils.to_categorical(y_train, 10)
y_test = np_utils.to_categorical(y_test, 10)
num_classes = y_test.shape[1]


def baseline_model():
    model = Sequential()
    model.add(Dense(num_pixels, input_dim=num_pixels, kernel_initializer='normal', activation='relu'))
    model.add(Dense(num_classes, kernel_initializer='normal', activation='softmax'))
    model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    return model


model = baseline_model()
t0 = time.time()
model.fit(X_train, y_train, validation_data=(X_test, y_test), epochs=args.epochs, batch_size=200, verbose=2)
fit_seconds = time.time() - t0
scores = model.evaluate(X_test, y_test, verbose=0)
predictions = model.predict(X_test)
print("Baseline Error: %.2f%%" % (100 - scores[1] * 100))
print("test accuracy: %.4f  fit: %.1fs  predictions: %s" % (scores[1], fit_seconds, predictions.shape))
