"""cudl.keras API: import styles, layers and shapes, training semantics, weights, callbacks."""
import io
import contextlib

import numpy as np
import pytest

import cudl
import cudl as tf
from cudl import keras
from cudl.keras import callbacks, layers, optimizers
from cudl.keras.layers import Dense, Flatten
from cudl.keras.models import Model, Sequential
from cudl.keras.utils import np_utils, to_categorical


def mlp(classes=3, features=8, act="softmax"):
    return Sequential([Dense(16, activation="relu", input_shape=(features,)), Dense(classes, activation=act)])


def test_import_styles():
    assert tf.keras.models.Sequential is Sequential
    assert tf.keras.layers.Dense is Dense and keras.layers.Dense is Dense
    assert np_utils.to_categorical is to_categorical
    assert tf.keras.Input is keras.layers.Input
    assert cudl.__version__.count(".") == 2


def test_to_categorical():
    y = to_categorical([0, 2, 1], 4)
    np.testing.assert_array_equal(y, np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=np.float32))
    assert to_categorical(np.array([[1], [0]])).shape == (2, 2)
    with pytest.raises(ValueError):
        to_categorical([0, 5], 3)


def test_tensor_numpy_round_trip():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = cudl.from_numpy(a)
    assert t.shape == [3, 4] and t.dtype == "f32"
    np.testing.assert_array_equal(t.numpy(), a)
    np.testing.assert_array_equal(cudl.from_numpy(a.T).numpy(), a.T)  # non-contiguous input is copied


def test_fit_evaluate_predict(blobs):
    x, y = blobs
    model = mlp()
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    h = model.fit(x, y, epochs=5, verbose=0, validation_split=0.2)
    assert list(h.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert len(h.history["loss"]) == 5 and h.history["loss"][-1] < h.history["loss"][0]
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.9
    p = model.predict(x)
    assert p.shape == (600, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)  # the dropped softmax is applied in predict
    assert (p.argmax(1) == y).mean() == pytest.approx(acc, abs=1e-6)


def test_evaluate_without_metrics_is_a_float(blobs):
    x, y = blobs
    model = mlp()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy())
    model.fit(x, y, epochs=1, verbose=0)
    assert isinstance(model.evaluate(x, y, verbose=0), float)


def test_one_hot_targets_with_categorical_crossentropy(blobs):
    x, y = blobs
    model = mlp()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["acc"])
    h = model.fit(x, to_categorical(y), epochs=3, batch_size=50, verbose=0,
                  validation_data=(x[:100], to_categorical(y[:100], 3)))
    assert "acc" in h.history and "val_acc" in h.history
    soft = np.full((600, 3), 1 / 3)
    with pytest.raises(ValueError, match="one-hot"):
        model.fit(x, soft, epochs=1, verbose=0)


def test_logits_loss_and_regression():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 1
    model = Sequential([Dense(1, input_dim=4)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0)[0] < 1e-3
    kernel, bias = model.get_weights()
    np.testing.assert_allclose(kernel[:, 0], [1.0, -2.0, 0.5, 3.0], atol=0.02)
    np.testing.assert_allclose(bias, [1.0], atol=0.02)


def test_uint8_and_float64_inputs():
    rng = np.random.default_rng(2)
    x8 = rng.integers(0, 256, size=(64, 6, 6), dtype=np.uint8)
    y = (x8.reshape(64, -1).mean(1) > 127).astype(np.int64)
    model = Sequential([Flatten(input_shape=(6, 6)), Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x8, y, epochs=1, verbose=0)
    # As in Keras, uint8 is read as its raw values (0..255), exactly like the same values in float32
    # or float64, not scaled by 1/255.
    p8 = model.predict(x8)
    np.testing.assert_array_equal(p8, model.predict(x8.astype(np.float32)))
    np.testing.assert_array_equal(p8, model.predict(x8.astype(np.float64)))
    assert np.abs(p8 - model.predict(x8 / 255.0)).max() > 1e-3
    kernel, bias = model.layers[1].get_weights()
    z = x8.reshape(64, -1).astype(np.float64) @ kernel + bias
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p8, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_functional_model_with_residual(blobs):
    x, y = blobs
    inp = keras.Input(shape=(8,))
    h = Dense(8, activation="relu")(inp)
    h = layers.Add()([h, inp])
    h = layers.LayerNormalization()(h)
    h = layers.Dropout(0.1)(h)
    out = Dense(3, activation="softmax")(h)
    model = Model(inputs=inp, outputs=out)
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=10, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.9


def test_cnn_channels_last():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 8, 8, 2)).astype(np.float32)
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 1].mean(axis=(1, 2))).astype(np.int32)  # compares the channels
    model = Sequential([
        layers.Conv2D(4, (3, 3), padding="same", activation="relu", input_shape=(8, 8, 2)),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(4, 3, activation="relu"),
        layers.GlobalAveragePooling2D(),
        Dense(2, activation="softmax"),
    ])
    assert model.output_shape == (None, 2)
    assert model.layers[2].output_shape == (None, 4, 4, 4)
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=16, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.8
    w = model.layers[0].get_weights()
    assert [a.shape for a in w] == [(3, 3, 2, 4), (4,)]  # Keras layout (kh, kw, in, out)
    assert [a.shape for a in model.layers[1].get_weights()] == [(4,)] * 4


def test_summary_prints(capsys):
    model = mlp()
    model.summary()
    out = capsys.readouterr().out
    assert "dense" in out and "Total params: 195" in out  # 8*16+16 + 16*3+3


def test_weights_round_trip(blobs, tmp_path):
    x, y = blobs
    a, b = mlp(), mlp()
    for m in (a, b):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    a.fit(x, y, epochs=2, verbose=0)
    assert [w.shape for w in a.get_weights()] == [(8, 16), (16,), (16, 3), (3,)]
    b.set_weights(a.get_weights())
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    c = mlp()
    c.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    a.save_weights(tmp_path / "w.safetensors")
    c.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(a.predict(x), c.predict(x))
    with pytest.raises(ValueError, match="shape"):
        b.set_weights([w.T for w in a.get_weights()])


def test_python_callback_and_stop_training(blobs):
    x, y = blobs
    seen = []

    class Recorder(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, sorted(logs)))
            if epoch == 2:
                self.model.stop_training = True

        def on_batch_end(self, batch, logs=None):
            seen.append(("batch", batch))

    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, epochs=10, batch_size=300, verbose=0, callbacks=[Recorder()])
    assert len(h.history["loss"]) == 3
    assert seen[:3] == [("batch", 0), ("batch", 1), (0, ["accuracy", "loss"])]


def test_batch_hooks_get_keras_batch_logs(blobs):
    """on_train_batch_end / on_batch_end get the epoch's running means (Keras's batch logs): the last
    batch's logs are the epoch's logs, and the first batch's are that batch's loss and accuracy."""
    x, y = blobs
    batches, epochs = [], []

    class Recorder(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append((batch, dict(logs)))

        def on_epoch_end(self, epoch, logs=None):
            epochs.append(dict(logs))

    model = mlp()
    model.compile(optimizer=optimizers.SGD(0.05), loss="sparse_categorical_crossentropy", metrics=["acc"])
    w0 = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=128, shuffle=False, verbose=0, callbacks=[Recorder()])
    assert [b for b, _ in batches] == [0, 1, 2, 3, 4] * 2  # 600 rows: 4 full batches and one of 88
    assert all(logs.keys() == {"loss", "acc"} for _, logs in batches)
    for e in range(2):
        last = batches[5 * e + 4][1]
        assert last["loss"] == pytest.approx(epochs[e]["loss"], rel=1e-6)
        assert last["acc"] == pytest.approx(epochs[e]["acc"], rel=1e-6)
    # The first batch: the loss and accuracy of rows 0..127 under the initial weights.
    h = np.maximum(x[:128] @ w0[0] + w0[1], 0)
    z = h @ w0[2] + w0[3]
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert batches[0][1]["loss"] == pytest.approx(-logp[np.arange(128), y[:128]].mean(), rel=1e-4)
    assert batches[0][1]["acc"] == pytest.approx((z.argmax(axis=1) == y[:128]).mean(), abs=1e-6)
    # LambdaCallback's on_batch_end gets them too; a callback without batch hooks costs no read.
    seen = []
    model.fit(x, y, epochs=1, batch_size=300, verbose=0,
              callbacks=[callbacks.LambdaCallback(on_batch_end=lambda b, logs: seen.append(sorted(logs)))])
    assert seen == [["acc", "loss"]] * 2
    assert not callbacks.Callback()._wants_batches()
    with pytest.raises(RuntimeError, match="no batch"):
        model._cpp.batch_logs()


def test_native_callbacks(blobs, tmp_path):
    x, y = blobs
    model = mlp()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    csv = tmp_path / "log.csv"
    rates = []
    model.fit(x, y, epochs=3, verbose=0, validation_split=0.25, callbacks=[
        callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)),
        callbacks.LambdaCallback(on_epoch_end=lambda e, logs: rates.append(model.optimizer.learning_rate)),
        callbacks.CSVLogger(str(csv)),
        callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}.safetensors")),
        callbacks.ReduceLROnPlateau(monitor="val_loss", patience=5),
    ])
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.1 / 3], rtol=1e-6)
    assert len(csv.read_text().strip().splitlines()) == 4  # header + 3 epochs
    assert sorted(p.name for p in tmp_path.glob("w-*")) == ["w-01.safetensors", "w-02.safetensors",
                                                            "w-03.safetensors"]
    es = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    h = model.fit(x, y, epochs=10, verbose=0, callbacks=[es])
    assert len(h.history["loss"]) == 2 and es.stopped_epoch > 0


