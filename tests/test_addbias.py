"""AddBias: calibration over exactly N passes, frozen afterwards, eval never updates,
sequence layouts with padding, equal means across processes, checkpoint round trip."""
import io
import os

import pytest
import torch
import torch.distributed as dist

from rescalenet import AddBias, calibrate, is_calibrated, rescalenet18, reset_calibration
from dist_utils import run_distributed


def test_calibrates_over_exactly_n_training_passes():
    m = AddBias(3, calibration_steps=4)
    batches = [torch.randn(5, 3, 4, 4) + torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1) * i for i in range(6)]
    for i, x in enumerate(batches[:4]):
        assert not m.calibrated
        m(x)
        assert int(m.count) == i + 1
    assert m.calibrated
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in batches[:4]]).mean(0)
    torch.testing.assert_close(m.init_mean, expected)
    frozen = m.init_mean.clone()
    for x in batches[4:]:
        m(x)
    torch.testing.assert_close(m.init_mean, frozen)
    assert int(m.count) == 4


def test_output_is_centred_and_bias_damped_while_calibrating():
    m = AddBias(2, calibration_steps=2)
    with torch.no_grad():
        m._bias.fill_(1.0)
    x = torch.randn(16, 2, 3, 3) + 5.0
    y = m(x)
    # first pass: mu is this batch's mean, b enters as 0.01 * b
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.full((2,), 0.01), atol=1e-5, rtol=0)
    m(x)
    y = m(x)  # calibrated: full bias
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.full((2,), 1.0), atol=1e-5, rtol=0)


def test_eval_mode_never_updates_even_with_grad_enabled():
    m = AddBias(3).eval()
    x = torch.randn(4, 3, 8, 8, requires_grad=True) + 3
    for _ in range(10):
        m(x).sum().backward()
    assert int(m.count) == 0 and torch.all(m.init_mean == 0)
    m.train()
    with torch.no_grad():  # grad mode does not matter, the module mode does
        m(x)
    assert int(m.count) == 1


@pytest.mark.parametrize("shape", [(6, 4), (2, 4, 5, 5), (2, 4, 3, 5, 5)])
def test_channels_first_ranks(shape):
    m = AddBias(4, calibration_steps=1)
    x = torch.randn(*shape) + 2.0
    y = m(x)
    dims = [d for d in range(len(shape)) if d != 1]
    torch.testing.assert_close(y.mean(dim=dims), torch.zeros(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["TBC", "BTC"])
def test_sequence_padding_is_excluded_from_the_mean(layout):
    B, T, C = 3, 5, 4
    x_btc = torch.randn(B, T, C)
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[0, 3:] = True
    pad[2, 1:] = True
    x_btc[pad] = 1000.0  # padded positions hold garbage
    x = x_btc.transpose(0, 1).contiguous() if layout == "TBC" else x_btc
    m = AddBias(C, layout=layout, calibration_steps=1)
    m(x, padding_mask=pad)
    torch.testing.assert_close(m.init_mean, x_btc[~pad].mean(0))


def test_bad_input_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="expects 4 channels, got 3"):
        AddBias(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="3-D TBC tensor"):
        AddBias(4, layout="TBC")(torch.randn(2, 4))
    with pytest.raises(ValueError, match="padding_mask must have shape"):
        AddBias(4, layout="TBC")(torch.randn(5, 2, 4), padding_mask=torch.zeros(5, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="layout"):
        AddBias(4, layout="NHWC")
    with pytest.raises(ValueError, match="only supported"):
        AddBias(4)(torch.randn(2, 4, 3), padding_mask=torch.zeros(2, 3, dtype=torch.bool))


def test_state_dict_round_trip_never_recalibrates():
    model = rescalenet18(num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    calibrate(model, [torch.randn(2, 3, 32, 32) for _ in range(8)])
    assert is_calibrated(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    restored = rescalenet18(num_classes=5)
    assert not is_calibrated(restored)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert is_calibrated(restored)
    restored.train()
    restored(torch.randn(2, 3, 32, 32) * 10 + 4)  # a training pass must not move the means
    model.eval(), restored.eval()
    torch.testing.assert_close(restored(x), model(x))
    for a, b in zip(model.buffers(), restored.buffers()):
        assert torch.equal(a, b)


def test_calibrate_helper_counts_passes_and_restores_mode():
    model = rescalenet18(num_classes=3).eval()
    n = calibrate(model, (torch.randn(2, 3, 32, 32) for _ in range(20)))
    assert n == 8 and is_calibrated(model) and not model.training
    reset_calibration(model)
    assert not is_calibrated(model)
    with pytest.raises(RuntimeError, match="not enough"):
        calibrate(model, [torch.randn(2, 3, 32, 32)] * 3)


def _calibrate_on_rank(rank, world_size, out_dir):
    torch.manual_seed(0)  # same init on every rank
    model = rescalenet18(num_classes=4)
    gen = torch.Generator().manual_seed(100 + rank)  # different data per rank
    for _ in range(8):
        model(torch.randn(2, 3, 32, 32, generator=gen) + rank)
    means = {n: b.clone() for n, b in model.named_buffers() if n.endswith("init_mean")}
    torch.save(means, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()


def test_means_are_identical_across_two_processes(tmp_path):
    out = run_distributed(_calibrate_on_rank, tmp_path)
    r0 = torch.load(os.path.join(out, "rank0.pt"))
    r1 = torch.load(os.path.join(out, "rank1.pt"))
    assert r0.keys() == r1.keys() and len(r0) > 0
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
    # and they are not each rank's local statistics: rank 1's data is shifted by +1
    torch.manual_seed(0)
    local = rescalenet18(num_classes=4)
    gen = torch.Generator().manual_seed(100)
    for _ in range(8):
        local(torch.randn(2, 3, 32, 32, generator=gen))
    assert not torch.allclose(local.addbias1.init_mean, r0["addbias1.init_mean"])
