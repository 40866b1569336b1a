"""The tf.keras beginner program on cudl: only the import line differs from TensorFlow's version.

    PYTHONPATH=build/python python3 samples/python/mnist_tf_keras.py [--limit N] [--epochs E]
(--limit keeps the first N training and N/6 test images; for quick checks.)"""
import argparse
import time

import cudl as tf  # was: import tensorflow as tf

ap = argparse.ArgumentParser()
ap.add_argument("--limit", type=int, default=0)
ap.add_argument("--epochs", type=int, default=5)
args = ap.parse_args()

mnist = tf.keras.datasets.mnist
(x_train, y_train), (x_test, y_test) = mnist.load_data()
if args.limit:
    x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    x_test, y_test = x_test[:max(args.limit // 6, 1)], y_test[:max(args.limit // 6, 1)]
x_train, x_test = x_train / 255.0, x_test / 255.0

model = tf.keras.models.Sequential([
  tf.keras.layers.Flatten(input_shape=(28, 28)),
  tf.keras.layers.Dense(128, activation='relu'),
  tf.keras.layers.Dense(10, activation='softmax')])
model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
t0 = time.time()
model.fit(x_train, y_train, epochs=args.epochs)
fit_seconds = time.time() - t0
loss, accuracy = model.evaluate(x_test, y_test)
print("test accuracy: %.4f  fit: %.1fs" % (accuracy, fit_seconds))
