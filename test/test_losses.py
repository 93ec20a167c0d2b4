"""The V2X-VLM losses against values and gradients worked out by hand on tiny tensors."""

import math

import pytest
import torch
from torch.autograd import gradcheck

from v2x_vlm_ros.training.losses import (
    AlignmentHeads,
    BinLabelSmoothing,
    LossWeights,
    distillation_loss,
    info_nce,
    info_nce_from_similarity,
    decision_weights,
    total_loss,
    trajectory_loss,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


# ---------------------------------------------------------------- trajectory loss


def traj_example():
    # position 0: logits (0, 0), label 0 -> p = 1/2, CE = ln 2
    # position 1: logits (ln 3, 0), label 1 -> p = 1 / (3 + 1), CE = ln 4
    # position 2: ignored, its logits must not matter
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [50.0, -50.0]]], requires_grad=True)
    labels = torch.tensor([[0, 1, -100]])
    return logits, labels


def test_trajectory_loss_hand_computed():
    logits, labels = traj_example()
    loss = trajectory_loss(logits, labels)
    assert loss.item() == pytest.approx((LN2 + math.log(4.0)) / 2)  # = 1.5 ln 2
    loss.backward()
    # d CE / d logits = (softmax - onehot) / N with N = 2 counted positions
    expected = torch.tensor([[[-0.5 / 2, 0.5 / 2], [0.75 / 2, -0.75 / 2], [0.0, 0.0]]])
    torch.testing.assert_close(logits.grad, expected)


def test_trajectory_loss_mean_over_tokens_not_rows():
    # row 0 has one counted token (CE ln 2), row 1 has two (CE ln 4 each): mean = (ln2 + 2 ln4) / 3
    logits = torch.tensor([[[0.0, 0.0], [9.0, 9.0]], [[LN3, 0.0], [LN3, 0.0]]])
    labels = torch.tensor([[0, -100], [1, 1]])
    expected = (LN2 + 2 * math.log(4.0)) / 3
    assert trajectory_loss(logits, labels).item() == pytest.approx(expected)


