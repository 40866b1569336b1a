"""cudl.keras models with several inputs (fit/evaluate/predict take a list or a dict of arrays), the
MultiHeadAttention key-padding attention_mask fed as a model input, and recurrent layers with
return_state=True (Keras's [output, h(, c)] list, gradients through the states)."""
import numpy as np
import pytest

from cudl import keras
from cudl.keras import layers


def rng(seed=0):
    return np.random.default_rng(seed)


def blobs(n=120, seed=0):
    r = rng(seed)
    y = np.arange(n) % 3
    x = r.normal(0, 0.5, size=(n, 7)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    return x, y.astype(np.int32)


def two_input_model():
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = layers.Dense(8, activation="relu")(layers.Concatenate()([a, b]))
    model = keras.Model(inputs=[a, b], outputs=layers.Dense(3)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"], seed=4)
    return model


def one_input_model():
    x = keras.Input((7,))
    model = keras.Model(x, layers.Dense(3)(layers.Dense(8, activation="relu")(x)))
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"], seed=4)
    return model


def test_two_inputs_train_as_their_concatenation():
    x, y = blobs()
    two, one = two_input_model(), one_input_model()
    one.set_weights(two.get_weights())
    assert two.input_shape == [(None, 4), (None, 3)]
    h2 = two.fit([x[:, :4], x[:, 4:]], y, epochs=3, batch_size=16, verbose=0, seed=2)
    h1 = one.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=2)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-5)
    assert h2.history["loss"][-1] < h2.history["loss"][0]
    for w2, w1 in zip(two.get_weights(), one.get_weights()):
        np.testing.assert_allclose(w2, w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.predict({"a": x[:, :4], "b": x[:, 4:]}, verbose=0), one.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two.evaluate((x[:, :4], x[:, 4:]), y, verbose=0), one.evaluate(x, y, verbose=0),
                               rtol=1e-5)
    np.testing.assert_allclose(two.train_on_batch([x[:5, :4], x[:5, 4:]], y[:5]), one.train_on_batch(x[:5], y[:5]),
                               rtol=1e-5)
    np.testing.assert_allclose(two.predict_on_batch([x[:5, :4], x[:5, 4:]]), one.predict_on_batch(x[:5]),
                               rtol=1e-5, atol=1e-6)
    h = two.fit([x[:, :4], x[:, 4:]], y, epochs=1, verbose=0, validation_data=([x[:20, :4], x[:20, 4:]], y[:20]))
    assert len(h.history["val_loss"]) == 1


def test_multi_input_errors_name_the_input():
    x, y = blobs(20)
    model = two_input_model()
    with pytest.raises(ValueError, match=r"takes 2 inputs \(a, b\): give a list of 2 arrays"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"input b has shape \(20, 4\), the model's input is \(None, 3\)"):
        model.predict([x[:, :4], x[:, :4]])
    with pytest.raises(ValueError, match="input b has 19 rows but input a has 20"):
        model.evaluate([x[:, :4], x[:19, 4:]], y, verbose=0)
    with pytest.raises(ValueError, match=r"inputs are \['a', 'b'\]; got keys \['a', 'c'\]"):
        model.predict({"a": x[:, :4], "c": x[:, 4:]})
    a = keras.Input((3,))
    with pytest.raises(ValueError, match="is given twice"):
        keras.Model([a, a], layers.Dense(2)(a))


VOCAB, T = 9, 6


def padded_tokens(n, seed):
    """Tokens (n, T) with padding (0) after a random length 2..T, the key mask (1 real, 0 padding),
    per-position labels token % 3, and the lengths."""
    r = rng(seed)
    lengths = r.integers(2, T + 1, size=n)
    x = r.integers(1, VOCAB, size=(n, T))
    mask = np.arange(T)[None, :] < lengths[:, None]
    return np.where(mask, x, 0).astype(np.int32), mask, (np.where(mask, x, 0) % 3).astype(np.int32), lengths


