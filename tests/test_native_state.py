"""backends/native_state.py: a generation's buffers, the padded text keys/values, the pool.

(The backend reusing pooled caches and graphs across generations: ``test_native.py``.)"""

from __future__ import annotations

import torch

import musicgen_edu as mg
from musicgen_edu.backends.native_backend import NativeBackend
from musicgen_edu.backends.native_state import NativeState, StatePool, new_caches, text_keys_values


def _backend():
    return NativeBackend(mg.load_model("debug", device="cpu"), pack=False)


def test_caches_have_one_slot_per_position_and_fixed_shape_ones_start_at_zero():
    dec = _backend().decoder
    k, v = new_caches(dec, rows=2, max_len=50, dtype=torch.float32, zeros=True)
    head_dim = dec.positions.shape[1] // dec.heads
    assert len(k) == len(v) == len(dec.layers)
    assert k[0].shape == (2, dec.heads, 50, head_dim) and not k[0].is_set_to(v[0])
    assert all(torch.count_nonzero(t) == 0 for t in k + v)     # 0 x NaN would be NaN


def test_text_padded_to_a_bucket_is_masked_and_keeps_the_real_keys():
    backend = _backend()
    cond = backend.encode_text(["a prompt of a few words", None])
    real = cond.states.shape[1]
    k, v, mask = text_keys_values(backend.decoder, cond, torch.float32)
    pk, pv, pmask = text_keys_values(backend.decoder, cond, torch.float32, bucket=32)
    assert pk[0].shape[2] == 32 > real and mask.shape[-1] == real
    torch.testing.assert_close(pk[0][:, :, :real], k[0], atol=0, rtol=0)
    assert torch.equal(pmask[..., :real], mask)
    assert (pmask[..., real:] == torch.finfo(torch.float32).min).all()   # padding: never attended


def test_pool_hands_back_a_state_with_the_new_text_copied_in_and_evicts_the_oldest():
    backend = _backend()
    pool = StatePool(size=2)
    states = []
    for rows in (1, 2, 3):
        cond = backend.encode_text(["jazz"] * rows)
        text = text_keys_values(backend.decoder, cond, torch.float32, bucket=32)
        caches = new_caches(backend.decoder, rows, 10, torch.float32, zeros=True)
        states.append(NativeState(cond, *caches, *text, pool_key=(rows, 10, 32)))
        pool.put(states[-1])
    assert len(pool) == 2 and pool.take((1, 10, 32), cond, [], [], None) is None   # evicted
    other = backend.encode_text(["rock", "a longer prompt"])
    k, v, mask = text_keys_values(backend.decoder, other, torch.float32, bucket=32)
    taken = pool.take((2, 10, 32), other, k, v, mask)
    assert taken.k_cache[0] is states[1].k_cache[0] and taken.cross_k[0] is states[1].cross_k[0]
    assert torch.equal(taken.cross_k[0], k[0]) and torch.equal(taken.cross_mask, mask)
    assert taken.cond is other and taken.pos == 0 and taken.pool_key == (2, 10, 32)
    assert len(pool) == 1
    pool.put(taken)
    assert taken.pool_key is None and len(pool) == 2     # put once: a second put is a no-op
    pool.put(taken)
    assert len(pool) == 2 and pool.idle[(2, 10, 32)] is taken
