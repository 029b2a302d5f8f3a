"""Checkpoints inside a cohort: a killed run resumes its cohorts from their last epoch end.

Owns: the files under results/<name>/checkpoints/ — what a cohort's state is (each member's
rows of every stacked parameter and of its Adam moments, each slot's Adam step count, each
member's random generators, the epoch, each member's record so far, how its convolutions
run), writing it atomically at
epoch ends at most every `checkpoint_minutes`, finding the checkpoint a rerun's members can
resume from (a file there that is not a checkpoint is ignored with a warning), restoring it
into a freshly built fleet, and deleting it once its trials are told. Does not own: the epoch
loop (loop.py) or which members form a cohort (runner.py).

A member is known by its identity — its Optuna study, its configuration and its seed — not by
its trial number: a killed worker's trials are failed and their configurations queued again as
new trials, which find the old members' state under the same identities. Files load with
`torch.load(weights_only=True)`: tensors, numbers, strings, lists and dicts only, no code.

Resuming is exact: the state is everything a member's next epoch reads (its members' numbers
do not depend on the cohort, and every random draw comes from the member's own generators), so
a resumed member's numbers equal an uninterrupted run's (tests/integration/test_checkpoints.py
checks that, to float32 round-off).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import torch

from ablate.files import atomic_open

FORMAT = 1


def identity(store_name: str, point: str, seed: int) -> str:
    """A member's name across runs: its Optuna study, its configuration (a point id) and seed."""
    return hashlib.sha256(f"{store_name}\n{point}\n{seed}".encode()).hexdigest()[:20]


class Checkpoints:
    """One run's checkpoint folder; `cohort` gives the handle a training cohort writes through."""

    def __init__(self, folder: Path, minutes: float):
        self.folder, self.minutes = Path(folder), minutes
        self.told: set[str] = set()
        self.members: dict[Path, set[str]] = {}
        """Every checkpoint file this run knows (found or written) → its members' identities."""
        self._found: dict[Path, dict] | None = None

    @property
    def enabled(self) -> bool:
        return self.minutes > 0

    def found(self) -> dict[Path, dict]:
        """The checkpoints a killed run left, read once per run: file → contents, until a
        cohort takes one over. A file that is not one (torn, foreign, another version's) is
        left alone with a warning: its members, if any, start again."""
        if self._found is None:
            self._found = {}
            for path in sorted(self.folder.glob("*.pt")) if self.folder.is_dir() else ():
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as exc:  # noqa: BLE001 - a torn or foreign file only costs a restart
                    state = exc
                if _well_formed(state):
                    self._found[path] = state
                    self.members[path] = set(state["members"])
                else:
                    print(f"ablate: warning: {path}: not a checkpoint this ablate reads; ignored "
                          "(members it may hold start again).", file=sys.stderr)
        return self._found

    def partition(self, idents: dict[str, str]) -> list[tuple[list[str], "CohortCheckpoint"]]:
        """The member keys of a cohort (`idents`: key → identity) grouped by where they start:
        each saved checkpoint whose members are all in the cohort gives one group resumed
        from it; the remaining keys form one group that starts at epoch 0."""
        by_ident = {v: k for k, v in idents.items()}
        groups, left = [], dict(idents)
        for path, state in list(self.found().items()):
            mine = [by_ident.get(i) for i in state["members"]]
            if mine and all(k in left for k in mine):
                groups.append((mine, CohortCheckpoint(self, {k: idents[k] for k in mine}, path, state)))
                del self._found[path]  # the cohort holds it now
                for k in mine:
                    left.pop(k)
        if left:
            groups.append((list(left), CohortCheckpoint(self, left)))
        return groups

    def forget(self, idents: list[str]) -> None:
        """These members' trials are told: delete every checkpoint all of whose members are."""
        self.told.update(idents)
        for path, members in list(self.members.items()):
            if members <= self.told:
                path.unlink(missing_ok=True)
                for torn in path.parent.glob(f".{path.name}.*"):  # a killed writer's temporary file
                    torn.unlink(missing_ok=True)
                self.members.pop(path)
                (self._found or {}).pop(path, None)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # nothing in training: no folder left behind


