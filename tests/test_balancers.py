"""The loss balancers on their own: hand-computed steps, the papers' formulations written out
independently (autograd where the papers use it), properties, state, the API's refusals."""

import doctest
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import mtrl.balancers
import mtrl.surgery as surgery
from mtrl import balancers

SETTINGS = settings(max_examples=25, deadline=None)
LR = 0.025


def adam_first_step(grad: float, lr: float = LR) -> float:
    """Adam's first step from zero moments: both bias corrections cancel, -lr g / (|g| + eps)."""
    return -lr * grad / (abs(grad) + 1e-8)


def famo_weights(logits: list[float], losses: list[float]) -> list[float]:
    z = [math.exp(x) / sum(math.exp(y) for y in logits) for x in logits]
    q = [zi / (li + 1e-8) for zi, li in zip(z, losses, strict=True)]
    return [len(q) * qi / sum(q) for qi in q]


# ------------------------------------------------------------------------ hand-computed steps
def test_famo_one_step_by_hand():
    famo = balancers.make("famo", num_tasks=2)
    losses, after = torch.tensor([1.0, 4.0]), torch.tensor([0.5, 3.0])
    # z = (1/2, 1/2): w_i = 2 (z_i / l_i) / sum_j (z_j / l_j) = 2 (0.5, 0.125) / 0.625
    torch.testing.assert_close(famo.weights(losses), torch.tensor([1.6, 0.4]))
    famo.update(losses, losses_after=after)
    # log decreases (log 2, log 4/3); softmax Jacobian at z = 1/2: delta = +-(log 2 - log 4/3) / 4
    delta = (math.log(2) - math.log(4 / 3)) / 4
    logits = [adam_first_step(delta), adam_first_step(-delta)]  # decay: gamma * 0 at the start
    torch.testing.assert_close(famo.param, torch.tensor(logits))
    expected = famo_weights(logits, [1.0, 4.0])
    torch.testing.assert_close(famo.weights(losses), torch.tensor(expected))
    assert expected[0] < 1.6, "task 0 improved faster: its weight goes down"


def test_uncertainty_weighting_one_step_by_hand():
    uw = balancers.make("uw", num_tasks=2)
    losses = torch.tensor([2.0, 0.5])
    torch.testing.assert_close(uw.weights(losses), torch.ones(2))  # s = log sigma^2 = 0
    uw.update(losses)
    # d/ds of (exp(-s) l + s) / 2 at s = 0 is (1 - l) / 2: (-0.5, 0.25)
    s = [adam_first_step(-0.5, lr=0.01), adam_first_step(0.25, lr=0.01)]
    torch.testing.assert_close(uw.param, torch.tensor(s))
    torch.testing.assert_close(uw.weights(losses), torch.tensor([math.exp(-x) for x in s]))


def two_task_linear_model():
    """Shared layer W (3 -> 2), one scalar head per task; data chosen by hand."""
    torch.manual_seed(0)
    W = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    heads = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    x = torch.randn(8, 3, dtype=torch.float64)
    y = torch.stack([x[:, 0] - x[:, 2], 10 * x[:, 1]], dim=1)

    def losses():
        return ((x @ W.T) @ heads.T - y).pow(2).mean(0)

    return W, losses


def gradnorm_by_autograd(W, losses_now, w, initial, alpha):
    """GradNorm's L_grad as the paper writes it, differentiated by autograd w.r.t. the weights:
    G_i = |grad_W (w_i L_i)|, targets mean(G) r_i^alpha held constant."""
    w = w.clone().requires_grad_(True)
    G = torch.stack(
        [
            torch.autograd.grad(w[i] * losses_now[i], W, create_graph=True)[0].norm()
            for i in range(2)
        ]
    )
    ratios = losses_now.detach() / initial
    target = (G.mean() * (ratios / ratios.mean()) ** alpha).detach()
    (grad,) = torch.autograd.grad((G - target).abs().sum(), w)
    return grad