@pytest.mark.parametrize("mask_rank", [1, 2])
def test_attention_mask_input_ignores_padded_keys(mask_rank):
    tokens_in = keras.Input((T,), dtype="int32", name="tokens")
    # Keras's masks are bool; an int32 mask input is read as 0/1 floats too.
    mask_in = keras.Input((T,) if mask_rank == 1 else (1, T), dtype="bool" if mask_rank == 1 else "int32",
                          name="mask")
    e = layers.Embedding(VOCAB, 8)(tokens_in)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4)(e, e, attention_mask=mask_in)
    model = keras.Model([tokens_in, mask_in], layers.Dense(3)(h))
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=1)
    x, mask, y, lengths = padded_tokens(64, 3)
    m = mask if mask_rank == 1 else mask[:, None, :].astype(np.int32)
    losses = model.fit([x, m], y, epochs=4, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    p = model.predict([x, m], verbose=0)
    x2 = np.where(mask, x, rng(9).integers(1, VOCAB, size=x.shape)).astype(np.int32)  # other padding tokens
    p2 = model.predict([x2, m], verbose=0)
    real = mask  # (n, T): outputs at real positions must not change
    np.testing.assert_array_equal(p2[real], p[real])
    unmasked = np.ones_like(m)  # without the mask the padded tokens do change the real positions
    assert np.abs(model.predict([x2, unmasked], verbose=0)[real] - model.predict([x, unmasked], verbose=0)[real]).max() \
        > 1e-4
    # Keras's formula on the real positions: softmax over the unmasked keys only.
    wq, bq, wk, bk, wv, bv, wo, bo = [l for l in model.layers if isinstance(l, layers.MultiHeadAttention)][0] \
        .get_weights()
    emb = [l for l in model.layers if isinstance(l, layers.Embedding)][0].get_weights()[0]
    ein = emb[x]
    q = np.einsum("bte,ehd->bthd", ein, wq) + bq
    k = np.einsum("bte,ehd->bthd", ein, wk) + bk
    v = np.einsum("bte,ehd->bthd", ein, wv) + bv
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(4)
    s = np.where(mask[:, None, None, :], s, -np.inf)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    att = np.einsum("bqhd,hdo->bqo", np.einsum("bhqk,bkhd->bqhd", a, v), wo) + bo
    dense = [l for l in model.layers if isinstance(l, layers.Dense)][0].get_weights()
    ref = att @ dense[0] + dense[1]
    np.testing.assert_allclose(p[real], ref[real], rtol=1e-4, atol=1e-5)


def test_attention_mask_errors_and_save(tmp_path):
    q = keras.Input((5, 4))
    mha = layers.MultiHeadAttention(num_heads=2, key_dim=2)
    with pytest.raises(ValueError, match=r"key-padding attention_mask \(batch, 1, 5\) or \(batch, 5\)"):
        mha(q, q, attention_mask=keras.Input((5, 5)))
    with pytest.raises(TypeError, match="symbolic tensor"):
        mha(q, q, attention_mask=np.ones((1, 5)))
    mask = keras.Input((5,), dtype="bool")
    out = mha(q, q, attention_mask=mask)
    with pytest.raises(ValueError, match="attention_mask input per layer"):
        mha(q, q)
    model = keras.Model([q, mask], out)
    model.compile(optimizer="adam", loss="mse")
    x = rng(2).normal(size=(8, 5, 4)).astype(np.float32)
    m = rng(3).random((8, 5)) < 0.7
    m[:, 0] = True
    path = tmp_path / "masked.safetensors"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict([x, m], verbose=0), model.predict([x, m], verbose=0), rtol=1e-6)