def test_trajectory_loss_all_ignored_is_connected_zero():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = trajectory_loss(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_trajectory_loss_half_precision_upcast():
    logits, labels = traj_example()
    loss = trajectory_loss(logits.detach().bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.5 * LN2, abs=1e-2)


@pytest.mark.parametrize("labels", [
    torch.tensor([[0, 1]]),                 # wrong length
    torch.tensor([[0.0, 1.0, -100.0]]),     # not long
    torch.tensor([[0, 2, -100]]),           # id >= V
    torch.tensor([[-1, 0, -100]]),          # negative, not -100
])
def test_trajectory_loss_validation(labels):
    logits, _ = traj_example()
    with pytest.raises(ValueError):
        trajectory_loss(logits, labels)


# ------------------------------------------------- trajectory loss with spread (HL-Gauss) targets

# the standard normal CDF at 0.5, 1.5, 2.5 (printed tables; Phi(-z) = 1 - Phi(z))
PHI = {0.5: 0.6914624612740131, 1.5: 0.9331927987311419, 2.5: 0.9937903346742238}


def test_bin_targets_are_the_normal_mass_on_each_bin():
    s = BinLabelSmoothing(range(100, 120), sigma_bins=1.0)
    row = s.targets[10]  # interior: the mass beyond +-9.5 sigma is negligible
    expected_centre = PHI[0.5] - (1 - PHI[0.5])
    assert row[10].item() == pytest.approx(expected_centre, abs=1e-6)  # 0.3829
    assert row[9].item() == row[11].item() == pytest.approx(PHI[1.5] - PHI[0.5], abs=1e-6)
    assert row[12].item() == pytest.approx(PHI[2.5] - PHI[1.5], abs=1e-6)
    # at the edge the mass outside the range is dropped and the rest renormalised
    assert s.targets[0, 0].item() == pytest.approx(expected_centre / PHI[0.5], abs=1e-6)
    torch.testing.assert_close(s.targets.sum(dim=1), torch.ones(20))


def test_trajectory_loss_with_spread_targets_hand_computed():
    # vocabulary of 6: ids 0, 1 are not loc tokens; bins 0..3 are ids 2..5; sigma 1 bin
    s = BinLabelSmoothing([2, 3, 4, 5], sigma_bins=1.0)
    # a label in bin 1: raw masses on bins 0..3 from the normal CDF, renormalised
    raw = [PHI[0.5] - PHI[1.5], 2 * PHI[0.5] - 1, PHI[1.5] - PHI[0.5], PHI[2.5] - PHI[1.5]]
    raw[0] = (1 - PHI[0.5]) - (1 - PHI[1.5])
    t = [m / sum(raw) for m in raw]
    # position 0: logits ln 3 on bin 2 (id 4), 0 elsewhere: log p = z - ln 8
    # position 1: a BOS-like label 0 stays one-hot: logits 0 everywhere, CE = ln 6
    logits = torch.zeros(1, 2, 6)
    logits[0, 0, 4] = LN3
    logits.requires_grad_(True)
    labels = torch.tensor([[3, 0]])
    loss = trajectory_loss(logits, labels, s)
    spread = math.log(8.0) - t[2] * LN3
    assert loss.item() == pytest.approx((spread + math.log(6.0)) / 2, rel=1e-6)
    loss.backward()
    # d/dz = (softmax - target) / N, the target spread over the bins at position 0
    target0 = torch.tensor([0.0, 0.0, *t])
    soft0 = torch.tensor([1, 1, 1, 1, 3, 1]) / 8.0
    torch.testing.assert_close(logits.grad[0, 0], (soft0 - target0) / 2)
    onehot = torch.tensor([1.0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(logits.grad[0, 1], (torch.full((6,), 1 / 6) - onehot) / 2)


def test_spread_targets_make_a_near_miss_cheaper_than_a_far_one():
    """One-hot cross-entropy cannot tell a plan one bin off from one thirty bins off; the
    spread targets can."""
    ids = list(range(10, 60))
    label = torch.tensor([[ids[20]]])

    def confident_on(bin_index):
        z = torch.zeros(1, 1, 60)
        z[0, 0, ids[bin_index]] = 8.0
        return z

    near, far = confident_on(21), confident_on(50 - 1)
    assert trajectory_loss(near, label).item() == pytest.approx(trajectory_loss(far, label).item())
    s = BinLabelSmoothing(ids, sigma_bins=2.0)
    assert trajectory_loss(near, label, s).item() < trajectory_loss(far, label, s).item() - 1.0
    # the best a prediction can do is to match the targets: lower than being sure of bin 20
    exact = torch.full((1, 1, 60), -1e4)
    exact[0, 0, ids] = torch.log(s.targets[20].clamp_min(1e-30))
    assert trajectory_loss(exact, label, s).item() < trajectory_loss(confident_on(20), label, s).item()


@pytest.mark.parametrize("args, message", [
    (([1, 2, 3], 0.0), "sigma_bins must be a positive number, got 0.0"),
    (([1, 2, 3], float("nan")), "sigma_bins must be a positive number, got nan"),
    (([1, 2, 2], 1.0), "bin_ids must be at least 2 distinct token ids"),
    (([7], 1.0), "bin_ids must be at least 2 distinct token ids"),
])
def test_bin_label_smoothing_validation(args, message):
    with pytest.raises(ValueError) as err:
        BinLabelSmoothing(*args)
    assert str(err.value) == message


def test_spread_targets_beyond_the_vocabulary_are_refused():
    with pytest.raises(ValueError) as err:
        trajectory_loss(torch.zeros(1, 1, 4), torch.tensor([[1]]), BinLabelSmoothing([2, 3, 4], 1.0))
    assert str(err.value) == "location token ids reach 4, the vocabulary has 4"


# ---------------------------------------------------------------- InfoNCE


def test_decision_weights_mark_the_first_waypoint_written():
    labels = torch.tensor([[0, 7, 8, 9, 10, 2], [0, -100, -100, 9, 10, 2]])
    w = decision_weights(labels, 5.0)
    expected = torch.tensor([[1.0, 5.0, 5.0, 1.0, 1.0, 1.0]] * 2)
    assert torch.equal(w, expected)
    assert decision_weights(labels, 1.0) is None  # the plain mean, the same code path as before
    with pytest.raises(ValueError) as err:
        decision_weights(labels[:, :2], 3.0)
    assert str(err.value) == "need (batch, length >= 3) labels, got (2, 2)"


def test_trajectory_loss_with_position_weights_hand_computed():
    # traj_example's CEs: ln 2 at position 0, ln 4 at position 1, position 2 ignored
    logits, labels = traj_example()
    weights = torch.tensor([[1.0, 3.0, 100.0]])  # the ignored position's weight must not count
    loss = trajectory_loss(logits, labels, weights=weights)
    assert loss.item() == pytest.approx((LN2 + 3 * math.log(4.0)) / 2)  # divided by N, not by sum(w)
    loss.backward()
    expected = torch.tensor([[[-0.5 / 2, 0.5 / 2], [3 * 0.75 / 2, -3 * 0.75 / 2], [0.0, 0.0]]])
    torch.testing.assert_close(logits.grad, expected)
    ones = trajectory_loss(*traj_example(), weights=torch.ones(1, 3))
    assert ones.item() == pytest.approx(1.5 * LN2)


def test_spread_trajectory_loss_with_position_weights():
    # weight 2 at the loc position, 1 at the one-hot position: (2 * spread + ln 6) / 2
    s = BinLabelSmoothing([2, 3, 4, 5], sigma_bins=1.0)
    logits = torch.zeros(1, 2, 6)
    logits[0, 0, 4] = LN3
    labels = torch.tensor([[3, 0]])
    plain = trajectory_loss(logits, labels, s).item()  # (spread + ln 6) / 2
    spread = 2 * plain - math.log(6.0)
    weighted = trajectory_loss(logits, labels, s, torch.tensor([[2.0, 1.0]])).item()
    assert weighted == pytest.approx((2 * spread + math.log(6.0)) / 2, rel=1e-6)


@pytest.mark.parametrize("weights, message", [
    (torch.ones(1, 2), "weights must be float (1, 3), got torch.float32 (1, 2)"),
    (torch.ones(1, 3, dtype=torch.long), "weights must be float (1, 3), got torch.int64 (1, 3)"),
])
def test_trajectory_loss_refuses_bad_weights(weights, message):
    logits, labels = traj_example()
    with pytest.raises(ValueError) as err:
        trajectory_loss(logits, labels, weights=weights)
    assert str(err.value) == message


def test_info_nce_from_similarity_hand_computed():
    s = torch.tensor([[2.0, 0.0], [1.0, 1.0]], requires_grad=True)
    # row 0: -ln(e^2 / (e^2 + 1)) = ln(1 + e^-2); row 1: -ln(e / 2e) = ln 2
    loss = info_nce_from_similarity(s)
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-2)) + LN2) / 2)
    loss.backward()
    # dL/dS_ii = -(1 - sigma_ii) / K, dL/dS_ij = sigma_ij / K, sigma = row softmax, K = 2
    sigma00 = math.exp(2) / (math.exp(2) + 1)
    sigma01 = 1 / (math.exp(2) + 1)
    expected = torch.tensor([[-(1 - sigma00) / 2, sigma01 / 2], [0.5 / 2, -(1 - 0.5) / 2]])
    torch.testing.assert_close(s.grad, expected)


