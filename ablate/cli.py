"""Command-line interface: `ablate run | report | compare | status | export | sample | list`.
User errors exit 2 with one message.

Owns: argument parsing, exit codes, printing. Does not own: any of the work it dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ablate import timing
from ablate.errors import UserError
from ablate.files import writable_file, writable_folder

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablate", description="Activation-function ablation "
                                "benchmark for variational autoencoders.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train every unfinished member of a study, then report",
                         description="Train a study's grid (resuming where a previous run "
                         "stopped) and write tables, figures and the report.")
    run.add_argument("study", help="study YAML file, e.g. studies/quick.yaml")
    run.add_argument("--results", default="results", help="results root (default: results/)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run.add_argument("--no-report", action="store_true", help="train only (a worker among "
                     "several, say); `ablate report` builds tables and report later")
    run.add_argument("--storage", metavar="URL", help="the study's store, overriding the YAML's "
                     "storage: a database URL (postgresql://user@host:5432/db) that workers on "
                     "several machines share; default results/<name>/study.db")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="train on N local workers sharing the study's store, each with an equal "
                     "share of the CPU cores (default 1)")
    run.add_argument("--devices", metavar="LIST", help="one local worker per device, e.g. "
                     "cuda:0,cuda:1 (instead of --workers)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one of the YAML's values, checked like the YAML, e.g. --set "
                     "train.epochs=5 --set 'space.activation=[relu, gelu]' (repeatable)")

    rep = sub.add_parser("report", help="rebuild tables, figures and report from the store",
                         description="Rebuild runs.csv, epochs.csv, figures and report.html/.md "
                         "from a results folder without training.")
    _target_args(rep)

    cmp = sub.add_parser("compare", help="put two or more studies side by side",
                         description="One report comparing the activations across studies "
                         "(e.g. the same grid on two datasets), from their stores.")
    cmp.add_argument("targets", nargs="+", metavar="TARGET",
                     help="results folders (results/<name>) or study YAMLs; two or more")
    cmp.add_argument("--results", default="results", help="results root for YAML targets")
    cmp.add_argument("--out", help="output folder (default: RESULTS/compare-<names>)")
    cmp.add_argument("--storage", metavar="URL", help="the store of studies not kept in their "
                     "results folder's study.db")

    sts = sub.add_parser("status", help="how far a study is: trials by state, workers, ETA",
                         description="Trials finished, running (with each worker and the age of "
                         "its heartbeat), queued, failed and pruned; members done; an ETA. "
                         "Reads the store, writes nothing.")
    _target_args(sts)

    exp = sub.add_parser("export", help="write one trained member as a TorchScript file",
                         description="Write member (TRIAL, SEED) of a results folder as a "
                         "TorchScript module that plain PyTorch loads without ablate: "
                         "m = torch.jit.load(FILE); mu, logvar = m.encode(x); out = m.decode(z) "
                         "(a GAN: m.generate(z)).")
    _member_args(exp)
    exp.add_argument("-o", "--out", required=True, metavar="FILE", help="the .pt file to write")

    smp = sub.add_parser("sample", help="draw prior samples of one trained member as a PNG grid",
                         description="Decode N draws z ~ N(0, I) of member (TRIAL, SEED) of a "
                         "results folder (a VAE's or a GAN's) and save them as an image grid.")
    _member_args(smp)
    smp.add_argument("-n", type=int, default=64, help="how many samples (default 64)")
    smp.add_argument("--noise-seed", type=int, default=0, help="seed of the draws (default 0)")
    smp.add_argument("-o", "--out", required=True, metavar="FILE", help="the .png file to write")

    lst = sub.add_parser("list", help="list the registered activations or datasets")
    lst.add_argument("what", choices=["activations", "datasets"])
    return p


def _run(args) -> int:
    started = time.perf_counter()
    from ablate.study.loader import load_study

    # the study is checked before torch, pandas and matplotlib load: a typo costs no wait
    study = _with_storage(load_study(args.study, tuple(args.set)), args.storage)
    writable_folder(Path(args.results) / study.name, "--results")
    from ablate.analysis.report import build_report
    from ablate.run.runner import run_study

    devices = _devices(args)
    many = bool(devices) or args.workers > 1
    if many:
        from ablate.run.local import run_workers

        out_dir = run_workers(study, args.study, args.results, len(devices) or args.workers, devices,
                              args.set, args.storage, show=not args.no_progress)
    else:
        out_dir = run_study(study, Path(args.results), progress=not args.no_progress)
    if args.no_report:
        print(f"trained: {out_dir} (no report: `ablate report {out_dir}` builds it)")
        return 0
    if not args.no_progress:
        print(f"{study.name}: building the report", file=sys.stderr)
    with timing.phase("report"):
        report = build_report(study, out_dir)
    if study.tracking:
        from ablate.run.tracking import Trackers

        Trackers(study, out_dir).report([out_dir / name for name in
                                         ("report.html", "report.md", "runs.csv", "epochs.csv", "figures")])
    _print_time(time.perf_counter() - started, study if many else None, out_dir)
    print(f"report: {report}")
    print(f"tables: {out_dir / 'runs.csv'}, {out_dir / 'epochs.csv'}")
    return 0


def _devices(args) -> list[str]:
    """--devices as a list (each checked like the YAML's device); --workers must be ≥ 1."""
    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: give 1 or more local workers.")
    if not args.devices:
        return []
    from ablate.study.checks import Bad, device

    names = [d.strip() for d in args.devices.split(",")]
    for name in names:
        try:
            device(name)
        except Bad as exc:
            raise UserError(f"--devices: {name!r} {exc}") from None
    return names


def _print_time(wall: float, workers_of, out_dir: Path) -> None:
    """Where this run's wall time went, phase by phase (timing.py), on stderr; with local
    workers (`workers_of` their study), their phases as the store sums them, and shares of
    that sum."""
    account = timing.taken()
    if workers_of is not None:
        from ablate.run.store import read_store

        account = timing.added(read_store(workers_of, out_dir).user_attrs.get("time", {}), account)
        print(f"where the time went ({wall:.1f} s of wall time; the phases summed over the workers):",
              file=sys.stderr)
    else:
        print(f"where the time went ({wall:.1f} s):", file=sys.stderr)
    for name, seconds, share in timing.breakdown(account, None if workers_of is not None else wall):
        print(f"  {name:34s} {seconds:8.1f} s {'' if share is None else f'{share:5.0%}'}", file=sys.stderr)


def _with_storage(study, url: str | None):
    """The study with its storage replaced by a --storage URL (checked like the YAML key)."""
    from dataclasses import replace

    from ablate.study.storage import storage_option

    return study if url is None else replace(study, storage=storage_option(url))


def _resolve(target_arg: str, results: str, storage: str | None = None):
    """A results folder or a study YAML → (Study, its results folder), after opening its store
    read-only; errors name the fix. Nothing is written."""
    from dataclasses import replace

    from ablate.run.store import is_local, read_store
    from ablate.study.loader import load_study

    target = Path(target_arg)
    if os.path.isdir(target):
        if not (target / "study.yaml").is_file():
            raise UserError(f"{target}: not a results folder (no study.yaml); "
                            "run the study first with `ablate run STUDY.yaml`.")
        study = replace(load_study(target / "study.yaml"), path=str(target / "study.yaml"))
        out_dir = target
    else:
        study = load_study(target)
        out_dir = Path(results) / study.name
    study = _with_storage(study, storage)
    if is_local(study) and not os.path.isfile(out_dir / "study.db"):
        raise UserError(f"{target}: no results yet in {out_dir} (no study.db); run "
                        f"`ablate run {study.path}` first, or give --storage URL when the study "
                        "was run with one.")
    read_store(study, out_dir)
    return study, out_dir


def _report(args) -> int:
    from ablate.analysis.report import build_report

    study, out_dir = _resolve(args.target, args.results, args.storage)
    print(f"report: {build_report(study, out_dir)}")
    return 0


def _compare(args) -> int:
    from ablate.analysis.compare import build_comparison

    if len(args.targets) < 2:
        raise UserError("compare: give two or more results folders or study YAMLs, "
                        "e.g. `ablate compare results/quick results/quick_fashion`.")
    pairs = [_resolve(t, args.results, args.storage) for t in args.targets]
    folders = [str(Path(folder).resolve()) + (s.storage if s.storage != "sqlite" else "") for s, folder in pairs]
    if len(set(folders)) != len(folders):
        raise UserError(f"compare: a results folder is given twice ({', '.join(args.targets)}); "
                        "give two or more different studies or runs.")
    names = [s.name for s, _ in pairs]
    labels = names if len(set(names)) == len(names) else [f"{s.name} ({folder})" for s, folder in pairs]
    out = Path(args.out) if args.out else Path(args.results) / ("compare-" + "-".join(names))
    writable_folder(out, "--out" if args.out else "--results")
    print(f"report: {build_comparison(pairs, out, labels)}")
    return 0


def _status(args) -> int:
    from ablate.run.status import lines, progress
    from ablate.run.store import Backend

    study, out_dir = _resolve(args.target, args.results, args.storage)
    print("\n".join(lines(study, progress(study, Backend(study, out_dir).reader()))))
    return 0


def _target_args(p: argparse.ArgumentParser) -> None:
    """A study named by its results folder or its YAML, and where its store is."""
    p.add_argument("target", help="a results folder (results/<name>) or the study YAML")
    p.add_argument("--results", default="results", help="results root when TARGET is a YAML")
    p.add_argument("--storage", metavar="URL", help="the study's store when it is not the "
                   "results folder's study.db (as given to `ablate run --storage`)")


def _member_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", metavar="RESULTS_DIR", help="a results folder (results/<name>)")
    p.add_argument("--trial", type=int, required=True, help="the trial (runs.csv: trial)")
    p.add_argument("--seed", type=int, required=True, help="the member's seed (runs.csv: seed)")


def _results_dir(path: str) -> Path:
    folder = Path(path)
    if not (folder / "study.yaml").is_file():
        raise UserError(f"{folder}: not a results folder (no study.yaml); give results/<name> "
                        "of a study that `ablate run` trained.")
    return folder


def _export(args) -> int:
    from ablate.training.kept import export

    writable_file(Path(args.out), "-o", f"t{args.trial}-s{args.seed}.pt")
    print(f"exported: {export(_results_dir(args.results), args.trial, args.seed, Path(args.out))}")
    return 0


def _sample(args) -> int:
    from ablate.analysis.plots import sample_grid
    from ablate.training.kept import prior_samples

    if args.n < 1:
        raise UserError(f"sample: -n must be at least 1, got {args.n}.")
    if not 0 <= args.noise_seed < 2**64:
        raise UserError(f"sample: --noise-seed must be a whole number from 0 to 2**64 - 1, got "
                        f"{args.noise_seed}.")
    writable_file(Path(args.out), "-o", f"t{args.trial}-s{args.seed}.png")
    images, shape = prior_samples(_results_dir(args.results), args.trial, args.seed, args.n,
                                  args.noise_seed)
    if len(shape) != 3:
        raise UserError(f"sample: the data of {args.results} are rows of {shape[0]} values, not "
                        "images; `ablate export` the member and decode draws of your own.")
    title = f"{Path(args.results).name}: trial {args.trial}, seed {args.seed}, {args.n} prior samples"
    print(f"samples: {sample_grid(images, shape, title, Path(args.out))}")
    return 0


def _list(args) -> int:
    if args.what == "activations":
        from ablate.nets.activations import ACTIVATIONS

        for name in ACTIVATIONS:
            act = ACTIVATIONS.get(name)
            learn = " (learnable)" if act.learnable else ""
            print(f"{name:<12} init={act.init:<8} {act.description}{learn}")
        print("\nAlso: any package.module:Factory returning an elementwise torch module.")
    else:
        from ablate.data.datasets import COMMON_OPTIONS, DATASET_OPTIONS

        for name, options in DATASET_OPTIONS.items():
            print(f"{name:<14} options: {', '.join([*options, *COMMON_OPTIONS, 'label'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": _run, "report": _report, "compare": _compare, "status": _status, "export": _export,
               "sample": _sample, "list": _list}[args.command]
    try:
        return handler(args)
    except UserError as exc:
        print(f"ablate: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ablate: interrupted; run the same command again to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED
