"""cudl.keras sequence, attention, generative and activation layers: shapes, values against numpy
references in Keras's weight layouts, a short training run that lowers the loss, and the errors."""
import numpy as np
import pytest

from cudl import keras
from cudl.keras import layers


def rng(seed=0):
    return np.random.default_rng(seed)


def fit_losses(model, x, y, epochs=8, **kw):
    h = model.fit(x, y, epochs=epochs, verbose=0, **kw)
    return h.history["loss"]


def predict_model(inp, out):
    """A compiled functional model for predict (the loss is not used)."""
    m = keras.Model(inp, out)
    m.compile(optimizer="adam", loss="mse")
    return m


# --- Embedding and integer inputs ---------------------------------------------------------------

def token_task(n=256, t=6, vocab=12, seed=0):
    """Label = the first token mod 3: integer sequences (N, T) and labels (N,)."""
    x = rng(seed).integers(0, vocab, size=(n, t))
    return x, x[:, 0] % 3


def test_embedding_shapes_weights_and_training():
    x, y = token_task()
    emb = layers.Embedding(12, 5, input_length=6)
    model = keras.Sequential([emb, layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    assert emb.output_shape == (None, 6, 5) and emb.count_params() == 60
    table = model.get_weights()[0]
    assert table.shape == (12, 5) and np.abs(table).max() <= 0.05  # Keras's uniform(-0.05, 0.05)
    losses = fit_losses(model, x.astype(np.int32), y)
    assert losses[-1] < 0.5 * losses[0]
    loss, acc = model.evaluate(x, y, verbose=0)  # int64 indices are accepted too
    assert acc > 0.9
    p = model.predict(x[:4].astype(np.float64))  # integral floats are indices as well
    assert p.shape == (4, 3)
    # Rows of the table are what the Flatten sees: predict follows the weights.
    w = model.get_weights()
    feats = w[0][x[:4]].reshape(4, -1)
    logits = feats @ w[1] + w[2]
    ref = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(p, ref / ref.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_embedding_errors():
    x, y = token_task()
    model = keras.Sequential([layers.Embedding(12, 4, input_length=6), layers.Flatten(), layers.Dense(3)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bad = x.copy()
    bad[3, 2] = 12
    with pytest.raises(ValueError, match=r"index 12, outside \[0, 12\)"):
        model.fit(bad, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="integer indices"):
        model.predict(x + 0.5)
    with pytest.raises(ValueError, match=r"Flatten .*Embedding\(mask_zero=True\) reaches this layer"):
        keras.Sequential([layers.Embedding(10, 4, mask_zero=True, input_length=6), layers.Flatten()])
    inp = keras.Input((6,), dtype="int32")
    mixed = keras.Model(inp, layers.Concatenate()([layers.Embedding(12, 2)(inp), layers.Reshape((6, 1))(inp)]))
    with pytest.raises(ValueError, match="Embedding layers only"):
        mixed.compile(optimizer="adam", loss="mse")


def test_sparse_crossentropy_over_time_steps():
    """A tiny language model: (batch, time) tokens -> (batch, time, vocab) next-token probabilities."""
    vocab, t = 8, 10
    seq = np.arange(2000) % vocab  # a cyclic sequence: the next token is always (token + 1) % vocab
    starts = rng(1).integers(0, 1000, size=128)
    x = np.stack([seq[s:s + t] for s in starts]).astype(np.int32)
    y = np.stack([seq[s + 1:s + t + 1] for s in starts]).astype(np.int32)
    model = keras.Sequential([layers.Embedding(vocab, 16, input_length=t), layers.GRU(32, return_sequences=True),
                              layers.Dense(vocab, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    losses = fit_losses(model, x, y, epochs=10, batch_size=16)
    assert losses[-1] < 0.3 * losses[0], losses
    p = model.predict(x[:3])
    assert p.shape == (3, t, vocab)
    np.testing.assert_allclose(p.sum(-1), 1, rtol=1e-5)
    loss, acc = model.evaluate(x, y, verbose=0)
    assert 0.9 < acc <= 1.0  # accuracy per position
    with pytest.raises(ValueError, match=r"labels of shape \(128, 10\)"):
        model.fit(x, y[:, :5], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 8\)"):
        model.evaluate(x, y + 1, verbose=0)


def test_sparse_crossentropy_ignore_class():
    vocab, t = 6, 5
    x = rng(2).integers(1, vocab, size=(64, t)).astype(np.int32)
    y = x.copy()
    y[:, 3:] = -1  # padding positions
    model = keras.Sequential([layers.Embedding(vocab, 8, input_length=t), layers.Dense(vocab, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=-1), metrics=["accuracy"])
    losses = fit_losses(model, x, y, epochs=6)
    assert losses[-1] < 0.3 * losses[0]
    assert model.evaluate(x, y, verbose=0)[1] > 0.95  # over the kept positions


# --- recurrent layers ---------------------------------------------------------------------------

RNNS = [(layers.SimpleRNN, 1), (layers.LSTM, 4), (layers.GRU, 3)]


@pytest.mark.parametrize("cls,gates", RNNS)
def test_recurrent_shapes_and_keras_weight_layout(cls, gates):
    inp = keras.Input((7, 3))
    seq = cls(5, return_sequences=True)
    last = cls(4)
    out = last(seq(inp))
    assert seq.output_shape == (None, 7, 5) and out.shape == (None, 4)
    model = predict_model(inp, out)
    ws = seq.get_weights()
    assert ws[0].shape == (3, gates * 5) and ws[1].shape == (5, gates * 5)
    assert ws[2].shape == ((2, 15) if cls is layers.GRU else (gates * 5,))
    if cls is layers.LSTM:  # unit_forget_bias: the forget quarter (i, f, c, o) starts at one
        np.testing.assert_array_equal(ws[2], np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    # recurrent_kernel: orthogonal as one (units, G*units) matrix (orthonormal rows), as Keras's
    np.testing.assert_allclose(ws[1] @ ws[1].T, np.eye(5), atol=1e-5)
    assert seq.count_params() == sum(w.size for w in ws)
    assert model.predict(np.zeros((2, 7, 3), np.float32)).shape == (2, 4)
    seq.set_weights([w * 0.5 for w in ws])  # Keras layouts round-trip
    for a, b in zip(seq.get_weights(), ws):
        np.testing.assert_allclose(a, b * 0.5)


def simple_rnn_reference(x, kernel, rkernel, bias):
    h = np.zeros((x.shape[0], rkernel.shape[0]), np.float32)
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ rkernel + bias)
    return h


def test_simple_rnn_values_match_keras_formula():
    inp = keras.Input((4, 3))
    rnn = layers.SimpleRNN(6)
    model = predict_model(inp, rnn(inp))
    x = rng(3).normal(size=(5, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), simple_rnn_reference(x, *rnn.get_weights()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls,gates", RNNS)
def test_recurrent_training_lowers_the_loss(cls, gates):
    # Label: whether the sum of the sequence is positive.
    x = rng(4).normal(size=(256, 8, 2)).astype(np.float32)
    y = (x.sum(axis=(1, 2)) > 0).astype(np.int32)
    model = keras.Sequential([cls(12, input_shape=(8, 2)), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    losses = fit_losses(model, x, y, epochs=10)
    assert losses[-1] < 0.6 * losses[0], losses


def test_recurrent_errors():
    with pytest.raises(ValueError, match="go_backwards"):
        layers.LSTM(4, go_backwards=True)
    with pytest.raises(ValueError, match="reset_after"):
        layers.GRU(4, reset_after=False)
    with pytest.raises(ValueError, match="activation='relu'"):
        layers.SimpleRNN(4, activation="relu")
    with pytest.raises(ValueError, match=r"\(time, features\) samples"):
        layers.LSTM(4)(keras.Input((8,)))
    gru = layers.GRU(3)
    inp = keras.Input((2, 2))
    predict_model(inp, gru(inp))
    k, rk, b = gru.get_weights()
    with pytest.raises(ValueError, match=r"bias must be \(2, 9\)"):
        gru.set_weights([k, rk, b[0]])


# --- MultiHeadAttention -------------------------------------------------------------------------

def mha_reference(q_in, v_in, ws, heads, causal=False):
    """Keras's MultiHeadAttention in numpy, from its weights in Keras's layout."""
    wq, bq, wk, bk, wv, bv, wo, bo = ws
    q = np.einsum("bte,ehd->bthd", q_in, wq) + bq
    k = np.einsum("bte,ehd->bthd", v_in, wk) + bk
    v = np.einsum("bte,ehd->bthd", v_in, wv) + bv
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(wq.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], bool)), s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    o = np.einsum("bhqk,bkhd->bqhd", a, v)
    return np.einsum("bqhd,hdo->bqo", o, wo) + bo


@pytest.mark.parametrize("causal", [False, True])
def test_mha_self_attention_matches_keras_formula(causal):
    inp = keras.Input((5, 6))
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=3)
    out = mha(inp, inp, use_causal_mask=causal)
    assert out.shape == (None, 5, 6)
    model = predict_model(inp, out)
    ws = mha.get_weights()
    assert [w.shape for w in ws] == [(6, 2, 3), (2, 3)] * 3 + [(2, 3, 6), (6,)]
    assert mha.count_params() == sum(w.size for w in ws)
    r = rng(5)
    mha.set_weights([r.normal(0, 0.5, size=w.shape).astype(np.float32) for w in ws])
    x = r.normal(size=(3, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), mha_reference(x, x, mha.get_weights(), 2, causal), rtol=1e-4,
                               atol=1e-5)
    if causal:  # position 0 does not see later positions
        x2 = x.copy()
        x2[:, 1:] += 1
        np.testing.assert_allclose(model.predict(x2)[:, 0], model.predict(x)[:, 0], rtol=1e-5, atol=1e-6)


def test_mha_cross_attention_shapes_and_training():
    inp = keras.Input((6, 4))
    query = layers.Slice(1, 0, 2)(inp)  # (2, 4) queries over the whole (6, 4) sequence
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, output_shape=5)
    out = mha(query, inp)
    assert out.shape == (None, 2, 5)
    predict_model(inp, out)
    assert [w.shape for w in mha.get_weights()] == [
        (4, 2, 4), (2, 4), (4, 2, 4), (2, 4), (4, 2, 3), (2, 3), (2, 3, 5), (5,)]
    # Train: classify by which of the six positions holds the largest first feature.
    x = rng(6).normal(size=(256, 6, 4)).astype(np.float32)
    y = x[:, :, 0].argmax(1).astype(np.int32)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    logits = layers.Dense(6, activation="softmax")(layers.Flatten()(h))
    model = keras.Model(inp, logits)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    losses = fit_losses(model, x, y, epochs=10)
    assert losses[-1] < 0.7 * losses[0], losses


def test_mha_errors():
    inp = keras.Input((5, 4))
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=2)
    with pytest.raises(ValueError, match="give the value tensor"):
        mha(inp)
    with pytest.raises(ValueError, match="attention_mask"):
        mha(inp, inp, attention_mask=inp)
    with pytest.raises(ValueError, match="must have the same length"):
        mha(inp, keras.Input((5, 4)), keras.Input((3, 4)))
    mha(inp, inp)
    with pytest.raises(ValueError, match="use_causal_mask per layer"):
        mha(inp, inp, use_causal_mask=True)
    with pytest.raises(ValueError, match="num_heads and key_dim must be positive"):
        layers.MultiHeadAttention(num_heads=0, key_dim=2)


# --- Conv2DTranspose and UpSampling2D -----------------------------------------------------------

def conv_transpose_reference(x, kernel, bias, stride, out_hw, crop):
    """TensorFlow's conv2d_transpose on (N, H, W, C) with a Keras kernel (kh, kw, filters, in): the
    full scatter, cropped `crop` rows/columns at the start, out_hw long."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    full = np.zeros((n, (h - 1) * stride + k + stride, (w - 1) * stride + k + stride, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum("nc,abfc->nabf", x[:, i, j],
                                                                                       kernel)
    return full[:, crop:crop + out_hw[0], crop:crop + out_hw[1]] + bias


@pytest.mark.parametrize("kernel,stride,padding,output_padding,out,crop", [
    (3, 2, "valid", None, 9, 0),   # (4 - 1) * 2 + 3
    (3, 2, "same", None, 8, 0),    # 4 * 2; TensorFlow crops 0 before, 1 after
    (5, 2, "same", None, 8, 1),    # crops 1 before, 2 after
    (4, 2, "same", None, 8, 1),
    (2, 3, "valid", None, 12, 0),  # kernel < strides: 4 * 3
    (3, 2, "same", 1, 8, 0),       # (4 - 1) * 2 + 3 - 2 + 1
    (3, 1, "same", None, 4, 1),
])
def test_conv2d_transpose_matches_tensorflow_geometry(kernel, stride, padding, output_padding, out, crop):
    inp = keras.Input((4, 4, 2))
    layer = layers.Conv2DTranspose(3, kernel, strides=stride, padding=padding, output_padding=output_padding)
    y = layer(inp)
    assert y.shape == (None, out, out, 3)
    model = predict_model(inp, y)
    k, b = layer.get_weights()
    assert k.shape == (kernel, kernel, 3, 2) and b.shape == (3,)
    b = rng(7).normal(size=3).astype(np.float32)
    layer.set_weights([k, b])
    x = rng(8).normal(size=(2, 4, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), conv_transpose_reference(x, k, b, stride, (out, out), crop),
                               rtol=1e-4, atol=1e-5)


def test_conv2d_transpose_generator_trains():
    # A decoder from 16 features to 8x8 images with a fixed target per class.
    r = rng(9)
    targets = r.uniform(size=(4, 8, 8, 1)).astype(np.float32)
    labels = r.integers(0, 4, size=256)
    x = np.eye(4, dtype=np.float32)[labels]
    model = keras.Sequential([
        layers.Dense(2 * 4 * 4, input_shape=(4,)), layers.Reshape((2, 4, 4)),
        layers.Conv2DTranspose(4, 4, strides=2, padding="same", data_format="channels_first"),
        layers.LeakyReLU(), layers.Conv2D(1, 3, padding="same", data_format="channels_first"),
        layers.Reshape((8, 8, 1))])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    losses = fit_losses(model, x, targets[labels], epochs=10)
    assert losses[-1] < 0.3 * losses[0], losses


def test_conv2d_transpose_errors():
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        layers.Conv2DTranspose(2, 3, padding="full")
    with pytest.raises(ValueError, match="output_padding 2 must be smaller than strides 2"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="square pair"):
        layers.Conv2DTranspose(2, (3, 5))


def test_upsampling2d_nearest_and_bilinear():
    inp = keras.Input((3, 4, 2))
    near, bil = layers.UpSampling2D(), layers.UpSampling2D(size=3, interpolation="bilinear")
    model = predict_model(inp, layers.Concatenate()([near(inp), near(inp)]))
    x = rng(10).normal(size=(2, 3, 4, 2)).astype(np.float32)
    rep = x.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_allclose(model.predict(x), np.concatenate([rep, rep], axis=-1), rtol=1e-6)
    y = bil(inp)
    assert y.shape == (None, 9, 12, 2)
    p = predict_model(inp, y).predict(x)
    np.testing.assert_allclose(p[:, 1::3, 1::3], x, rtol=1e-5, atol=1e-6)  # half-pixel centres hit the samples
    with pytest.raises(ValueError, match="interpolation must be 'nearest' or 'bilinear'"):
        layers.UpSampling2D(interpolation="bicubic")


# --- Concatenate, Slice, PositionalEmbedding, RandomNormal ----------------------------------------

def test_concatenate_slice_values():
    inp = keras.Input((3, 4))
    a = layers.Slice(2, 0, 1)(inp)
    b = layers.Slice(-1, 1, 3)(inp)
    assert a.shape == (None, 3, 1) and b.shape == (None, 3, 3)
    out = layers.concatenate([b, a], axis=-1)
    out2 = layers.Concatenate(axis=1)([inp, inp])
    assert out2.shape == (None, 6, 4)
    x = rng(11).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(predict_model(inp, out).predict(x), np.concatenate([x[..., 1:], x[..., :1]], -1))
    np.testing.assert_array_equal(predict_model(inp, out2).predict(x), np.concatenate([x, x], 1))
    with pytest.raises(ValueError, match="does not match"):
        layers.Concatenate(axis=1)([inp, keras.Input((3, 5))])
    with pytest.raises(ValueError, match="batch axis"):
        layers.Concatenate(axis=0)([inp, inp])
    with pytest.raises(ValueError, match="outside input"):
        layers.Slice(1, 2, 2)(inp)
    parts = layers.split(inp, [1, 3])
    assert [p.shape for p in parts] == [(None, 3, 1), (None, 3, 3)]
    np.testing.assert_array_equal(predict_model(inp, parts[1]).predict(x), x[..., 1:])
    with pytest.raises(ValueError, match="add up to 4"):
        layers.split(inp, [1, 2])


def test_concatenate_channels_last_images():
    inp = keras.Input((4, 4, 2))
    c = layers.Conv2D(3, 1, use_bias=False)
    out = layers.Concatenate()([c(inp), layers.MaxPooling2D(1)(inp)])
    assert out.shape == (None, 4, 4, 5)
    model = predict_model(inp, out)
    x = rng(12).normal(size=(2, 4, 4, 2)).astype(np.float32)
    (k,) = c.get_weights()
    np.testing.assert_allclose(model.predict(x), np.concatenate([x @ k[0, 0], x], -1), rtol=1e-5, atol=1e-6)


def test_positional_embedding_adds_a_learned_table():
    inp = keras.Input((4, 3))
    pe = layers.PositionalEmbedding(6)
    model = predict_model(inp, pe(inp))
    (table,) = pe.get_weights()
    assert table.shape == (6, 3)
    x = rng(13).normal(size=(2, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), x + table[:4], rtol=1e-6)
    with pytest.raises(ValueError, match="sequence_length 6"):
        layers.PositionalEmbedding(6)(keras.Input((7, 3)))


def test_random_normal_noise_source():
    inp = keras.Input((1,))
    zero = layers.Reshape((50, 20))(layers.Dense(1000, kernel_initializer="zeros")(inp))  # a trainable zero
    model = predict_model(inp, layers.add([layers.RandomNormal((50, 20), mean=2.0, stddev=0.5)(inp), zero]))
    z = model.predict(np.zeros((40, 1), np.float32))
    assert z.shape == (40, 50, 20)
    assert abs(z.mean() - 2.0) < 0.02 and abs(z.std() - 0.5) < 0.02
    assert not np.array_equal(z, model.predict(np.zeros((40, 1), np.float32)))  # fresh at every call


def test_models_with_the_other_new_layers_train():
    # Tokens: Embedding, PositionalEmbedding, split + Concatenate, ELU, Softmax.
    x, y = token_task(seed=3)
    inp = keras.Input((6,), dtype="int32")
    h = layers.PositionalEmbedding(6)(layers.Embedding(12, 4)(inp))
    a, b = layers.split(h, [2, 2])
    h = layers.Flatten()(layers.Concatenate()([b, a]))
    h = layers.ELU()(layers.Dense(16)(h))
    out = layers.Softmax()(layers.Dense(3)(h))
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    losses = fit_losses(model, x, y)
    assert losses[-1] < 0.5 * losses[0], losses
    # Images: UpSampling2D, LeakyReLU, ReLU on channels-last input; label = the brighter half.
    imgs = rng(4).uniform(size=(256, 4, 4, 1)).astype(np.float32)
    labels = (imgs[:, :2].sum(axis=(1, 2, 3)) > imgs[:, 2:].sum(axis=(1, 2, 3))).astype(np.int32)
    model = keras.Sequential([
        layers.UpSampling2D(input_shape=(4, 4, 1), interpolation="bilinear"), layers.Conv2D(4, 3, padding="same"),
        layers.LeakyReLU(0.1), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(8), layers.ReLU(),
        layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    losses = fit_losses(model, imgs, labels, epochs=10)
    assert losses[-1] < 0.6 * losses[0], losses


# --- activation layers --------------------------------------------------------------------------

@pytest.mark.parametrize("layer,ref", [
    (layers.LeakyReLU(), lambda x: np.where(x > 0, x, 0.3 * x)),  # tf.keras's default alpha
    (layers.LeakyReLU(alpha=0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    (layers.ReLU(negative_slope=0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (layers.ReLU(), lambda x: np.maximum(x, 0)),
    (layers.ELU(), lambda x: np.where(x > 0, x, np.expm1(x))),
    (layers.Activation("elu"), lambda x: np.where(x > 0, x, np.expm1(x))),  # Keras's elu: alpha 1
    (layers.Activation("leaky_relu"), lambda x: np.where(x > 0, x, 0.2 * x)),  # Keras's leaky_relu: 0.2
    (layers.Softmax(), lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
])
def test_activation_layers(layer, ref):
    inp = keras.Input((7,))
    x = np.linspace(-3, 3, 21, dtype=np.float32).reshape(3, 7)
    np.testing.assert_allclose(predict_model(inp, layer(inp)).predict(x), ref(x), rtol=1e-5, atol=1e-6)


def test_dense_elu_uses_keras_alpha():
    inp = keras.Input((4,))
    d = layers.Dense(3, activation="elu")
    model = predict_model(inp, d(inp))
    k, b = d.get_weights()
    x = rng(14).normal(size=(5, 4)).astype(np.float32) * 3
    z = x @ k + b
    np.testing.assert_allclose(model.predict(x), np.where(z > 0, z, np.expm1(z)), rtol=1e-5, atol=1e-6)


def test_activation_layer_errors():
    with pytest.raises(ValueError, match="max_value"):
        layers.ReLU(max_value=6)
    with pytest.raises(ValueError, match="last axis only"):
        layers.Softmax(axis=1)


# --- save / load with the new layers ------------------------------------------------------------

def test_save_and_load_a_sequence_model(tmp_path):
    vocab, t = 10, 6
    inp = keras.Input((t,), dtype="int32")
    h = layers.Embedding(vocab, 8)(inp)
    h = layers.PositionalEmbedding(t)(h)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4)(h, h, use_causal_mask=True)
    out = layers.Dense(vocab, activation="softmax")(layers.LSTM(8, return_sequences=True)(h))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng(15).integers(0, vocab, size=(32, t)).astype(np.int32)
    model.fit(x, x, epochs=1, verbose=0)
    path = tmp_path / "seq.safetensors"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5, atol=1e-6)
    mha = [l for l in loaded.layers if isinstance(l, layers.MultiHeadAttention)][0]
    assert mha._causal is True