def test_info_nce_gradient_formula_random():
    torch.manual_seed(0)
    s = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    info_nce_from_similarity(s).backward()
    k = 4
    sigma = torch.softmax(s.detach(), dim=1)
    for i in range(k):
        for j in range(k):
            want = -(1 - sigma[i, i]) / k if i == j else sigma[i, j] / k
            assert s.grad[i, j].item() == pytest.approx(want.item(), abs=1e-12)


def test_info_nce_hand_computed_image_to_text_only():
    image = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # normalised: (1, 0), (0, 1)
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])   # normalised: (1, 0), (1/sqrt2, 1/sqrt2)
    kappa = 0.5
    # S = [[1, 1/sqrt2], [0, 1/sqrt2]] / 0.5 = [[2, sqrt2], [0, sqrt2]]
    r2 = math.sqrt(2)
    row0 = math.log(1 + math.exp(r2 - 2))   # -ln(e^2 / (e^2 + e^sqrt2))
    row1 = math.log(1 + math.exp(-r2))      # -ln(e^sqrt2 / (e^0 + e^sqrt2))
    loss = info_nce(image, text, kappa)
    assert loss.item() == pytest.approx((row0 + row1) / 2)
    # the text-to-image direction (columns) would give (ln(1 + e^-2) + ln 2) / 2: not used
    assert loss.item() != pytest.approx((math.log(1 + math.exp(-2)) + LN2) / 2, abs=1e-3)
    # scale of the embeddings does not matter (L2-normalised), kappa does
    assert info_nce(image * 7, text * 0.1, kappa).item() == pytest.approx(loss.item())
    assert info_nce(image, text, 1.0).item() != pytest.approx(loss.item(), abs=1e-3)


