"""McGIP / GzPT building blocks: losses against hand computations, heads, the index-aware
memory bank, gaze positive masks (threshold, duplicates, GzPT drop, sparse == dense) and
the MONAI backbones."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from gazerad.gaze.relation import Relation
from gazerad.ssl import (
    GazePositives,
    MaskedCosineLoss,
    MemoryBankWithIndices,
    MoCoInfoNCELoss,
    MultiPositiveNTXentLoss,
    PredictionHead,
    ProjectionHead,
    build_backbone,
    concat_all_gather,
    copy_frozen,
    cosine_schedule,
    momentum_update,
)

# ----------------------------------------------------------------------------- helpers (plain Python)


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _ntxent_loop(z1, z2, extra, tau):
    """NT-Xent with extra positives, one anchor at a time, plain floats."""
    b = len(z1)
    z = [_unit(v) for v in list(z1) + list(z2)]
    total = 0.0
    for a in range(2 * b):
        i = a % b
        denom = sum(math.exp(_dot(z[a], z[c]) / tau) for c in range(2 * b) if c != a)
        pos = [(a + b) % (2 * b)]  # the other view
        for j in range(b):
            if j != i and extra[i][j]:
                pos += [j, j + b]
        total += -sum(math.log(math.exp(_dot(z[a], z[p]) / tau) / denom) for p in pos) / len(pos)
    return total / (2 * b)


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# ----------------------------------------------------------------------------- NT-Xent


Z1 = [[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]
Z2 = [[0.6, 0.8], [1.0, -1.0], [-0.5, 2.0]]


def test_ntxent_hand_value_standard_and_multi_positive():
    tau = 0.5
    loss = MultiPositiveNTXentLoss(temperature=tau)
    none = [[False] * 3 for _ in range(3)]
    assert loss(_t(Z1), _t(Z2)).item() == pytest.approx(_ntxent_loop(Z1, Z2, none, tau), rel=1e-10)
    extra = [[False, True, False], [False, False, False], [True, False, True]]  # asymmetric, diagonal ignored
    got = loss(_t(Z1), _t(Z2), torch.tensor(extra)).item()
    assert got == pytest.approx(_ntxent_loop(Z1, Z2, extra, tau), rel=1e-10)
    assert got != pytest.approx(_ntxent_loop(Z1, Z2, none, tau), rel=1e-3)


def test_ntxent_b2_explicit_number():
    # z1 = e1, e2; z2 = e1, e2 (identical views): sims 1 to the partner, 0 elsewhere (tau 1).
    # each anchor: -log(e / (e + 1 + 1)) = log(e + 2) - 1
    e = torch.eye(2, dtype=torch.float64)
    assert MultiPositiveNTXentLoss(1.0)(e, e).item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-12)


def test_ntxent_empty_mask_equals_standard_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    loss = MultiPositiveNTXentLoss(0.1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T / 0.1).masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
    ref = F.cross_entropy(sim, labels)
    assert torch.allclose(loss(z1, z2), ref, atol=1e-6)
    assert torch.allclose(loss(z1, z2, torch.zeros(6, 6, dtype=torch.bool)), ref, atol=1e-6)
    assert torch.allclose(loss(z1, z2, torch.eye(6, dtype=torch.bool)), ref, atol=1e-6)  # diagonal ignored


def test_ntxent_gradients_and_shape_checks():
    z1 = torch.randn(4, 3, requires_grad=True)
    z2 = torch.randn(4, 3, requires_grad=True)
    mask = torch.ones(4, 4, dtype=torch.bool)
    MultiPositiveNTXentLoss()(z1, z2, mask).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="pos_mask"):
        MultiPositiveNTXentLoss()(z1, z2, torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="temperature"):
        MultiPositiveNTXentLoss(0.0)


# ----------------------------------------------------------------------------- MoCo InfoNCE


def _moco_loop(q, k, queue, qmask, tau, valid=None):
    total, count = 0.0, 0
    for i in range(len(q)):
        qi = _unit(q[i])
        logits = [_dot(qi, _unit(k[i])) / tau]
        cols = [c for c in range(len(queue)) if valid is None or valid[c]]
        logits += [_dot(qi, queue[c]) / tau for c in cols]
        lse = math.log(sum(math.exp(x) for x in logits))
        pos = [0] + [1 + n for n, c in enumerate(cols) if qmask[i][c]]
        total += sum(lse - logits[p] for p in pos)
        count += len(pos)
    return total / count


QUEUE = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]]


def test_moco_hand_value_single_anchor():
    # q = e1, k = (0.6, 0.8), tau 0.5: logits [1.2, 2, 0, -2, 1.2]; positives: k and queue[0]
    lg = [1.2, 2.0, 0.0, -2.0, 1.2]
    lse = math.log(sum(math.exp(x) for x in lg))
    expect = ((lse - 1.2) + (lse - 2.0)) / 2
    got = MoCoInfoNCELoss(0.5)(_t([[1.0, 0.0]]), _t([[0.6, 0.8]]), _t(QUEUE), torch.tensor([[True, False, False, False]]))
    assert got.item() == pytest.approx(expect, rel=1e-12)


def test_moco_normalises_by_total_positive_count():
    q = [[1.0, 0.5], [-0.3, 2.0]]
    k = [[0.8, 0.1], [0.0, 1.0]]
    qmask = [[True, True, False, True], [False, False, False, False]]  # 4 + 1 positives
    got = MoCoInfoNCELoss(0.2)(_t(q), _t(k), _t(QUEUE), torch.tensor(qmask)).item()
    assert got == pytest.approx(_moco_loop(q, k, QUEUE, qmask, 0.2), rel=1e-10)
    # not the per-anchor mean
    per_anchor = 0.5 * (_moco_loop(q[:1], k[:1], QUEUE, qmask[:1], 0.2) + _moco_loop(q[1:], k[1:], QUEUE, qmask[1:], 0.2))
    assert got != pytest.approx(per_anchor, rel=1e-3)


def test_moco_empty_mask_is_plain_infonce_and_valid_excludes_slots():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    queue = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    loss = MoCoInfoNCELoss(0.2)
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue.T], 1) / 0.2
    ref = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(loss(q, k, queue), ref, atol=1e-6)
    assert torch.allclose(loss(q, k, queue, torch.zeros(5, 7, dtype=torch.bool)), ref, atol=1e-6)
    # invalid slots leave the denominator and are never positive, even if the mask says so
    valid = torch.tensor([True, False, True, True, False, True, True])
    ref_v = F.cross_entropy(logits[:, [0, 1, 3, 4, 6, 7]], torch.zeros(5, dtype=torch.long))
    got = loss(q, k, queue, torch.zeros(5, 7, dtype=torch.bool), queue_valid=valid)
    assert torch.allclose(got, ref_v, atol=1e-6)
    all_pos = torch.ones(5, 7, dtype=torch.bool)
    qm = all_pos.tolist()
    expect = _moco_loop(q.double().tolist(), k.double().tolist(), queue.double().tolist(), qm, 0.2, valid.tolist())
    assert loss(q, k, queue, all_pos, queue_valid=valid).item() == pytest.approx(expect, rel=1e-5)


def test_moco_gradients_flow_to_q_only():
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    queue = F.normalize(torch.randn(6, 4), dim=1).requires_grad_(True)
    MoCoInfoNCELoss()(q, k, queue, torch.rand(3, 6) > 0.5).backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None and queue.grad is None
    with pytest.raises(ValueError, match="queue_mask"):
        MoCoInfoNCELoss()(q, k, queue, torch.ones(3, 5, dtype=torch.bool))
    # a fresh bank (every slot empty): finite loss and gradients, no NaN from the -inf logits
    q.grad = None
    out = MoCoInfoNCELoss()(q, k, queue, torch.ones(3, 6, dtype=torch.bool), queue_valid=torch.zeros(6, dtype=torch.bool))
    out.backward()
    assert out.item() == pytest.approx(0.0, abs=1e-7) and torch.isfinite(q.grad).all()


# ----------------------------------------------------------------------------- masked cosine


def test_masked_cosine_hand_values():
    p = _t([[1.0, 0.0], [0.0, 3.0]])
    z = _t([[2.0, 0.0], [1.0, 1.0]])
    loss = MaskedCosineLoss()
    r = 1 / math.sqrt(2)
    # identity only: cos(p0, z0) = 1, cos(p1, z1) = r
    assert loss(p, z).item() == pytest.approx(-(1 + r) / 2, rel=1e-12)
    assert loss(p, z, torch.zeros(2, 2, dtype=torch.bool)).item() == pytest.approx(-(1 + r) / 2, rel=1e-12)
    # plus (0, 1): cos(p0, z1) = r
    m = torch.tensor([[False, True], [False, False]])
    assert loss(p, z, m).item() == pytest.approx(-(1 + r + r) / 3, rel=1e-12)
    # plus (1, 0): cos(p1, z0) = 0, still counted in the normaliser
    m = torch.tensor([[False, True], [True, False]])
    assert loss(p, z, m).item() == pytest.approx(-(1 + r + r + 0) / 4, rel=1e-12)


def test_masked_cosine_identity_is_negative_mean_cos_and_stop_gradient():
    p = torch.randn(5, 7, requires_grad=True)
    z = torch.randn(5, 7, requires_grad=True)
    out = MaskedCosineLoss()(p, z)
    assert torch.allclose(out, -F.cosine_similarity(p, z, dim=1).mean(), atol=1e-6)
    out.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert z.grad is None


# ----------------------------------------------------------------------------- heads


def test_projection_and_prediction_heads():
    h = ProjectionHead(16, 32, 8, num_layers=3, batch_norm=True, last_bn=True)
    kinds = [type(m) for m in h.layers]
    assert kinds.count(nn.Linear) == 3 and kinds.count(nn.BatchNorm1d) == 3 and kinds.count(nn.ReLU) == 2
    assert h(torch.randn(4, 16)).shape == (4, 8)
    plain = ProjectionHead(16, 32, 8, num_layers=2, batch_norm=False)
    assert [type(m) for m in plain.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert plain.layers[0].bias is not None
    assert [type(m) for m in ProjectionHead(16, 32, 8, num_layers=1).layers] == [nn.Linear]
    with pytest.raises(ValueError):
        ProjectionHead(16, 32, 8, num_layers=0)
    pred = PredictionHead(8, 32, 8)
    assert [type(m) for m in pred.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert pred(torch.randn(4, 8)).shape == (4, 8)


def test_momentum_update_ema_and_buffers():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = copy_frozen(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(1.0)
    online(torch.randn(8, 3))  # changes online's running stats
    before_t = [p.clone() for p in target.parameters()]
    before_o = [p.clone() for p in online.parameters()]
    momentum_update(online, target, 0.9)
    for pt, b_t, b_o in zip(target.parameters(), before_t, before_o):
        assert torch.allclose(pt, 0.9 * b_t + 0.1 * b_o, atol=1e-6)
    for po, b_o in zip(online.parameters(), before_o):
        assert torch.equal(po, b_o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
    assert int(target[1].num_batches_tracked) == 1
    snap = [p.clone() for p in target.parameters()]
    momentum_update(online, target, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(snap, target.parameters()))
    with pytest.raises(ValueError):
        momentum_update(online, nn.Sequential(nn.Linear(3, 4)), 0.9)
    with pytest.raises(ValueError):
        momentum_update(online, target, 1.5)


def test_cosine_schedule_and_copy_frozen():
    assert cosine_schedule(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_schedule(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_schedule(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(150, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(25, 100, 0.99, 1.0) == pytest.approx(1.0 - 0.01 * (1 + math.cos(math.pi / 4)) / 2)
    vals = [cosine_schedule(s, 10, 0.99, 1.0) for s in range(11)]
    assert all(a < b for a, b in zip(vals, vals[1:]))
    m = nn.Linear(2, 2)
    c = copy_frozen(m)
    assert all(not p.requires_grad for p in c.parameters()) and all(p.requires_grad for p in m.parameters())
    with torch.no_grad():
        c.weight.add_(1.0)
    assert not torch.equal(c.weight, m.weight)


# ----------------------------------------------------------------------------- memory bank


def _keys(ids):
    return torch.tensor([[float(i), -float(i)] for i in ids]).reshape(-1, 2)


def test_memory_bank_wraparound_exact_order():
    bank = MemoryBankWithIndices(5, 2)
    assert bank.indices.tolist() == [-1] * 5 and not bank.valid.any() and torch.equal(bank.keys, torch.zeros(5, 2))
    bank.enqueue(_keys([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert bank.indices.tolist() == [0, 1, 2, -1, -1]
    assert bank.valid.tolist() == [True, True, True, False, False]
    assert torch.equal(bank.keys, torch.cat([_keys([0, 1, 2]), torch.zeros(2, 2)]))
    assert int(bank.ptr) == 3
    bank.enqueue(_keys([3, 4, 5]), torch.tensor([3, 4, 5]))
    assert bank.indices.tolist() == [5, 1, 2, 3, 4] and int(bank.ptr) == 1 and bank.valid.all()
    assert torch.equal(bank.keys, _keys([5, 1, 2, 3, 4]))
    bank.enqueue(_keys([6, 7, 8]), torch.tensor([6, 7, 8]))
    assert bank.indices.tolist() == [5, 6, 7, 8, 4] and int(bank.ptr) == 4
    assert torch.equal(bank.keys, _keys([5, 6, 7, 8, 4]))
    # a batch larger than the bank: as if written one by one, the last 5 survive
    bank.enqueue(_keys(range(10, 17)), torch.arange(10, 17))
    assert bank.indices.tolist() == [16, 12, 13, 14, 15] and int(bank.ptr) == 1
    assert torch.equal(bank.keys, _keys([16, 12, 13, 14, 15]))


def test_memory_bank_matches_sequential_simulation_and_state_dict():
    rng = np.random.default_rng(3)
    bank = MemoryBankWithIndices(7, 2)
    slots, ptr, nxt = [-1] * 7, 0, 0
    for _ in range(12):
        n = int(rng.integers(0, 11))
        ids = list(range(nxt, nxt + n))
        nxt += n
        bank.enqueue(_keys(ids), torch.tensor(ids, dtype=torch.long))
        for i in ids:
            slots[ptr] = i
            ptr = (ptr + 1) % 7
        assert bank.indices.tolist() == slots and int(bank.ptr) == ptr
        assert bank.keys[:, 0].tolist() == [float(max(s, 0)) for s in slots]
    other = MemoryBankWithIndices(7, 2)
    other.load_state_dict(bank.state_dict())
    assert set(bank.state_dict()) == {"keys", "indices", "ptr"}
    for name in ("keys", "indices", "ptr"):
        assert torch.equal(getattr(other, name), getattr(bank, name))
    bank.enqueue(_keys([100]), torch.tensor([100]))
    other.enqueue(_keys([100]), torch.tensor([100]))
    assert torch.equal(other.indices, bank.indices)


def test_memory_bank_validation_and_detach():
    bank = MemoryBankWithIndices(4, 3)
    with pytest.raises(ValueError, match="keys"):
        bank.enqueue(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="indices"):
        bank.enqueue(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=">= 0"):
        bank.enqueue(torch.zeros(2, 3), torch.tensor([0, -1]))
    k = torch.randn(2, 3, requires_grad=True)
    bank.enqueue(k * 2, torch.tensor([0, 1]))
    assert not bank.keys.requires_grad
    x = torch.randn(3, 2, requires_grad=True)
    g = concat_all_gather(x)
    assert torch.equal(g, x) and not g.requires_grad


def test_memory_bank_gathers_all_ranks_in_rank_order(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(
        textwrap.dedent(f"""
        import os, sys, torch, torch.distributed as dist
        rank = int(sys.argv[1])
        dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=rank, world_size=2)
        from gazerad.ssl.memory import MemoryBankWithIndices
        bank = MemoryBankWithIndices(6, 2)
        n = 2 if rank == 0 else 3                       # uneven batches
        ids = torch.arange(n) + 10 * (rank + 1)
        bank.enqueue(torch.stack([ids.float(), -ids.float()], 1), ids)
        bank.enqueue(torch.stack([ids.float(), -ids.float()], 1) + 100, ids + 100)
        print("RESULT", bank.indices.tolist(), bank.keys[:, 0].tolist(), int(bank.ptr))
        dist.destroy_process_group()
    """)
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for r in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    # step 1 writes [10, 11, 20, 21, 22] at 0..4; step 2 writes [110, 111, 120, 121, 122] at 5, 0, 1, 2, 3
    expect_idx = [111, 120, 121, 122, 22, 110]
    lines = [next(ln for ln in out.splitlines() if ln.startswith("RESULT")) for out, _ in outs]
    for ln in lines:
        assert ln == f"RESULT {expect_idx} {[float(i) for i in expect_idx]} 4"


# ----------------------------------------------------------------------------- gaze positives


REL4 = np.array(
    [
        [1.0, 0.9, 0.2, 0.6],
        [0.9, 1.0, 0.5, 0.1],
        [0.2, 0.5, 1.0, 0.7],
        [0.6, 0.1, 0.7, 1.0],
    ],
    dtype=np.float32,
)


def test_batch_mask_threshold_diagonal_duplicates():
    pos = GazePositives(REL4, threshold=0.5)
    m = pos.batch_mask(torch.tensor([0, 2, 3, 0]))
    assert m.dtype == torch.bool and m.shape == (4, 4)
    expect = [
        [False, False, True, True],  # 0-2: 0.2; 0-3: 0.6; 0-0: duplicate
        [False, False, True, False],  # 2-3: 0.7
        [True, True, False, True],
        [True, False, True, False],
    ]
    assert m.tolist() == expect
    # strict '>': 0.5 between 1 and 2 is not a positive at threshold 0.5
    assert not GazePositives(REL4, 0.5).batch_mask(torch.tensor([1, 2]))[0, 1]
    # duplicates are positive even at threshold 1 (nothing is > 1)
    m1 = GazePositives(REL4, 1.0).batch_mask(torch.tensor([1, 1, 2]))
    assert m1.tolist() == [[False, True, False], [True, False, False], [False, False, False]]


def test_queue_mask_never_positive_for_empty_slots():
    rel = np.ones((5, 5), np.float32)  # everything related: a -1 used as a numpy index would be positive
    pos = GazePositives(rel, threshold=0.0)
    qm = pos.queue_mask(torch.tensor([0, 3]), torch.tensor([-1, 2, -1, 4, 3]))
    assert qm.tolist() == [[False, True, False, True, True], [False, True, False, True, True]]
    pos4 = GazePositives(REL4, threshold=0.5)
    qm = pos4.queue_mask(torch.tensor([0, 2]), torch.tensor([1, 2, -1, 3, 0]))
    assert qm.tolist() == [[True, False, False, True, True], [False, True, False, True, False]]
    assert pos4.queue_mask(torch.tensor([0]), torch.full((6,), -1)).tolist() == [[False] * 6]


def test_drop_statistics_and_resampling():
    n = 40
    rel = np.ones((n, n), np.float32)
    idx = torch.arange(n)
    pos = GazePositives(rel, threshold=0.5, drop_p=0.3, seed=0)
    off = ~torch.eye(n, dtype=torch.bool)
    masks = [pos.batch_mask(idx) for _ in range(40)]
    kept = torch.stack([m[off] for m in masks]).float().mean().item()
    assert abs(kept - 0.7) < 0.02
    assert not any(m.diagonal().any() for m in masks)
    assert not torch.equal(masks[0], masks[1])
    qkept = torch.stack([pos.queue_mask(idx[:8], torch.arange(n)) for _ in range(40)])
    not_same = torch.arange(8)[:, None] != torch.arange(n)[None, :]
    assert abs(qkept[:, not_same].float().mean().item() - 0.7) < 0.02
    assert qkept[:, ~not_same].all()  # the same image in the queue is never dropped
    # p = 0 keeps all, p = 1 keeps none (duplicates stay: they are not gaze-derived)
    assert torch.equal(GazePositives(rel, 0.5, 0.0).batch_mask(idx), off)
    assert not GazePositives(rel, 0.5, 1.0, seed=1).batch_mask(idx).any()
    assert GazePositives(rel, 0.5, 1.0, seed=1).batch_mask(torch.tensor([4, 4, 5])).tolist() == [
        [False, True, False],
        [True, False, False],
        [False, False, False],
    ]
    # same seed, same draws
    a, b = GazePositives(rel, 0.5, 0.5, seed=7), GazePositives(rel, 0.5, 0.5, seed=7)
    assert all(torch.equal(a.batch_mask(idx), b.batch_mask(idx)) for _ in range(3))


def test_sparse_dense_tensor_and_relation_give_identical_masks():
    rng = np.random.default_rng(0)
    n = 120
    s = sp.random(n, n, density=0.08, random_state=1, dtype=np.float32)
    s = s.maximum(s.T).tocsr() + sp.identity(n, dtype=np.float32, format="csr")
    dense = s.toarray()
    idx = torch.from_numpy(np.concatenate([rng.integers(0, n, 30), [5, 5]]))
    qidx = torch.from_numpy(np.concatenate([rng.integers(0, n, 50), [-1, -1, 5, 5]]))
    sources = [dense, torch.from_numpy(dense), s, s.tocoo(), Relation([str(i) for i in range(n)], s, "test")]
    for p in (0.0, 0.5):
        bm = [GazePositives(r, 0.3, p, seed=3).batch_mask(idx) for r in sources]
        qm = [GazePositives(r, 0.3, p, seed=3).queue_mask(idx, qidx) for r in sources]
        for m in bm[1:]:
            assert torch.equal(m, bm[0])
        for m in qm[1:]:
            assert torch.equal(m, qm[0])
        assert bm[0].any() and qm[0].any()
    # reference by brute force on the dense matrix (p = 0)
    ref = dense[np.ix_(idx.numpy(), idx.numpy())] > 0.3
    ref |= idx.numpy()[:, None] == idx.numpy()[None, :]
    np.fill_diagonal(ref, False)
    assert np.array_equal(GazePositives(s, 0.3).batch_mask(idx).numpy(), ref)


def test_sparse_relation_is_never_densified(monkeypatch):
    n = 50_000
    rows = np.arange(0, n - 1, 2)
    s = sp.csr_matrix((np.full(rows.size, 0.9, np.float32), (rows, rows + 1)), shape=(n, n))
    s = (s + s.T + sp.identity(n, format="csr", dtype=np.float32)).tocsr()

    def guarded(self, *a, **k):
        assert self.shape[0] * self.shape[1] < 10_000_000, f"densified a {self.shape} sparse matrix"
        return orig(self, *a, **k)

    orig = sp.csr_matrix.toarray
    monkeypatch.setattr(sp.csr_matrix, "toarray", guarded)
    pos = GazePositives(s, threshold=0.5)
    m = pos.batch_mask(torch.tensor([10, 11, 49_998, 49_999, 7]))
    assert m.tolist()[:2] == [[False, True, False, False, False], [True, False, False, False, False]]
    assert m[2, 3] and m[3, 2] and not m[4].any()
    q = pos.queue_mask(torch.tensor([10, 7]), torch.tensor([11, -1, 6, 3, 49_999]))
    assert q.tolist() == [[True, False, False, False, False], [False, False, True, False, False]]


def test_positives_validation_and_device():
    with pytest.raises(ValueError, match="threshold"):
        GazePositives(REL4, threshold=1.5)
    with pytest.raises(ValueError, match="drop_p"):
        GazePositives(REL4, drop_p=-0.1)
    with pytest.raises(ValueError, match="square"):
        GazePositives(np.ones((3, 4)))
    pos = GazePositives(REL4)
    with pytest.raises(ValueError, match=r"idx\[1\] = 4 .*N = 4"):
        pos.batch_mask(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"-1 .*N = 4"):
        pos.batch_mask(torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match=r"queue_idx\[0\] = -2"):
        pos.queue_mask(torch.tensor([0]), torch.tensor([-2]))
    idx = torch.tensor([0, 1])
    assert pos.batch_mask(idx).device == idx.device
    assert pos.queue_mask(idx, torch.tensor([1, -1])).device == idx.device


def test_positives_follow_the_data_sets_image_order():
    """A relation over all images used by index for a split's images gave positives of the
    wrong images, silently; with image_ids it is re-indexed to them."""
    m = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]], np.float32)
    rel = Relation(["a", "b", "c"], m, "moment")
    split = ["c", "x", "b", "a"]  # a training split in the data set's order, "x" without gaze
    a = rel.aligned(split).toarray()
    assert a[3, 2] == pytest.approx(0.9) and a[0, 2] == pytest.approx(0.2) and a[1, 1] == 1.0 and a[1, [0, 2, 3]].sum() == 0
    pos = GazePositives(rel, threshold=0.5, image_ids=split)
    mask = pos.batch_mask(torch.tensor([2, 3, 0]))  # b, a, c
    assert mask.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert GazePositives(rel, threshold=0.5).batch_mask(torch.tensor([0, 1])).tolist() == [[False, True], [True, False]]  # the relation's own rows
    assert repr(rel) == "Relation(N=3, scheme='moment', dense)"
    assert repr(Relation(["a", "b"], sp.csr_matrix(np.eye(2)), "moment")) == "Relation(N=2, scheme='moment', sparse, 2 stored entries)"
    with pytest.raises(ValueError, match="none of the 2 images is in this relation"):
        rel.aligned(["y", "z"])
    with pytest.raises(ValueError, match="image_ids needs a gazerad.gaze.relation.Relation"):
        GazePositives(m, image_ids=split)


# ----------------------------------------------------------------------------- backbones


def test_backbone_resnet10_trains_on_1_channel():
    model, f = build_backbone("resnet10", in_channels=1)
    assert f == 512
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 512)
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 512)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model3, f3 = build_backbone("ResNet10", in_channels=3)
    model3.eval()
    with torch.no_grad():
        assert model3(torch.randn(2, 3, 64, 64)).shape == (2, f3)


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048), ("densenet121", 1024)])
def test_backbones_feature_shapes(name, dim):
    model, f = build_backbone(name, in_channels=1)
    assert f == dim
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, dim)


def test_backbone_unknown_name():
    with pytest.raises(ValueError, match="resnet18.*densenet121"):
        build_backbone("vit")
