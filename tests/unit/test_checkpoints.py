"""A cohort resumed from a checkpoint ends with the numbers of an uninterrupted run: every
family's state (stacked parameters, Adam moments and steps, each member's generators, records)
is in the checkpoint, members that stopped before it stay stopped, and a file that does not
fit the fleet is ignored."""

from __future__ import annotations

import json
import shutil

import pytest

from ablate.study.schema import RunConfig
from ablate.training.checkpoints import Checkpoints, identity
from ablate.training.fleet import Member
from ablate.training.loop import cohort_id, train_cohort

METRICS = ("test_nelbo", "test_recon", "active_units", "probe_accuracy", "fid")


def _members(**kw) -> list[Member]:
    base = {"hidden": (16,), "epochs": 4, "batch_size": 60, **kw}
    return [Member("a", RunConfig(**base, activation="relu"), 0),
            Member("b", RunConfig(**base, activation="snake"), 1),
            Member("c", RunConfig(**base, activation="tanh", latent_dim=3), 2)]


def _interrupted_then_resumed(tmp_path, data, members, stop_after: int, prune: str | None = None):
    """Train with a checkpoint at every epoch; keep a copy of the one after `stop_after` (what
    a kill then would leave); then train the same members again from that copy."""
    folder = tmp_path / "checkpoints"
    idents = {m.key: identity("s", m.key, m.seed) for m in members}
    kept = tmp_path / "kept.pt"

    def hook(epoch, records, replay):
        return {prune} if prune in records and epoch == 1 else set()

    (_, ck), = Checkpoints(folder, minutes=1e-9).partition(idents)
    save = ck.save

    def save_and_keep(fleet, outcomes, epoch):  # the state as a kill after `stop_after` leaves it
        save(fleet, outcomes, epoch)
        if epoch == stop_after:
            shutil.copy(ck.path, kept)
    ck.save = save_and_keep
    whole = train_cohort(members, data, iwae_samples=4, on_epoch=hook, checkpoint=ck)
    shutil.rmtree(folder)
    folder.mkdir()
    shutil.copy(kept, folder / kept.name)
    # the rerun's trials are new (other keys), its members the same (same identities)
    again_members = [Member(f"new-{m.key}", m.config, m.seed) for m in members]
    (_, again), = Checkpoints(folder, minutes=0).partition(
        {f"new-{k}": ident for k, ident in idents.items()})
    assert again.epoch == stop_after
    replayed = []
    resumed = train_cohort(again_members, data, iwae_samples=4, checkpoint=again,
                           on_epoch=lambda e, r, replay: replayed.append((e, replay)) or set())
    assert [e for e, replay in replayed if replay] == list(range(1, stop_after + 1))
    assert all(o.key == key for key, o in resumed.items())
    return whole, {key.removeprefix("new-"): o for key, o in resumed.items()}


def _same(whole, resumed):
    assert whole.keys() == resumed.keys()
    for key in whole:
        a, b = whole[key], resumed[key]
        assert (a.status, a.epochs_run, a.reason) == (b.status, b.epochs_run, b.reason), key
        assert json.dumps(a.history) == json.dumps(b.history), key  # (NaN equals NaN here)
        for m in METRICS:
            if m in a.metrics:
                assert b.metrics[m] == pytest.approx(a.metrics[m], rel=1e-6, nan_ok=True), (key, m)


@pytest.mark.parametrize("kw", [{}, {"family": "dae", "dropout": 0.2},
                                {"arch": "conv", "channels": (4,), "hidden": ()}])
def test_resumed_cohort_equals_uninterrupted(tmp_path, tiny_data, kw):
    whole, resumed = _interrupted_then_resumed(tmp_path, tiny_data, _members(**kw), stop_after=2,
                                               prune="c")
    assert whole["c"].status == "pruned"
    _same(whole, resumed)
    # the rerun's part is a cohort of its own: new trials, so a new id; the same three members
    rerun = cohort_id([f"new-{k}" for k in "abc"])
    assert {(o.cohort, o.cohort_members) for o in resumed.values()} == {(rerun, 3)}
    assert {o.cohort for o in whole.values()} == {cohort_id(list("abc"))}


def test_resumed_gan_equals_uninterrupted(tmp_path, tiny_data):
    members = _members(family="gan", hidden=(24,))[:2]
    _same(*_interrupted_then_resumed(tmp_path, tiny_data, members, stop_after=3))


def test_a_checkpoint_of_other_members_or_shapes_is_not_used(tmp_path, tiny_data):
    members = _members()
    idents = {m.key: identity("s", m.key, m.seed) for m in members}
    ckpts = Checkpoints(tmp_path / "ck", minutes=1e-9)
    (_, ck), = ckpts.partition(idents)
    train_cohort(members, tiny_data, iwae_samples=4, checkpoint=ck)
    assert ck.path.exists()
    # the next run: another cohort holding only some of these members resumes none of them
    groups = Checkpoints(tmp_path / "ck", minutes=0).partition({"a": idents["a"], "x": identity("s", "x", 9)})
    assert [(keys, c.epoch) for keys, c in groups] == [(["a", "x"], 0)]
    # the same members with other widths (other code, another study) start from epoch 0
    wider = [Member(m.key, RunConfig(**{**m.config.__dict__, "hidden": (20,)}), m.seed) for m in members]
    ckpts = Checkpoints(tmp_path / "ck", minutes=0)
    (_, c), = ckpts.partition(idents)
    assert c.epoch == 4
    trained = []
    train_cohort(wider, tiny_data, iwae_samples=4, checkpoint=c,
                 on_epoch=lambda e, r, replay: trained.append((e, replay)) or set())
    assert trained == [(e, False) for e in range(1, 5)]
    (tmp_path / "ck" / f".{c.path.name}.x1y2").write_bytes(b"half a file")  # a writer killed mid-write
    ckpts.forget(list(idents.values()))
    assert not (tmp_path / "ck").exists()
