"""`prunelora` command line: run, train, unlearn, evaluate, export, report, list. Each subcommand calls the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from . import config as C
from .errors import UserError


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
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("run", help="train the original, run every method, print the comparison table")
    _common(p, "output directory (default: runs/<date-time>); started again, a run continues where it stopped")
    p.add_argument("--force", action="store_true", help="start over in an --out that holds a run of another config")
    _common(sub.add_parser("train", help="train the original model and save it"), "output directory (default: runs/original)")
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
    p.add_argument("--out", required=True, help="the .safetensors file to write (its config goes beside it)")
    p.add_argument("--seed", type=int, help="which seed, for a run with several")
    p = sub.add_parser("report", help="merge runs into one table (markdown, CSV, LaTeX) with plots")
    p.add_argument("runs", nargs="+", metavar="DIR", help="directories written by prunelora run")
    p.add_argument("--out", help="where to write report.md/.csv/.tex and the PNGs (default: the first DIR)")
    sub.add_parser("list", help="methods, models and data sets")
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
        return {"run": cmd_run, "train": cmd_train, "unlearn": cmd_unlearn, "evaluate": cmd_evaluate, "export": cmd_export, "report": cmd_report, "list": cmd_list}[
            args.command
        ](args)
    except UserError as err:
        print(f"prunelora: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a diverging loss: no traceback, but not a success either
        print(f"prunelora: error: {err}; lower the learning rate (train.lr / unlearn.lr)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunelora: interrupted", file=sys.stderr)
        return 130
    finally:
        from . import dist

        dist.shutdown()


def _log(args):
    return (lambda *a, **k: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def cmd_run(args) -> int:
    from .report.tables import completed, failures, main_table
    from .runner import run

    cfg = C.load_config(args.config, args.overrides)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    from . import dist

    results = run(cfg, out, progress=not args.quiet, log=_log(args), force=args.force)
    failed = failures(results)
    if dist.world().main:  # one voice under torchrun
        print(main_table(completed(results)))
        if failed:
            print("\n" + failed)
        print(f"\nwrote {out}/results.json, results.md, config.yaml", file=sys.stderr)
    return 1 if failed else 0


def cmd_train(args) -> int:
    from .api import train

    cfg = C.load_config(args.config, args.overrides)
    out = Path(args.out or "runs/original")
    record = train(cfg, out, progress=not args.quiet)
    print(f"test accuracy {record['test_acc']:.2f}% in {record['time_s']:.1f} s; wrote {out}/model.safetensors")
    return 0


def cmd_unlearn(args) -> int:
    from .api import unlearn

    out = Path(args.out or f"runs/unlearn-{args.method}")
    metrics = unlearn(args.checkpoint, args.method, out, args.overrides, config_file=args.config, progress=not args.quiet)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}/model.safetensors, metrics.json", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .api import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, args.overrides, config_file=args.config, out=args.out)
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_export(args) -> int:
    from .api import export

    print(json.dumps(export(args.run, args.method, args.out, args.seed), indent=2))
    return 0


def cmd_report(args) -> int:
    from .report.merge import load_runs, setups_note
    from .report.summary import summary_rows, to_markdown
    from .report.write import write_report

    results = load_runs(args.runs)
    out = Path(args.out or args.runs[0])
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; pass a directory")
    written = write_report(results, out)
    print(to_markdown(summary_rows(results)))
    if note := setups_note(results):
        print(note, file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from .data import DATASETS
    from .methods import METHODS
    from .models import MODELS, target_presets

    print("methods (settings: hparams.<method>.<key>; each can also set epochs, lr, optimizer, batch_size,")
    print("weight_decay and bn, by default the unlearn section's):")
    for name in METHODS:
        spec = METHODS.get(name)
        print(f"  {name:<16} {spec.summary}")
        settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(spec.config()).items() if v is not None)
        if settings:
            print(f"  {'':<16}   {settings}")
    print("models:")
    for name in MODELS:
        spec = MODELS.get(name)
        presets = ", ".join(target_presets(spec.family))
        print(f"  {name:<16} {spec.description} (targets: {presets})")
    print("  timm:<name>      any timm architecture (model.pretrained=true fetches weights; targets: paper)")
    print("data sets:")
    for name in DATASETS:
        doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()[0]
        print(f"  {name:<16} {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