def test_verbose_lines(blobs, capsys):
    x, y = blobs
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=100, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "Epoch 1/2" and lines[1].startswith("6/6 - ") and "loss: " in lines[1]
    model.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_train_test_predict_on_batch(blobs):
    x, y = blobs
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    first = model.train_on_batch(x[:32], y[:32])
    for _ in range(20):
        last = model.train_on_batch(x[:32], y[:32])
    assert last[0] < first[0]
    assert len(model.test_on_batch(x[:32], y[:32])) == 2
    np.testing.assert_allclose(model.predict_on_batch(x[:32]), model.predict(x[:32]), rtol=1e-5, atol=1e-6)


def test_sequential_shape_from_data(blobs):
    x, y = blobs
    model = Sequential()
    model.add(Dense(4, activation="relu"))
    model.add(Dense(3, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.input_shape == (None, 8)


def test_regularizer_shrinks_weights(blobs):
    x, y = blobs
    norms = []
    for reg in (None, keras.regularizers.l2(0.1)):
        model = Sequential([Dense(3, activation="softmax", input_shape=(8,), kernel_regularizer=reg)])
        model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", seed=1)
        model.fit(x, y, epochs=10, verbose=0, shuffle=False)
        norms.append(np.linalg.norm(model.get_weights()[0]))
    assert norms[1] < 0.8 * norms[0]


def test_save_and_load_model(blobs, tmp_path):
    x, y = blobs
    inp = keras.Input(shape=(8,))
    h = Dense(8, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-3),
              kernel_initializer=keras.initializers.HeNormal())(inp)
    h = layers.Add()([h, inp])
    h = layers.BatchNormalization()(h)
    out = Dense(3, activation="softmax")(h)
    fm = Model(inp, out, name="residual")
    sm = Sequential([layers.Reshape((4, 2, 1), input_shape=(8,)), layers.Conv2D(2, 3, padding="same"),
                     Flatten(), Dense(3, activation="softmax")])
    for model in (fm, sm):
        model.compile(optimizer=optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["acc"])
        model.fit(x, y, epochs=2, verbose=0)
        model.optimizer.learning_rate = 0.005
        path = tmp_path / (model.name + ".safetensors")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is type(model) and loaded.name == model.name
        assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        assert loaded.optimizer.learning_rate == pytest.approx(0.005)
        assert loaded.evaluate(x, y, return_dict=True, verbose=0).keys() == {"loss", "acc"}
        loaded.fit(x, y, epochs=1, verbose=0)  # trains on (test_load_model_continues_training_exactly)
    with pytest.raises(ValueError, match="Model.save"):
        sm.save_weights(tmp_path / "w.safetensors")
        keras.models.load_model(tmp_path / "w.safetensors")


@pytest.mark.parametrize("opt", ["adam", "rmsprop"])
def test_load_model_continues_training_exactly(blobs, tmp_path, opt):
    """Saved after 2 epochs, loaded and trained 1 more == 3 epochs uninterrupted: the optimizer's
    moments and step count, the RNG state (dropout) and the epoch (shuffle order) come back."""
    x, y = blobs

    def build():
        m = Sequential([Dense(16, activation="relu", input_shape=(8,)), layers.Dropout(0.2),
                        Dense(3, activation="softmax")])
        m.compile(optimizer=optimizers.Adam(0.01) if opt == "adam" else optimizers.RMSprop(0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=3)
        return m

    whole = build()
    whole.fit(x, y, epochs=3, batch_size=16, verbose=0)
    part = build()
    part.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.safetensors"
    part.save(path)
    loaded = keras.models.load_model(path)
    steps = part._cpp.step
    assert loaded._cpp.step == steps > 0 and loaded._cpp.epoch == 2
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    for w_loaded, w_whole in zip(loaded.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(w_loaded, w_whole, rtol=0, atol=1e-6)
    # Without the optimizer state (fresh moments) the third epoch differs: the check above can fail.
    fresh = build()
    fresh.load_weights(path)
    fresh._cpp.epoch = 2
    fresh.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), whole.get_weights())) > 1e-4


