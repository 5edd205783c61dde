"""`prunelora` command line: run, train, unlearn, evaluate, export, report, tune, verify, list. Each subcommand calls the Python API.

It starts fast: this module imports no PyTorch (nor timm, peft, scikit-learn, matplotlib). `--help`, `--version`,
`list` and every mistake in the settings answer before PyTorch is imported; a command imports it once its config,
checkpoint and output folder are checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from . import __version__
from . import config as C
from .errors import UserError
from .store.files import check_cache_dir, check_outputs, to_json
from .store.lock import out_lock
from .workflows.resolve import check_out, resolve_config


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2, like every other user error
        raise UserError(f"{message} (see '{self.prog} --help')")


def _common(p: argparse.ArgumentParser, out_help: str) -> None:
    p.add_argument("--config", help="YAML experiment file (values only)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or per-step lines")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. seed=1 forget.classes=[3]")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunelora", description="Machine unlearning of image classifiers: PruneLoRA and baselines.")
    parser.add_argument("--version", action="version", version=f"prunelora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="train the original, run every method, print the comparison table")
    _common(p, "output directory (default: runs/<date-time>); started again, a run continues where it stopped")
    p.add_argument("--force", action="store_true",
                   help="start over: remove what an earlier run wrote in --out (results, reports, plots, progress/, "
                        "models/), whatever its config")
    p = sub.add_parser("train", help="train the original model and save it")
    _common(p, "output directory (default: runs/original)")
    p.add_argument("--force", action="store_true", help="replace a model of another config in --out")
    p = sub.add_parser("unlearn", help="unlearn a saved model with one method")
    _common(p, "output directory (default: runs/unlearn-<method>)")
    p.add_argument("--checkpoint", required=True, help="model.safetensors written by prunelora train")
    p.add_argument("--method", required=True, help="method name (see prunelora list)")
    p = sub.add_parser("evaluate", help="metrics of a saved model for a forget request")
    _common(p, "write the metrics to this JSON file")
    p.add_argument("--checkpoint", required=True, help="a .safetensors file written by prunelora")
    p = sub.add_parser("export", help="write one method's model of a run (saved with save_models=true) as a file")
    p.add_argument("--run", required=True, help="the --out directory of a prunelora run")
    p.add_argument("--method", required=True, help="method (or variant) name")
    p.add_argument("--out", required=True, help="the .safetensors file to write (its config goes beside it), outside the run")
    p.add_argument("--seed", type=int, help="which seed, for a run with several (a run of one seed takes only its own)")
    p = sub.add_parser("report", help="merge runs into one table (markdown, CSV, LaTeX) with plots")
    p.add_argument("runs", nargs="+", metavar="DIR", help="directories written by prunelora run")
    p.add_argument("--out", help="where to write report.md/.csv/.tex and the PNGs (default: the first DIR)")
    p = sub.add_parser("tune", help="search a method's hyper-parameters on a validation split (never the test set)")
    _common(p, "output directory (default: runs/tune-<method>); started again, the tune continues its study")
    p.add_argument("--method", required=True, help="method name (see prunelora list: each shows what it tunes)")
    p.add_argument("--trials", type=int, help="trials in all, those of an interrupted tune included "
                   "(default 20 when --seconds is not given)")
    p.add_argument("--seconds", type=float, help="stop starting trials after this many seconds (this session)")
    p = sub.add_parser("verify", help="check a deletion and write a receipt (JSON, Markdown); exit 1 if a check fails")
    p.add_argument("--before", required=True, help="the model before the deletion (.safetensors written by prunelora)")
    p.add_argument("--after", required=True, help="the model after it")
    p.add_argument("--request", required=True,
                   help='the deletion request: a JSON file {"classes": [...]} or {"indices": [...]}, or a list of '
                        "train-set indices")
    p.add_argument("--reference", help="a model retrained without the forget samples, to compare with (optional)")
    p.add_argument("--config", help="YAML file of settings (e.g. the verify thresholds)")
    p.add_argument("--out", help="folder for receipt.json and receipt.md (default: runs/verify-<date-time>)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the verdict line")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. verify.mia_max=55 (thresholds: README)")
    sub.add_parser("list", help="methods, models, data sets and evidence metrics")
    parser.commands = dict(sub.choices)  # name -> sub-parser, for intermixed parsing in main()
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Options and KEY=VALUE overrides in any order (`run seed=1 -q methods=lora` works)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in parser.commands:
        args = parser.commands[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)  # --help, or an unknown command


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        return {"run": cmd_run, "train": cmd_train, "unlearn": cmd_unlearn, "evaluate": cmd_evaluate, "export": cmd_export,
                "report": cmd_report, "tune": cmd_tune, "verify": cmd_verify, "list": cmd_list}[
            args.command
        ](args)
    except UserError as err:
        print(f"prunelora: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a diverging loss: no traceback, but not a success either
        advice = "" if "learning rate" in str(err) else "; lower the learning rate (train.lr / unlearn.lr)"
        print(f"prunelora: error: {err}{advice}", file=sys.stderr)  # the advice once, if the message lacks it
        return 1
    except OSError as err:  # the disk or the file system failed us: every file written so far is whole
        where = f": '{err.filename}'" if err.filename else ""
        print(f"prunelora: error: {err.strerror or err}{where}; files written before are complete, nothing is half "
              "written; free space or fix permissions, then run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunelora: interrupted", file=sys.stderr)
        return 130
    finally:
        dist = sys.modules.get(f"{__package__}.engine.dist")  # only a command that imported it may have a process group
        if dist is not None:
            dist.shutdown()


def _log(args):
    return (lambda *a, **k: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def cmd_run(args) -> int:
    cfg = resolve_config(C.load_config(args.config, args.overrides))
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    check_out(cfg, out)
    check_cache_dir()  # before PyTorch: a file named as the cache would silently mean none

    from .engine import dist
    from .report.tables import completed, failures, main_table
    from .workflows.run import run

    results = run(cfg, out, progress=not args.quiet, log=_log(args), force=args.force)
    failed = failures(results)
    if dist.world().main:  # one voice under torchrun
        print(main_table(completed(results)))
        if failed:
            print("\n" + failed)
        print(f"\nwrote {out}/results.json, results.md, config.yaml", file=sys.stderr)
    return 1 if failed else 0


def cmd_train(args) -> int:
    cfg = resolve_config(C.load_config(args.config, args.overrides))
    out = Path(args.out or "runs/original")
    check_out(cfg, out)

    from .api import train

    record = train(cfg, out, progress=not args.quiet, force=args.force)
    print(f"test accuracy {record['test_acc']:.2f}% in {record['time_s']:.1f} s; wrote {out}/model.safetensors")
    return 0


def cmd_unlearn(args) -> int:
    from .api import unlearn  # checks the checkpoint, its config and --out before it imports PyTorch

    out = Path(args.out or f"runs/unlearn-{args.method}")
    metrics = unlearn(args.checkpoint, args.method, out, args.overrides, config_file=args.config, progress=not args.quiet)
    print(to_json(metrics))
    print(f"wrote {out}/model.safetensors, metrics.json", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .api import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.overrides, config_file=args.config, out=args.out)
    print(to_json(metrics))
    return 0


def cmd_export(args) -> int:
    from .api import export

    print(to_json(export(args.run, args.method, args.out, args.seed)))
    return 0


def cmd_report(args) -> int:
    from .report.merge import load_runs, setups_note  # reads and checks every results.json without PyTorch
    from .report.summary import summary_rows, to_markdown
    from .store.files import check_out_dir, check_outputs

    out = Path(args.out or args.runs[0])
    check_out_dir(out)
    check_outputs(out, ("report.md", "report.csv", "report.tex", "bars.png", "curves.png", "tofu.png"))
    results = load_runs(args.runs)

    from .report.write import write_report  # matplotlib, and PyTorch for the set-ups: once the inputs are checked

    written = write_report(results, out)
    print(to_markdown(summary_rows(results)))
    if note := setups_note(results):
        print(note, file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def cmd_tune(args) -> int:
    from .workflows.tune import tune

    cfg = C.load_config(args.config, args.overrides)
    out = Path(args.out or f"runs/tune-{args.method}")
    check_cache_dir()
    check_outputs(out, ("best.yaml", "trials.csv", "trials.md", "tune.json", "tune.db"))
    with out_lock(out):  # one tune per --out: two would write one study's files
        summary = tune(cfg, args.method, out, args.trials, args.seconds, progress=not args.quiet, log=_log(args))
    print(tune_summary(summary))
    print(f"wrote {out}/best.yaml (prunelora run --config {out}/best.yaml), trials.csv, trials.md, tune.json",
          file=sys.stderr)
    return 0


def tune_summary(summary: dict) -> str:
    """The lines `prunelora tune` prints: the winner, its validation scores, and what tuning cost beside the method."""
    best, m = summary["best"], summary["best"]["metrics_on_validation"]
    settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
    lines = [(f"best of {summary['trials']} trials ({summary['diverged']} diverged): {summary['objective']} "
              f"{best['value']:.2f} at trial {best['trial']}: {settings}"),
             "validation (mean over seeds {}): UA {:.2f}  MIA {:.2f}  RA {:.2f}  retain-val acc {:.2f}  forget-val acc {:.2f}"
             .format(summary["seeds"], *(m[k] if m[k] is not None else float("nan") for k in ("UA", "MIA", "RA", "TA", "forget_TA")))]
    lines.append(f"cost: the method {summary['method_seconds_per_run']:.1f} s per run; tuning it took "
                 f"{summary['tuning_seconds']:.0f} s ({summary['setup_seconds']:.0f} s of it the validation original and retrain)")
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from .workflows.verify import receipt_markdown, verify

    out = Path(args.out or f"runs/verify-{time.strftime('%Y%m%d-%H%M%S')}")
    receipt = verify(args.before, args.after, args.request, out, args.reference, args.overrides, args.config)
    failed = [c["name"] for c in receipt["checks"] if not c["passed"]]
    if not args.quiet:
        print(receipt_markdown(receipt))
    print(f"{'FAIL: ' + ', '.join(failed) if failed else 'PASS'}; wrote {out}/receipt.json, receipt.md",
          file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args) -> int:
    from .data.catalog import DATASETS
    from .methods.catalog import METHODS
    from .metrics.catalog import EVIDENCE, declared
    from .models import MODELS, target_presets

    print("methods (settings: hparams.<method>.<key>; each can also set epochs, lr, optimizer, batch_size,")
    print("weight_decay and bn, by default the unlearn section's):")
    for name in METHODS:
        spec = METHODS.get(name)
        print(f"  {name:<18} {spec.summary}" + ("; images and text" if "text" in spec.modalities else ""))
        settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec.config()).items() if v is not None)
        if settings:
            print(f"  {'':<18}   {settings}")
        if spec.config.space:
            print(f"  {'':<18}   tunes: {', '.join(spec.config.space)}")
    print("models:")
    for name in MODELS:
        spec = MODELS.get(name)
        presets = ", ".join(target_presets(spec.family))
        print(f"  {name:<18} {spec.description} (targets: {presets})")
    print("  timm:<name>        any timm architecture (model.pretrained=true fetches weights; targets: paper)")
    print("data sets:")
    for name in DATASETS:
        print(f"  {name:<18} {DATASETS.get(name).summary}")
    print("evidence metrics (eval.evidence):")
    for name in EVIDENCE:
        print(f"  {name:<18} {EVIDENCE.get(name).summary}")
    for modality in ("image", "text"):
        print(f"metrics of {modality} runs (table: column; which is better):")
        for metric in declared(modality):
            better = "closest to retrain" if metric.better == "retrain" else metric.better
            needs = ", against retrain" if metric.reference else ""
            print(f"  {metric.key:<19} {metric.table}: {metric.header} ({better}{needs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