def test_gradnorm_matches_the_paper_on_a_two_task_linear_model():
    W, losses = two_task_linear_model()
    gradnorm = balancers.make("gradnorm", num_tasks=2, alpha=1.5)
    reference_w = torch.ones(2, dtype=torch.float64, requires_grad=True)
    reference_adam = torch.optim.Adam([reference_w], lr=LR)
    initial = None
    for _ in range(20):
        now = losses()
        initial = now.detach() if initial is None else initial
        norms = torch.stack(
            [torch.autograd.grad(now[i], W, retain_graph=True)[0].norm() for i in range(2)]
        )
        reference_w.grad = gradnorm_by_autograd(W, now, reference_w.detach(), initial, 1.5)
        reference_adam.step()
        with torch.no_grad():  # renormalise to sum K = 2 (Algorithm 1)
            reference_w.mul_(2 / reference_w.sum())
        gradnorm.update(now.detach(), grad_norms=norms.detach())
        (step,) = torch.autograd.grad((reference_w.detach() * losses()).sum(), W)
        with torch.no_grad():  # move the model a little, so the losses and norms change
            W -= 0.05 * step
    torch.testing.assert_close(gradnorm.param.double(), reference_w.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(gradnorm.param, torch.ones(2)), "the weights moved"


def test_gradnorm_raises_the_weight_of_the_slower_task():
    gradnorm = balancers.make("gradnorm", num_tasks=2, alpha=1.0)
    gradnorm.update(torch.tensor([1.0, 1.0]), grad_norms=torch.tensor([1.0, 1.0]))
    gradnorm.update(torch.tensor([0.1, 0.9]), grad_norms=torch.tensor([1.0, 1.0]))
    w = gradnorm.weights(torch.ones(2))
    assert w[1] > 1 > w[0] and w.sum().item() == pytest.approx(2.0)


# ------------------------------------------------------------------- independent formulations
def famo_reference(rounds, lr=LR, gamma=0.001):
    """FAMO's Algorithm 2 (autograd through the softmax, Adam with weight decay gamma)."""
    xi = torch.zeros(len(rounds[0][0]), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([xi], lr=lr, weight_decay=gamma)
    for before, after in rounds:
        delta = (before + 1e-8).log() - (after + 1e-8).log()
        (grad,) = torch.autograd.grad(F.softmax(xi, -1), xi, grad_outputs=delta)
        xi.grad = grad
        optimizer.step()
    return xi.detach()


@st.composite
def loss_rounds(draw, lowest_exponent: int = -3):
    """1 to 6 rounds of (losses before, losses after) of 2 to 6 tasks, scales 10^lowest to 10^3."""
    K = draw(st.integers(2, 6))
    steps = draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    exponents = torch.rand(K, generator=gen, dtype=torch.float64) * (3 - lowest_exponent)
    scales = 10 ** (exponents + lowest_exponent)
    rounds = []
    for _ in range(steps):
        before = scales * (0.5 + torch.rand(K, generator=gen, dtype=torch.float64))
        rounds.append((before, before * (0.5 + torch.rand(K, generator=gen, dtype=torch.float64))))
    return rounds


@SETTINGS
@given(loss_rounds(), st.sampled_from([0.0, 0.001, 0.1]))
def test_famo_logits_follow_the_papers_algorithm_2(rounds, gamma):
    famo = balancers.make("famo", num_tasks=len(rounds[0][0]), gamma=gamma)
    for before, after in rounds:
        famo.update(before.float(), losses_after=after.float())
    reference = famo_reference(rounds, gamma=gamma)
    torch.testing.assert_close(famo.param.double(), reference, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(loss_rounds())
def test_famo_weights_are_the_papers_convex_combination_times_k(rounds):
    K = len(rounds[0][0])
    famo = balancers.make("famo", num_tasks=K)
    for before, after in rounds:
        famo.update(before.float(), losses_after=after.float())
    losses = rounds[-1][1].float()
    weights = famo.weights(losses)
    # Eq. 11: the step sum_i c z_i grad log l_i == mean_i(w_i grad l_i) for any gradients
    z = famo.param.softmax(0)
    c = 1 / (z / (losses + 1e-8)).sum()
    torch.testing.assert_close(weights / K, c * z / (losses + 1e-8))
    assert (weights > 0).all() and weights.sum().item() == pytest.approx(K, rel=1e-5)


# ---------------------------------------------------------------------------------- properties
@SETTINGS
@given(loss_rounds(lowest_exponent=0), st.lists(st.floats(0.1, 1e3), min_size=6, max_size=6))
def test_famo_is_invariant_to_each_tasks_loss_scale(rounds, task_scales):
    """Only log-loss decreases enter the logits (losses far above the 1e-8 FAMO adds)."""
    K = len(rounds[0][0])
    s = torch.tensor(task_scales[:K], dtype=torch.float64)
    plain, scaled = (balancers.make("famo", num_tasks=K) for _ in range(2))
    for before, after in rounds:
        plain.update(before.float(), losses_after=after.float())
        scaled.update((s * before).float(), losses_after=(s * after).float())
    torch.testing.assert_close(plain.param, scaled.param, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(loss_rounds(), st.sampled_from(["uw", "gradnorm"]))
def test_weights_stay_positive_and_finite(rounds, name):
    K = len(rounds[0][0])
    balancer = balancers.make(name, num_tasks=K)
    gen = torch.Generator().manual_seed(0)
    for before, _ in rounds:
        norms = 10 ** (torch.rand(K, generator=gen) * 4 - 2)
        balancer.update(before.float(), grad_norms=norms)
        weights = balancer.weights(before.float())
        assert torch.isfinite(weights).all() and (weights > 0).all()
    if name == "gradnorm":
        assert weights.sum().item() == pytest.approx(K, rel=1e-5)  # renormalised to sum K


@SETTINGS
@given(loss_rounds(), st.floats(1e-3, 1e3))
def test_gradnorm_ignores_each_tasks_loss_unit(rounds, scale):
    """Only loss ratios L_i(t) / L_i(0) enter GradNorm: a task measured in other units (its
    loss times a constant) gets the same weights."""
    K = len(rounds[0][0])
    s = torch.ones(K, dtype=torch.float64)
    s[0] = scale
    plain, scaled = (balancers.make("gradnorm", num_tasks=K) for _ in range(2))
    norms = torch.linspace(0.5, 2.0, K)
    for before, _ in rounds:
        plain.update(before.float(), grad_norms=norms)
        scaled.update((s * before).float(), grad_norms=norms)
    torch.testing.assert_close(plain.param, scaled.param, rtol=1e-4, atol=1e-5)


def test_famo_measures_losses_above_min_loss():
    shifted = balancers.make("famo", num_tasks=2, min_loss=0.5)
    plain = balancers.make("famo", num_tasks=2)
    losses = torch.tensor([1.0, 4.5])
    torch.testing.assert_close(shifted.weights(losses), plain.weights(losses - 0.5))
    shifted.update(losses, losses_after=torch.tensor([0.75, 4.0]))
    plain.update(losses - 0.5, losses_after=torch.tensor([0.25, 3.5]))
    torch.testing.assert_close(shifted.param, plain.param)


def test_uncertainty_weighting_learns_the_inverse_loss():
    """At the optimum of (exp(-s) l + s) / 2, s = log l: the weight exp(-s) tends to 1 / l."""
    uw = balancers.make("uw", num_tasks=3, lr=0.05)
    losses = torch.tensor([0.5, 2.0, 8.0])
    for _ in range(2000):
        uw.update(losses)
    torch.testing.assert_close(uw.weights(losses), 1 / losses, rtol=0.02, atol=0.0)


def test_weights_are_copies_that_later_updates_leave_alone():
    for name in balancers.available():
        balancer = balancers.make(name, num_tasks=2)
        losses = torch.tensor([1.0, 2.0])
        weights = balancer.weights(losses)
        kept = weights.clone()
        balancer.update(losses, grad_norms=torch.tensor([1.0, 3.0]), losses_after=losses / 2)
        assert torch.equal(weights, kept), name


# ------------------------------------------------------------------------------------- state
def run_steps(balancer, start: int, steps: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(start)
    out = []
    for _ in range(steps):
        losses = 0.1 + torch.rand(3, generator=gen)
        balancer.update(losses, grad_norms=torch.rand(3, generator=gen), losses_after=0.9 * losses)
        out.append(balancer.weights(losses))
    return out


@pytest.mark.parametrize("name", balancers.available())
def test_state_round_trip_gives_identical_next_weights(name):
    balancer = balancers.make(name, num_tasks=3)
    run_steps(balancer, start=0, steps=4)
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # tensors and plain data only
    expected = run_steps(balancer, start=1, steps=3)

    restored = balancers.make(name, num_tasks=3)
    restored.load_state_dict(state)
    for a, b in zip(expected, run_steps(restored, start=1, steps=3), strict=True):
        assert torch.equal(a, b)


def test_state_of_another_balancer_is_refused():
    state = balancers.make("famo", num_tasks=3).state_dict()
    for other in (
        balancers.make("uw", num_tasks=3),
        balancers.make("famo", num_tasks=4),
        balancers.make("famo", num_tasks=3, gamma=0.01),
    ):
        with pytest.raises(ValueError, match="state is for balancer 'famo'"):
            other.load_state_dict(state)


# --------------------------------------------------------------------------------------- API
def test_names_and_options():
    assert balancers.available() == ["famo", "gradnorm", "uw"]
    assert balancers.options_of("famo") == {"lr": 0.025, "gamma": 0.001, "min_loss": 0.0}
    assert balancers.options_of("gradnorm") == {"alpha": 1.5, "lr": 0.025}
    assert balancers.options_of("uw") == {"lr": 0.01}
    assert balancers.make("famo", num_tasks=2, gamma=0.01).options["gamma"] == 0.01


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: balancers.make("dwa", 2), "unknown balancer 'dwa'; allowed: famo, gradnorm, uw"),
        (lambda: balancers.make("famo", 2, beta=1), "unknown option(s) ['beta'] for balancer"),
        (lambda: balancers.make("uw", 2, lr=0), "option 'lr' must be a finite number in (0.0"),
        (lambda: balancers.make("gradnorm", 2, alpha="x"), "option 'alpha' must be a number"),
        (lambda: balancers.make("uw", 0), "num_tasks must be an integer >= 1"),
        (lambda: balancers.make("famo", 2).update(torch.ones(2)), "needs losses_after"),
        (lambda: balancers.make("gradnorm", 2).update(torch.ones(2)), "needs grad_norms"),
    ],
)
def test_bad_use_is_one_clear_line(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_docstring_example_runs():
    assert doctest.testmod(mtrl.balancers).failed == 0


# ------------------------------------------------------------------------ with gradient surgery
def conflicting_rows() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(5, 40, generator=gen, dtype=torch.float64)
    J[1] *= -0.3
    J[2] -= 0.8 * J[0]
    return J


@pytest.mark.parametrize("method", surgery.available())
def test_surgery_refusals_are_exactly_the_methods_blind_to_row_scales(method):
    """Refused: scaling a task's gradient row leaves the update's direction unchanged, so loss
    weights cannot act through the method. Combined: the direction responds."""
    J = conflicting_rows()
    scales = torch.tensor([0.3, 2.0, 1.0, 5.0, 0.7], dtype=torch.float64)
    a = surgery.make(method, seed=0)(J)
    b = surgery.make(method, seed=0)(scales[:, None] * J)
    cosine = (a @ b / (a.norm() * b.norm())).item()
    refused = balancers.surgery_refusal(method) is not None
    assert refused == (cosine > 1 - 1e-9), cosine
    assert refused == (method in ("imtlg", "nashmtl"))


def test_torchjd_aggregators_are_not_combined():
    assert "TorchJD" in balancers.surgery_refusal("torchjd:UPGrad")