def test_load_model_rejects_mismatched_optimizer_state(blobs, tmp_path):
    x, y = blobs
    m = mlp()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.safetensors")
    m.save(path)
    named, meta = cudl._cudl.load_safetensors(path)
    slots = [(n, a) for n, a in named if n.startswith("optim.") and n != "optim.hyper"]
    assert slots, "Adam keeps slots"
    cases = {
        "missing": ([nt for nt in named if nt[0] != slots[0][0]], meta, "is missing"),
        "shape": ([(n, a[:1] if n == slots[0][0] else a) for n, a in named], meta, "has shape"),
        "optimizer": (named, dict(meta, optimizer="sgd"), "compiled with 'adam'"),
        "step": (named, dict(meta, step="-1"), "metadata step"),
    }
    for what, (tensors, md, message) in cases.items():
        bad = str(tmp_path / (what + ".safetensors"))
        cudl._cudl.save_safetensors(bad, tensors, md)
        with pytest.raises(ValueError, match=message):
            keras.models.load_model(bad)


def keras_optimizer_reference(x, y, kernel, bias, steps, rule, lr, eps):
    """Keras's Adam (betas 0.9/0.999) or RMSprop (rho 0.9) on Dense + mean squared error, in float64:
    Adam p -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps); RMSprop p -= lr*g/sqrt(sq+eps)."""
    params = [kernel.astype(np.float64), bias.astype(np.float64)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2 = 0.9, 0.999
    for t in range(1, steps + 1):
        err = 2 * (x @ params[0] + params[1] - y) / y.size
        grads = [x.T @ err, err.sum(0)]
        for p, g, mi, vi in zip(params, grads, m, v):
            if rule == "adam":
                mi[...] = b1 * mi + (1 - b1) * g
                vi[...] = b2 * vi + (1 - b2) * g * g
                p -= lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * mi / (np.sqrt(vi) + eps)
            else:
                vi[...] = 0.9 * vi + 0.1 * g * g
                p -= lr * g / np.sqrt(vi + eps)
    return params


@pytest.mark.parametrize("rule,epsilon", [("adam", 1e-7), ("adam", 0.5), ("rmsprop", 1e-7), ("rmsprop", 0.05)])
def test_optimizers_follow_keras_update_rules(rule, epsilon):
    # Keras places epsilon differently from torch (Adam: before the bias correction; RMSprop: under
    # the square root); with a large epsilon (TensorFlow suggests 1.0 or 0.1 for some models) or a
    # small mean square the two give visibly different weights.
    r = np.random.default_rng(3)
    x = r.normal(size=(16, 3)).astype(np.float32)
    y = r.normal(size=(16, 2)).astype(np.float32)
    model = Sequential([Dense(2, input_shape=(3,))])
    opt = optimizers.Adam(learning_rate=0.1, epsilon=epsilon) if rule == "adam" else optimizers.RMSprop(
        learning_rate=0.01, epsilon=epsilon)
    model.compile(optimizer=opt, loss="mse")
    kernel, bias = model.get_weights()
    for _ in range(3):
        model.train_on_batch(x, y)
    want = keras_optimizer_reference(x, y, kernel, bias, 3, rule, 0.1 if rule == "adam" else 0.01, epsilon)
    for got, w in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)


def test_mixed_precision_policy_compiles_in_bf16():
    from cudl.keras import mixed_precision
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32)

    def trained(policy):
        mixed_precision.set_global_policy(policy)
        try:
            m = mlp()
            m.compile(optimizer=optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      device="cpu", seed=3)
        finally:
            mixed_precision.set_global_policy("float32")
        h = m.fit(x, y, epochs=8, batch_size=16, verbose=0)
        return m, h.history["accuracy"][-1]

    f, acc_f = trained("float32")
    b, acc_b = trained("mixed_bfloat16")
    assert "precision bf16" in b._cpp.summary() and "precision f32" in f._cpp.summary()
    assert mixed_precision.global_policy().name == "float32"
    assert mixed_precision.Policy("mixed_float16").compute_dtype == "float16"
    assert acc_b > 0.85 and abs(acc_b - acc_f) < 0.1
    assert not all(np.array_equal(a, c) for a, c in zip(f.get_weights(), b.get_weights())), "bf16 storage rounds"
    with pytest.raises(ValueError, match="is not one of"):
        mixed_precision.set_global_policy("mixed_float8")


def test_mixed_float16_scales_the_loss_on_the_device():
    from cudl.keras import mixed_precision
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    mixed_precision.set_global_policy("mixed_float16")
    try:
        m = mlp(classes=2)
        m.compile(optimizer=optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", device="cpu", seed=3)
    finally:
        mixed_precision.set_global_policy("float32")
    assert m._cpp.loss_scale == 65536.0 and m._cpp.skipped_steps == 0  # torch's initial scale 2^16
    h = m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert m._cpp.loss_scale == 65536.0 / 2 ** m._cpp.skipped_steps  # halved per skipped step, never grown yet
    f = mlp(classes=2)
    f.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cpu")
    assert f._cpp.loss_scale == 1.0 and f._cpp.skipped_steps == 0