@pytest.mark.parametrize("cls,n_states", [(layers.LSTM, 2), (layers.GRU, 1), (layers.SimpleRNN, 1)])
def test_return_state_gives_keras_list(cls, n_states):
    inp = keras.Input((5, 3))
    outs = cls(4, return_sequences=True, return_state=True)(inp)
    assert isinstance(outs, list) and len(outs) == 1 + n_states
    assert outs[0].shape == (None, 5, 4) and all(s.shape == (None, 4) for s in outs[1:])
    seq_model = keras.Model(inp, outs[0])
    seq_model.compile(optimizer="adam", loss="mse")
    h_model = keras.Model(inp, outs[1])
    h_model.compile(optimizer="adam", loss="mse")
    x = rng(4).normal(size=(6, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(h_model.predict(x, verbose=0), seq_model.predict(x, verbose=0)[:, -1])


def lstm_formula(x, kernel, rkernel, bias):
    """Keras's LSTM (gates i, f, c, o) in numpy: (h_T, c_T)."""
    n, t, _ = x.shape
    u = rkernel.shape[0]
    h, c = np.zeros((n, u)), np.zeros((n, u))
    sig = lambda z: 1 / (1 + np.exp(-z))
    for s in range(t):
        z = x[:, s] @ kernel + h @ rkernel + bias
        i, f, g, o = sig(z[:, :u]), sig(z[:, u:2 * u]), np.tanh(z[:, 2 * u:3 * u]), sig(z[:, 3 * u:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h, c


def test_lstm_states_encoder_trains_and_saves(tmp_path):
    inp = keras.Input((5, 3))
    lstm = layers.LSTM(6, return_state=True)
    out, h, c = lstm(inp)
    head = layers.Dense(2)(layers.Concatenate()([h, c]))  # an encoder's states as the features
    model = keras.Model(inp, head)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse", seed=3)
    r = rng(8)
    x = r.normal(size=(64, 5, 3)).astype(np.float32)
    y = np.stack([x[:, :, 0].sum(1), x[:, -1, 1]], 1).astype(np.float32)
    c_model = keras.Model(inp, c)
    c_model.compile(optimizer="adam", loss="mse")
    kernel, rkernel, bias = lstm.get_weights()
    before = [w.copy() for w in lstm.get_weights()]
    hr, cr = lstm_formula(x, kernel, rkernel, bias)
    np.testing.assert_allclose(c_model.predict(x, verbose=0), cr, rtol=1e-4, atol=1e-5)
    losses = model.fit(x, y, epochs=6, batch_size=16, verbose=0).history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(np.abs(a - b).max() > 0 for a, b in zip(lstm.get_weights(), before))  # gradients reached it
    path = tmp_path / "states.safetensors"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_return_state_errors():
    inp = keras.Input((5, 3))
    with pytest.raises(ValueError, match="initial_state"):
        layers.LSTM(4)(inp, initial_state=[inp])


def mask_zero_models(seed=1):
    """The same attention tagger twice: Embedding(mask_zero=True) (implicit mask, masked loss), and
    tokens + an explicit attention_mask input with the padded labels set to ignore_class."""
    tokens = keras.Input((T,), dtype="int32", name="tokens")
    e = layers.Embedding(VOCAB, 8, mask_zero=True)(tokens)
    h = layers.MultiHeadAttention(num_heads=2, key_dim=4)(e, e)
    implicit = keras.Model(tokens, layers.Dense(3)(layers.LayerNormalization()(h)))
    implicit.compile(optimizer=keras.optimizers.Adam(0.02),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                     seed=seed)
    tokens2, mask = keras.Input((T,), dtype="int32"), keras.Input((T,), dtype="bool")
    e2 = layers.Embedding(VOCAB, 8)(tokens2)
    h2 = layers.MultiHeadAttention(num_heads=2, key_dim=4)(e2, e2, attention_mask=mask)
    explicit = keras.Model([tokens2, mask], layers.Dense(3)(layers.LayerNormalization()(h2)))
    explicit.compile(optimizer=keras.optimizers.Adam(0.02),
                     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
                     metrics=["accuracy"], seed=seed)
    explicit.set_weights(implicit.get_weights())
    return implicit, explicit


def test_mask_zero_masks_keys_and_loss_as_keras():
    implicit, explicit = mask_zero_models()
    assert any(isinstance(l, layers.PaddingMask) for l in implicit.layers)
    x, mask, y, _ = padded_tokens(64, 5)
    np.testing.assert_array_equal(implicit.predict(x, verbose=0), explicit.predict([x, mask], verbose=0))
    hi = implicit.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=3).history
    he = explicit.fit([x, mask], np.where(mask, y, -1), epochs=3, batch_size=16, verbose=0, seed=3).history
    np.testing.assert_allclose(hi["loss"], he["loss"], rtol=1e-6)
    np.testing.assert_allclose(hi["accuracy"], he["accuracy"], rtol=1e-6)
    assert hi["loss"][-1] < hi["loss"][0]
    # The labels of padded positions do not matter (Keras weights the loss by the mask).
    y2 = np.where(mask, y, (y + 1) % 3)
    np.testing.assert_allclose(implicit.evaluate(x, y2, verbose=0), implicit.evaluate(x, y, verbose=0), rtol=1e-6)


def test_mask_zero_errors_and_save(tmp_path):
    tokens = keras.Input((T,), dtype="int32")
    e = layers.Embedding(VOCAB, 4, mask_zero=True)(tokens)
    with pytest.raises(ValueError, match="LSTM .*padding mask of an Embedding\\(mask_zero=True\\) reaches"):
        layers.LSTM(3)(e)
    with pytest.raises(ValueError, match="Flatten .*reaches this layer"):
        layers.Flatten()(e)
    with pytest.raises(ValueError, match="attention_mask is given too"):
        layers.MultiHeadAttention(num_heads=1, key_dim=2)(e, e, attention_mask=keras.Input((T,)))
    out = layers.Dense(2)(layers.MultiHeadAttention(num_heads=1, key_dim=2)(e, e))
    m = keras.Model(tokens, out)
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy only, not for loss mean_squared_error"):
        m.compile(optimizer="adam", loss="mse")
    implicit, _ = mask_zero_models()
    x, _, y, _ = padded_tokens(16, 6)
    implicit.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "mask_zero.safetensors"
    implicit.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), implicit.predict(x, verbose=0))
    np.testing.assert_allclose(loaded.evaluate(x, y, verbose=0), implicit.evaluate(x, y, verbose=0), rtol=1e-6)