def test_info_nce_single_pair_is_zero_with_grad():
    image = torch.randn(1, 8, requires_grad=True)
    loss = info_nce(image, torch.randn(1, 8), 0.07)
    assert loss.item() == pytest.approx(0.0, abs=1e-7) and loss.grad_fn is not None
    loss.backward()
    assert image.grad is not None


@pytest.mark.parametrize("kappa", [0.0, -0.1, float("nan"), float("inf")])
def test_info_nce_rejects_bad_kappa(kappa):
    with pytest.raises(ValueError, match="kappa"):
        info_nce(torch.randn(2, 3), torch.randn(2, 3), kappa)


@pytest.mark.parametrize("shapes", [((2, 3), (2, 4)), ((2, 3), (3, 3)), ((3,), (3,))])
def test_info_nce_rejects_shape_mismatch(shapes):
    with pytest.raises(ValueError):
        info_nce(torch.randn(*shapes[0]), torch.randn(*shapes[1]), 0.1)


def test_info_nce_from_similarity_rejects_non_square():
    with pytest.raises(ValueError):
        info_nce_from_similarity(torch.randn(2, 3))


def test_info_nce_gradcheck():
    torch.manual_seed(1)
    image = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    text = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda a, b: info_nce(a, b, 0.7), (image, text))


# ---------------------------------------------------------------- alignment heads