class CohortCheckpoint:
    """What one training cohort reads at its start and writes at its epoch ends."""

    def __init__(self, owner: Checkpoints, idents: dict[str, str], path: Path | None = None,
                 state: dict | None = None):
        self.owner, self.idents, self.state = owner, idents, state
        name = hashlib.sha256("\n".join(sorted(idents.values())).encode()).hexdigest()[:16]
        self.path = path or owner.folder / f"cohort-{name}.pt"
        self.last = time.monotonic()

    def part(self, keys: list[str]) -> "CohortCheckpoint":
        """A checkpoint of some of these members only (a cohort split for memory), from the start."""
        return CohortCheckpoint(self.owner, {k: self.idents[k] for k in keys})

    @property
    def epoch(self) -> int:
        """The epoch the cohort resumes after (0: from the start)."""
        return self.state["epoch"] if self.state else 0

    def due(self) -> bool:
        return self.owner.enabled and time.monotonic() - self.last >= self.owner.minutes * 60

    def save(self, fleet, outcomes: dict, epoch: int) -> None:
        """The cohort's state after `epoch`, written atomically (the previous file stays whole
        until the new one replaces it)."""
        running = {m.key: i for i, m in enumerate(fleet.members)}
        members = {}
        for key, ident in self.idents.items():
            entry = {"outcome": dataclasses.asdict(outcomes[key])}
            if key in running:
                i = running[key]
                entry["slots"] = {name: [t[_rows(slot, i)].cpu() for t in
                                         (slot.tensor.detach(), slot.exp_avg, slot.exp_avg_sq)]
                                  for name, slot in fleet.slots.items()}
                entry["generators"] = [fleet.train_gens[i].get_state(), fleet.mask_gens[i].get_state()]
            members[ident] = entry
        steps = {name: float(slot.step) for name, slot in fleet.slots.items()}
        self.owner.folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "wb") as f:
            torch.save({"format": FORMAT, "epoch": epoch, "steps": steps, "members": members,
                        "strategies": fleet.model.strategies()}, f)
        self.owner.members[self.path] = set(members)
        self.last = time.monotonic()

    def restore(self, fleet, outcomes: dict) -> int:
        """Put the saved state into `fleet` (built fresh from the same members) and `outcomes`:
        members that had stopped leave the fleet with their records. Returns the epoch to
        resume after; 0, with nothing touched, when there is none or it does not fit the fleet
        (saved by other code): the cohort then trains from the start."""
        if not self.state or not self._fits(fleet, outcomes):
            return 0
        saved = {key: self.state["members"][ident] for key, ident in self.idents.items()}
        for key, entry in saved.items():  # (under this run's key: the trial numbers are new)
            record = {k: v for k, v in entry["outcome"].items() if k != "key"}
            outcomes[key] = dataclasses.replace(outcomes[key], **record)
        running = {k for k in fleet.keys if "slots" in saved[k]}
        if len(running) < len(fleet):
            fleet.select(running)
        for i, key in enumerate(fleet.keys):
            for name, slot in fleet.slots.items():
                rows = _rows(slot, i)
                for target, value in zip((slot.tensor.data, slot.exp_avg, slot.exp_avg_sq),
                                         saved[key]["slots"][name]):
                    target[rows] = value.to(target.device)
            train, mask = saved[key]["generators"]
            fleet.train_gens[i].set_state(train)
            fleet.mask_gens[i].set_state(mask)
        for name, slot in fleet.slots.items():
            slot.step.fill_(self.state["steps"][name])
        fleet.model.use(self.state.get("strategies", {}))  # the convolutions run as they did
        return self.epoch

    def _fits(self, fleet, outcomes: dict) -> bool:
        """Whether every saved member's record has this code's fields and its rows the shapes
        of its rows in `fleet`."""
        known = {f.name for f in dataclasses.fields(next(iter(outcomes.values())))}
        if any(not set(self.state["members"][ident]["outcome"]) <= known for ident in self.idents.values()):
            return False
        for i, key in enumerate(fleet.keys):
            entry = self.state["members"][self.idents[key]]
            if "slots" not in entry:
                continue
            if set(entry["slots"]) != set(fleet.slots) or set(self.state["steps"]) != set(fleet.slots):
                return False
            for name, slot in fleet.slots.items():
                if slot.tensor[_rows(slot, i)].shape != entry["slots"][name][0].shape:
                    return False
        return True


def _well_formed(state) -> bool:
    """Whether a loaded file has a checkpoint's layout (what `partition` and `restore` read)."""
    return (isinstance(state, dict) and state.get("format") == FORMAT
            and isinstance(state.get("epoch"), int) and isinstance(state.get("steps"), dict)
            and isinstance(state.get("members"), dict) and all(map(_member_ok, state["members"].values())))


def _member_ok(entry) -> bool:
    """A saved member: its record, and (if it was still training) its rows and generators."""
    if not (isinstance(entry, dict) and isinstance(entry.get("outcome"), dict)):
        return False
    if "slots" not in entry:
        return True
    slots, gens = entry["slots"], entry.get("generators")
    return (isinstance(slots, dict) and all(isinstance(v, list) and len(v) == 3
                                            and all(isinstance(t, torch.Tensor) for t in v)
                                            for v in slots.values())
            and isinstance(gens, list) and len(gens) == 2 and all(isinstance(g, torch.Tensor) for g in gens))


def _rows(slot, member: int) -> torch.Tensor:
    """The rows of a stacked parameter that belong to the fleet's member at `member`."""
    return torch.tensor([r for r, o in enumerate(slot.owners) if o == member], dtype=torch.long,
                        device=slot.tensor.device)
