"""The fleet's invariants: independence, padding, stacked Adam, NaN isolation."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.study.schema import RunConfig
from ablate.training import fleet as fleet_module
from ablate.training.fleet import Fleet, Member
from ablate.training.loop import cohort_id, train_cohort

# Tolerance for "the same numbers" between a member trained alone and inside a cohort: the
# batched matmuls of a wider, padded cohort may sum in another order (float32 rounding, ~1e-7
# relative per step); over a few epochs of Adam this stays far below 1e-4 relative.
RTOL = 1e-4
METRICS = ("test_nelbo", "test_recon", "test_kl", "test_nll", "mutual_info", "active_units")


def member(key, seed=0, **kw) -> Member:
    return Member(key, RunConfig(**{"hidden": (32,), "epochs": 3, "batch_size": 64, **kw}), seed)


def test_one_step_changes_weights_and_gives_finite_loss(tiny_data):
    fleet = Fleet([member("a"), member("b", activation="tanh")], 64)
    before = {k: s.tensor.detach().clone() for k, s in fleet.slots.items()}
    x = tiny_data.x_train[:64].expand(2, -1, -1)
    loss, _, _ = fleet.train_step(x, torch.randn(2, 64, fleet.latent), fleet.beta(0, 1))
    assert torch.isfinite(loss).all()
    for k, s in fleet.slots.items():
        assert not torch.equal(before[k], s.tensor), k


def test_member_alone_equals_member_in_heterogeneous_cohort(tiny_data):
    target = member("target", seed=1, activation="gelu", latent_dim=4, kl_weight=1.0)
    others = [member("o1", seed=0, activation="relu", latent_dim=8, kl_weight=0.5),
              member("o2", seed=2, activation="tanh", latent_dim=2, kl_weight=4.0),
              member("o3", seed=1, activation="prelu", latent_dim=6, kl_weight=1.0, hidden=(48,)),
              member("o4", seed=3, activation="selu", latent_dim=4, kl_weight=2.0)]
    alone = train_cohort([target], tiny_data, iwae_samples=10)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=10)["target"]
    assert alone.status == crowd.status == "ok"
    for m in METRICS:
        assert crowd.metrics[m] == pytest.approx(alone.metrics[m], rel=RTOL), m
    for ra, rc in zip(alone.history, crowd.history):
        assert rc["train_loss"] == pytest.approx(ra["train_loss"], rel=RTOL)


@pytest.mark.parametrize("activation", ["acon", "meta_acon", "blend"])
def test_an_input_adaptive_activations_member_alone_equals_it_in_a_padded_cohort(tiny_data, activation):
    """Its parameters and (meta_acon) its switch network are the member's own; wider members
    pad its layer with units whose zeros change neither its output nor its β."""
    target = member("target", seed=1, activation=activation, latent_dim=4, hidden=(24,))
    others = [member("o1", seed=0, activation="relu", latent_dim=8, hidden=(32,)),
              member("o2", seed=2, activation=activation, latent_dim=2, hidden=(40,)),
              member("o3", seed=3, activation="tanh", latent_dim=4)]
    alone = train_cohort([target], tiny_data, iwae_samples=10)["target"]
    crowd = train_cohort(others + [target], tiny_data, iwae_samples=10)["target"]
    assert alone.status == crowd.status == "ok"
    for m in METRICS:
        assert crowd.metrics[m] == pytest.approx(alone.metrics[m], rel=RTOL), m


def test_evaluation_numbers_do_not_depend_on_how_a_pass_is_chunked(tiny_data, monkeypatch):
    """Chunk sizes follow the cohort's size and the device's free memory; each image's noise
    (ELBO, IWAE, prior samples) is drawn image by image, so a member's numbers do not."""
    from ablate.training import evaluation

    fleet = Fleet([member("a", activation="gelu", latent_dim=4), member("b", seed=1, latent_dim=2)], 64)
    with torch.no_grad():
        whole = evaluation.evaluate_split(fleet, tiny_data.x_test, 20)[0]
        for budget in (1, 50_000, 700_000):  # one image a chunk, a few, most of the split
            monkeypatch.setattr(evaluation, "memory_budget", lambda device: budget)
            chunked = evaluation.evaluate_split(fleet, tiny_data.x_test, 20)[0]
            for key in whole:
                for m in ("test_nelbo", "test_recon", "test_kl", "test_nll", "mutual_info"):
                    assert chunked[key][m] == pytest.approx(whole[key][m], rel=1e-5, abs=1e-5), (budget, key, m)


