"""Numerics that do not depend on memory alignment (fdshpo.reproducible).

On an AMD EPYC machine MKL, outside its strict CNR mode, gave float64 hypergradients that changed
at the 1e-16 level when the same batches sat at storage offsets of 1 or 3 elements, and resumed
runs differed from uninterrupted ones (their stored states are rows of one stacked tensor). These
tests pin the two defences: strict mode requested at ``import fdshpo``, and aligned copies of
every tensor the engines read from outside.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch
from nets import batches_for, tiny_conv_bn

from fdshpo import ForwardState, ReverseEngine, ReverseState, Schedule, hypergradient
from fdshpo.engines.replay import BatchReplay
from fdshpo.reproducible import ALIGNMENT, MKL_CNR_MODE, aligned, mkl_strict_mode

ENGINES = ("forward", "reverse")
HAS_MKL_MODE = mkl_strict_mode() is not None
needs_mkl = pytest.mark.skipif(not HAS_MKL_MODE, reason="this torch build has no MKL to ask")


def _at_offset(tensor: torch.Tensor, offset: int) -> torch.Tensor:
    """``tensor``'s values in a larger buffer, starting ``offset`` elements in."""
    buffer = torch.zeros(tensor.numel() + offset, dtype=tensor.dtype)
    view = buffer[offset:].view(tensor.shape)
    view.copy_(tensor)
    return view


def _python(code: str, **env) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_aligned_copies_only_what_is_not_aligned():
    whole = torch.arange(20, dtype=torch.float64)
    assert aligned(whole) is whole
    shifted = whole[3:]
    assert shifted.data_ptr() % ALIGNMENT != 0
    copy = aligned(shifted)
    assert copy.data_ptr() % ALIGNMENT == 0
    assert torch.equal(copy, shifted) and copy.dtype == shifted.dtype


@needs_mkl
def test_the_test_process_runs_mkl_in_strict_mode():
    assert os.environ["MKL_CBWR"] == MKL_CNR_MODE
    assert mkl_strict_mode() is True


@needs_mkl
def test_importing_fdshpo_after_torch_asks_mkl_for_strict_mode():
    out = _python("import torch, fdshpo\n"
                  "from fdshpo.reproducible import mkl_strict_mode\n"
                  "a = torch.randn(64, 64, dtype=torch.float64); (a @ a).sum()\n"
                  "import os; print(os.environ['MKL_CBWR'], mkl_strict_mode())")
    assert out == f"{MKL_CNR_MODE} True"


@needs_mkl
def test_a_callers_own_mkl_setting_is_kept():
    out = _python("import fdshpo, os\nfrom fdshpo.reproducible import mkl_strict_mode\n"
                  "print(os.environ['MKL_CBWR'], mkl_strict_mode())", MKL_CBWR="AUTO")
    assert out == "AUTO False"


def _hypergradients_at_offsets(engine: str) -> list[torch.Tensor]:
    model = tiny_conv_bn(seed=3)
    train = batches_for("conv", 8, batch=16, seed=4)
    val = batches_for("conv", 2, batch=40, seed=5)
    schedule = Schedule.constant(8, lr=0.1, momentum=0.8, weight_decay=1e-3,
                                 segments={"lr": 3, "momentum": 2, "weight_decay": 1})
    results = []
    for offset in (0, 1, 3):
        shift = [(_at_offset(x, offset), _at_offset(y, offset)) for x, y in train]
        shift_val = [(_at_offset(x, offset), _at_offset(y, offset)) for x, y in val]
        result = hypergradient(model, torch.nn.functional.cross_entropy, shift, shift_val,
                               schedule, ("lr", "momentum", "weight_decay"), engine=engine)
        results.append(torch.cat([result.grads[k] for k in sorted(result.grads)]
                                 + [torch.tensor([result.val_loss], dtype=torch.float64)]))
    return results


@pytest.mark.parametrize("engine", ENGINES)
def test_batches_at_other_storage_offsets_give_bitwise_equal_hypergradients(engine):
    first, *others = _hypergradients_at_offsets(engine)
    for other in others:
        assert torch.equal(first, other)