def test_alignment_heads():
    heads = AlignmentHeads(image_dim=3, text_dim=5, dim=2)
    assert heads.image_proj.bias is None and heads.text_proj.bias is None
    assert sum(p.numel() for p in heads.parameters()) == 3 * 2 + 5 * 2
    with torch.no_grad():
        heads.image_proj.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
        heads.text_proj.weight.fill_(1.0)
    z, h = heads(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]))
    torch.testing.assert_close(z, torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(h, torch.tensor([[15.0, 15.0]]))
    # the heads train through the alignment loss
    z, h = heads(torch.randn(4, 3), torch.randn(4, 5))
    info_nce(z, h, 0.1).backward()
    assert heads.image_proj.weight.grad.abs().sum() > 0 and heads.text_proj.weight.grad.abs().sum() > 0


def test_alignment_heads_reject_bad_dims():
    with pytest.raises(ValueError):
        AlignmentHeads(0, 4, 2)


# ---------------------------------------------------------------- distillation


def kd_example():
    # (1, 3, 2): position 0 differs, position 1 identical (KL 0), position 2 masked out.
    # T = 2. Position 0: student (0, 0) -> p_S = (1/2, 1/2); teacher (2 ln 3, 0) / 2 = (ln 3, 0)
    # -> p_T = (3/4, 1/4).
    student = torch.tensor([[[0.0, 0.0], [1.0, -1.0], [10.0, -10.0]]], requires_grad=True)
    teacher = torch.tensor([[[2 * LN3, 0.0], [1.0, -1.0], [-10.0, 10.0]]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    return student, teacher, mask


def test_distillation_hand_computed_value_and_gradient():
    student, teacher, mask = kd_example()
    loss = distillation_loss(student, teacher, mask, temperature=2.0)
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert loss.item() == pytest.approx(2.0 ** 2 * (kl0 + 0.0) / 2)  # T^2 * mean over N = 2
    loss.backward()
    # T (p_S - p_T) / N = 2 * ((0.5, 0.5) - (0.75, 0.25)) / 2 = (-0.25, 0.25); 0 elsewhere
    expected = torch.tensor([[[-0.25, 0.25], [0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(student.grad, expected)
    # NOT the paper's eq. 20, T^2 (p_S - p_T) / N = (-0.5, 0.5)
    assert not torch.allclose(student.grad[0, 0], torch.tensor([-0.5, 0.5]))
    assert teacher.grad is None  # the teacher is a constant


def test_distillation_with_position_weights_hand_computed():
    student, teacher, mask = kd_example()  # position 0 has KL kl0, position 1 has KL 0
    loss = distillation_loss(student, teacher, mask, temperature=2.0,
                             weights=torch.tensor([[4.0, 9.0, 50.0]]))
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert loss.item() == pytest.approx(2.0 ** 2 * (4 * kl0 + 0.0) / 2)
    loss.backward()
    expected = torch.tensor([[[-1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])  # 4 x the unweighted gradient
    torch.testing.assert_close(student.grad, expected)
    with pytest.raises(ValueError) as err:
        distillation_loss(student, teacher, mask, weights=torch.ones(3))
    assert str(err.value) == "weights must be float (1, 3), got torch.float32 (3,)"


def test_distillation_gradient_formula_random():
    torch.manual_seed(2)
    student = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 6, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    t = 3.0
    distillation_loss(student, teacher, mask, temperature=t).backward()
    p_s = torch.softmax(student.detach() / t, dim=-1)
    p_t = torch.softmax(teacher / t, dim=-1)
    expected = t * (p_s - p_t) / 4 * mask[..., None]
    torch.testing.assert_close(student.grad, expected)


def test_distillation_temperature_one_is_plain_kl():
    student = torch.tensor([[[0.0, 0.0]]])
    teacher = torch.tensor([[[LN3, 0.0]]])  # p_T = (3/4, 1/4)
    loss = distillation_loss(student, teacher, torch.tensor([[True]]), temperature=1.0)
    assert loss.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))


def test_distillation_no_masked_positions_is_connected_zero():
    student, teacher, _ = kd_example()
    loss = distillation_loss(student, teacher, torch.zeros(1, 3, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_distillation_teacher_minus_inf_is_finite():
    # p_T = (1, 0): KL = 1 * ln(1 / (1/2)) = ln 2; T^2 = 4
    student = torch.tensor([[[0.0, 0.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.0, -float("inf")]]])
    loss = distillation_loss(student, teacher, torch.tensor([[True]]))
    assert loss.item() == pytest.approx(4 * LN2)
    loss.backward()
    torch.testing.assert_close(student.grad, torch.tensor([[[2 * (0.5 - 1.0), 2 * 0.5]]]))


def test_distillation_half_precision_upcast():
    student, teacher, mask = kd_example()
    loss = distillation_loss(student.detach().half(), teacher.detach().bfloat16(), mask)
    assert loss.dtype == torch.float32
    kl0 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert loss.item() == pytest.approx(2 * kl0, abs=1e-2)


@pytest.mark.parametrize("kwargs", [
    {"temperature": 0.0},
    {"temperature": -1.0},
    {"temperature": float("nan")},
    {"mask": torch.tensor([[1, 1, 0]])},
    {"mask": torch.tensor([[True, True]])},
    {"teacher": torch.zeros(1, 3, 3)},
])
def test_distillation_validation(kwargs):
    student, teacher, mask = kd_example()
    with pytest.raises(ValueError):
        distillation_loss(student, kwargs.get("teacher", teacher), kwargs.get("mask", mask),
                          temperature=kwargs.get("temperature", 2.0))


def test_distillation_gradcheck():
    torch.manual_seed(3)
    student = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    assert gradcheck(lambda s: distillation_loss(s, teacher, mask, 2.0), (student,))


# ---------------------------------------------------------------- total


def test_total_loss_paper_weights():
    traj = torch.tensor(1.0, requires_grad=True)
    align = torch.tensor(2.0, requires_grad=True)
    kd = torch.tensor(4.0, requires_grad=True)
    out = total_loss(traj, align, kd)
    assert out["loss"].item() == pytest.approx(1.0 + 0.1 * 2.0 + 0.5 * 4.0)  # 3.2
    assert (out["traj"], out["align"], out["kd"]) == (1.0, 2.0, 4.0)
    assert all(isinstance(out[k], float) for k in ("traj", "align", "kd"))
    out["loss"].backward()
    assert (traj.grad.item(), align.grad.item(), kd.grad.item()) == pytest.approx((1.0, 0.1, 0.5))


def test_total_loss_absent_terms_and_custom_weights():
    traj = torch.tensor(1.5, requires_grad=True)
    out = total_loss(traj)
    assert out["loss"].item() == 1.5 and out["align"] == 0.0 and out["kd"] == 0.0
    assert isinstance(out["loss"], torch.Tensor) and out["loss"].requires_grad
    out = total_loss(traj, kd=torch.tensor(2.0), weights=LossWeights(lambda_align=1.0, lambda_kd=0.25))
    assert out["loss"].item() == pytest.approx(1.5 + 0.25 * 2.0) and out["align"] == 0.0


def test_loss_weights_defaults_and_validation():
    assert LossWeights() == LossWeights(lambda_align=0.1, lambda_kd=0.5)
    with pytest.raises(ValueError):
        LossWeights(lambda_align=-0.1)
    with pytest.raises(ValueError):
        LossWeights(lambda_kd=float("nan"))