@pytest.mark.parametrize("activation", ["sigmoid", "meta_acon"])  # meta_acon reads its whole layer
def test_padded_weights_get_zero_gradient_and_stay_zero(tiny_data, activation):
    small = member("small", latent_dim=2, hidden=(16,), activation=activation)
    big = member("big", seed=1, latent_dim=6, hidden=(32,), activation=activation)
    fleet = Fleet([small, big], 64)
    i = fleet.keys.index("small")
    L = fleet.latent

    def padded_parts():
        s = fleet.slots
        return [s["enc.0.w"].tensor[i, :, 16:], s["enc.0.b"].tensor[i, :, 16:],
                s["head.w"].tensor[i, 16:, :], s["head.w"].tensor[i, :, 2:L],
                s["head.w"].tensor[i, :, L + 2:], s["head.b"].tensor[i, :, 2:L],
                s["dec.0.w"].tensor[i, 2:, :], s["dec.0.w"].tensor[i, :, 16:],
                s["dec.0.b"].tensor[i, :, 16:], s["out.w"].tensor[i, 16:, :]]

    perms, eps = fleet.epoch_draws(len(tiny_data.x_train))
    for step in range(5):
        idx = perms[:, step * 32:(step + 1) * 32]
        loss, recon, kl = fleet.loss(tiny_data.x_train[idx], eps[:, step * 32:(step + 1) * 32],
                                     fleet.beta(step, 10))
        for p in fleet.parameters():
            p.grad = None
        loss.sum().backward()
        grads = {k: s.tensor.grad for k, s in fleet.slots.items()}
        for part, grad_part in zip(padded_parts(), _same_views(grads, i, L)):
            assert torch.count_nonzero(grad_part) == 0
            assert torch.count_nonzero(part) == 0
        fleet.adam_step()
    for part in padded_parts():
        assert torch.count_nonzero(part) == 0


def _same_views(g, i, L):
    return [g["enc.0.w"][i, :, 16:], g["enc.0.b"][i, :, 16:], g["head.w"][i, 16:, :],
            g["head.w"][i, :, 2:L], g["head.w"][i, :, L + 2:], g["head.b"][i, :, 2:L],
            g["dec.0.w"][i, 2:, :], g["dec.0.w"][i, :, 16:], g["dec.0.b"][i, :, 16:],
            g["out.w"][i, 16:, :]]


@pytest.mark.parametrize("lrs,fused", [((1e-3, 1e-3), True), ((1e-3, 1e-3), False),
                                      ((1e-3, 3e-3), True)])
def test_stacked_adam_matches_torch_adam(lrs, fused, monkeypatch):
    """Per member, the stacked update equals torch.optim.Adam on that member alone: with the
    fused kernel (one shared lr), and on the plain path (without the kernel, or per-member lrs)."""
    monkeypatch.setattr(fleet_module, "FUSED_ADAM", fleet_module.FUSED_ADAM if fused else ())
    fleet = Fleet([member("a", lr=lrs[0]), member("b", seed=1, lr=lrs[1])], 64)
    refs = []
    for i in range(2):
        params = [s.tensor.detach()[i].clone().requires_grad_(True) for s in fleet.slots.values()]
        refs.append((params, torch.optim.Adam(params, lr=lrs[i])))
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        grads = [torch.randn(s.tensor.shape, generator=gen) for s in fleet.slots.values()]
        for s, g in zip(fleet.slots.values(), grads):
            s.tensor.grad = g.clone()
        fleet.adam_step()
        for i, (params, opt) in enumerate(refs):
            for p, g in zip(params, grads):
                p.grad = g[i].clone()
            opt.step()
    for i, (params, _) in enumerate(refs):
        for s, p in zip(fleet.slots.values(), params):
            torch.testing.assert_close(s.tensor.detach()[i], p.detach(), rtol=1e-6, atol=1e-7)