@needs_mkl
def test_offsets_do_not_matter_even_when_mkl_ran_before_fdshpo_was_imported():
    """MKL's mode is fixed at its first call: here the aligned copies alone must suffice."""
    out = _python(
        "import sys, torch\n"
        "a = torch.randn(64, 64, dtype=torch.float64); (a @ a).sum()\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "import test_reproducible as t\n"
        "from fdshpo.reproducible import mkl_strict_mode\n"
        "print(mkl_strict_mode(), all(torch.equal(r[0], o) for r in "
        "(t._hypergradients_at_offsets(e) for e in t.ENGINES) for o in r[1:]))")
    assert out == "False True"


def _saved_and_loaded(data: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def test_resumed_reverse_state_is_aligned_like_an_uninterrupted_one():
    """Stored trajectory states are rows of one stacked tensor in a checkpoint (P = 6 float64
    parameters: 48 bytes a row, so row 1 starts off the 64-byte grid)."""
    model = torch.nn.Linear(2, 2, dtype=torch.float64)
    model.bias.requires_grad_(False)
    model = torch.nn.Sequential(model, torch.nn.Linear(2, 1, bias=False, dtype=torch.float64))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6
    schedule = Schedule.constant(9, lr=0.1, momentum=0.5, weight_decay=0.0)
    engine = ReverseEngine(model, lambda out, y: ((out - y) ** 2).mean(), schedule, ("lr",))
    state = engine.init()
    data = [(torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
            for _ in range(9)]
    state = engine.advance(state, BatchReplay(data, 9), data[:1], until=9)
    saved = _saved_and_loaded(state.to_tensors())
    assert len(saved["stored_steps"]) >= 2
    assert any(row.data_ptr() % ALIGNMENT for row in saved["stored_theta"])
    loaded = ReverseState.from_tensors(saved)
    assert all(t.data_ptr() % ALIGNMENT == 0 for t in _tensors(tuple(loaded)))


def test_resumed_forward_state_is_aligned():
    state = ForwardState(3, *(_at_offset(torch.randn(5, dtype=torch.float64), 1)
                              for _ in range(2)),
                         torch.randn(2, 5, dtype=torch.float64)[:, 1:],
                         torch.randn(2, 4, dtype=torch.float64),
                         torch.randn(9, dtype=torch.float64))
    saved = state.to_tensors()
    assert saved["theta"].data_ptr() % ALIGNMENT and saved["Z"].data_ptr() % ALIGNMENT
    loaded = ForwardState.from_tensors(saved)
    assert all(t.data_ptr() % ALIGNMENT == 0 for t in _tensors(tuple(loaded)))



def test_deterministic_kernels_hold_only_inside_the_block_and_only_for_cuda():
    from fdshpo.reproducible import deterministic_kernels

    cudnn = torch.backends.cudnn
    saved = cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.deterministic, cudnn.benchmark = False, True
        with deterministic_kernels(torch.device("cpu")):
            assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with deterministic_kernels(torch.device("cuda", 0)):  # sets flags only: no GPU needed
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
        with pytest.raises(RuntimeError), deterministic_kernels(torch.device("cuda")):
            raise RuntimeError("a failing run")
        assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reverse_mode_recomputes_bit_for_bit_on_cuda():
    """Recomputed trajectory states (the default interval) give the hypergradients of a run
    that stores every state (recompute_every=1), bit for bit, on the GPU."""
    model = tiny_conv_bn(seed=3).cuda()
    train = [(x.cuda(), y.cuda()) for x, y in batches_for("conv", 16, batch=16, seed=4)]
    val = [(x.cuda(), y.cuda()) for x, y in batches_for("conv", 2, batch=40, seed=5)]
    schedule = Schedule.constant(16, lr=0.1, momentum=0.8, weight_decay=1e-3,
                                 segments={"lr": 4, "momentum": 2, "weight_decay": 1})
    runs = [hypergradient(model, torch.nn.functional.cross_entropy, train, val, schedule,
                          engine="reverse", recompute_every=every) for every in (None, 1)]
    for name in runs[0].grads:
        assert torch.equal(runs[0].grads[name], runs[1].grads[name]), name