def test_nan_member_fails_alone_and_others_keep_their_numbers(tiny_data):
    healthy = [member("h1", activation="relu"), member("h2", seed=1, activation="tanh")]
    # lr so large with exp activations that the loss overflows within the first epochs.
    doomed = member("doomed", seed=2, activation="exponential", lr=50.0)
    without = train_cohort(healthy, tiny_data, iwae_samples=10)
    together = train_cohort(healthy + [doomed], tiny_data, iwae_samples=10)
    bad = together["doomed"]
    assert bad.status == "failed" and bad.fail_epoch is not None
    assert "NaN" in bad.reason or "inf" in bad.reason or "non-finite" in bad.reason
    for key in ("h1", "h2"):
        assert together[key].status == "ok"
        for m in METRICS:
            assert together[key].metrics[m] == pytest.approx(without[key].metrics[m], rel=RTOL)


def test_pruned_members_leave_the_computation(tiny_data):
    members = [member("a"), member("b", seed=1), member("c", seed=2)]
    sizes = []

    def hook(epoch, records, replay):
        sizes.append(len(records))
        return {"b"} if epoch == 1 else set()

    out = train_cohort(members, tiny_data, iwae_samples=5, on_epoch=hook)
    assert sizes == [3, 2, 2]
    assert out["b"].status == "pruned" and out["b"].epochs_run == 1
    assert out["a"].status == out["c"].status == "ok"
    cohort = {(o.cohort, o.cohort_members, o.cohort_seconds) for o in out.values()}
    assert len(cohort) == 1, "every member names the cohort it started in, pruned ones too"
    (name, size, seconds), = cohort
    assert name == cohort_id(["c", "a", "b"]) and size == 3 and 0 < seconds < math.inf
    assert cohort_id(["a", "b"]) not in (name, cohort_id(["a", "b", "d"]))


def test_ae_family_trains_without_kl(tiny_data):
    out = train_cohort([member("ae", family="ae")], tiny_data, iwae_samples=5)["ae"]
    assert out.status == "ok"
    assert math.isnan(out.metrics["test_kl"]) and math.isnan(out.metrics["test_nll"])
    assert out.metrics["test_nelbo"] == pytest.approx(out.metrics["test_recon"])


def test_gaussian_likelihood_learns_its_noise(tiny_data):
    fleet_out = train_cohort([member("g", likelihood="gaussian", epochs=2)], tiny_data, 5)["g"]
    assert fleet_out.status == "ok" and math.isfinite(fleet_out.metrics["test_nll"])
    # log σ starts at 0 (σ = 1); pixels in [0, 1] are fitted far better than that, so it falls
    fleet = Fleet([member("g", likelihood="gaussian")], 64)
    x = tiny_data.x_train[:64].expand(1, -1, -1)
    for step in range(20):
        fleet.train_step(x, torch.randn(1, 64, fleet.latent), fleet.beta(step, 1))
    assert fleet.slots["log_sigma"].tensor.item() < -0.01


def test_a_traversal_moves_one_latent_dimension_per_row(tiny_data):
    from ablate.training.samples import TRAVERSAL_STEPS, traversals

    fleet = Fleet([member("a", latent_dim=3), member("b", latent_dim=2, seed=1)], 64)
    seen = []
    decode = fleet.decode
    fleet.decode = lambda z: (seen.append(z.clone()), decode(z))[1]  # the codes it draws
    images = traversals(fleet, tiny_data.x_test)
    (z,) = seen
    assert images.shape == (2, 3 * TRAVERSAL_STEPS, 64) and torch.isfinite(images).all()
    z = z.view(2, 3, TRAVERSAL_STEPS, 3)  # member × swept dimension × step × latent
    base = fleet.encode(tiny_data.x_test[:1])[0][:, 0]  # each member's code of the first test image
    for d in range(2):  # member b has two real dimensions
        others = [k for k in range(3) if k != d]
        torch.testing.assert_close(z[1, d][:, others], (base[1] * fleet.latent_mask[1, 0])[others].expand(TRAVERSAL_STEPS, -1))
        assert (z[1, d, 1:, d] > z[1, d, :-1, d]).all()  # its own dimension sweeps upward
    assert (z[1, :, :, 2] == 0).all()  # the padding dimension stays 0
