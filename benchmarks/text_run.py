"""Speed of the default text run (`data.name=authors`) on this machine, in seconds of the reference machine, and our
training engine against Hugging Face's Trainer on the same training (the original's).

1. this machine's fp32 matmul rate on `--threads` threads (1024x1024, best of 3), right before and after the run;
   reference seconds = wall x rate / 311.5 (311.5 GFLOP/s: the 2-core Xeon that recorded docs/results.md);
2. the default text run (`prunelora run data.name=authors cache=false threads=N`: the original and retrain trained,
   not loaded; N = --threads, 2 as on the reference), timed whole, with each training's and method's seconds and evaluation as the rest, against the target
   of 150 reference seconds (aim: 100);
3. the original's training for `--epochs` epochs with our engine (`engine.loop.fit`) and with `transformers.Trainer`
   (same data, initial weights, batch, AdamW, warm-up-cosine schedule, clipping; fp32, CPU): seconds per epoch,
   ours / Trainer's (target <= 0.8), each one's training loss, and the dense floor (6 x parameters x non-pad tokens
   per epoch / matmul rate).

    python benchmarks/text_run.py [--out DIR] [--epochs 3] [--repeats 2] [--skip-run] [--json PATH] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from throughput import matmul_gflops

from prunelora.config import load_config
from prunelora.engine.context import Context, seed_everything
from prunelora.engine.loop import fit, recipe_from
from prunelora.models import create_model
from prunelora.workflows.experiment import prepare, resolve_config
from prunelora.workflows.run import run

REFERENCE_GFLOPS = 311.5  # fp32 matmul rate of the 2-core Xeon that recorded docs/results.md, GFLOP/s
TARGET_S, AIM_S = 150.0, 100.0  # the default text run, in reference seconds
RATIO_TARGET = 0.8  # our seconds per epoch / the Trainer's
TEXT = ["data.name=authors"]
SCHEDULE = "cosine_with_min_lr, min_lr_rate 0.1, warmup_steps 0.05 (a share of the steps)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`argv`, default sys.argv[1:]); a non-positive count is an error."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="the run's output folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the engine-vs-Trainer comparison")
    parser.add_argument("--skip-run", action="store_true", help="only the matmul rate and the engine-vs-Trainer part")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for everything (the reference had 2)")
    parser.add_argument("--optim", default="adamw_torch_fused",
                        help="the Trainer's optimizer (its default; adamw_torch is the unfused one ours uses)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="engine-vs-Trainer pairs, taken in turn (best of each counts)")
    parser.add_argument("--json", default="benchmarks/text_run.json", help="where the figures go, as JSON")
    parser.add_argument("overrides", nargs="*", help="extra KEY=VALUE config overrides for both parts")
    args = parser.parse_args(argv)
    if min(args.epochs, args.threads, args.repeats) < 1:
        parser.error("--epochs, --threads and --repeats must be positive")
    return args


def matmul_rate(tries: int = 3) -> float:
    """Best of `tries` 1024x1024 fp32 matmul rates (each a loop of 20), GFLOP/s, on the current threads."""
    return max(matmul_gflops() for _ in range(tries))


def reference_seconds(wall_s: float, rate_gflops: float) -> float:
    """Seconds on this machine as seconds on the reference machine (scaled by matmul rate)."""
    return wall_s * rate_gflops / REFERENCE_GFLOPS


def breakdown(results: dict, wall_s: float) -> dict:
    """The run's time by part: each entry's training / method seconds, its loop's seconds per epoch and its one-off
    seconds, and evaluation as wall - the sum of those (everything outside the timed steps: data, scoring, evidence
    metrics, writing)."""
    rows = []
    for r in results["runs"]:
        m = r.get("metrics") or {}
        label = f"training ({r['method']})" if r["method"] in ("original", "retrain") else r["method"]
        rows.append({"part": label, "time_s": m.get("time_s", 0.0), "loop_s_per_epoch": m.get("loop_s_per_epoch"),
                     "one_off_s": m.get("one_off_s"), "error": r.get("error")})
    steps = sum(row["time_s"] for row in rows)
    return {"rows": rows, "steps_s": steps, "evaluation_s": wall_s - steps, "wall_s": wall_s}


def timed_run(overrides: list[str], out: str | None) -> dict:
    """The default text run (original and retrain trained, no cache), timed; its breakdown."""
    cfg = load_config(overrides=[*TEXT, "cache=false", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        results = run(cfg, out or tmp, progress=False, log=lambda *a, **k: print("  " + " ".join(map(str, a))))
        wall = time.perf_counter() - start  # seconds
    return breakdown(results, wall)


class Rows(torch.utils.data.Dataset):
    """Each train row as the Trainer reads it: {"input_ids", "labels"}, right padding stripped."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor, pad_id: int):
        lengths = (ids != pad_id).sum(1).tolist()
        self.items = [{"input_ids": i[:n], "labels": lab[:n]} for i, lab, n in zip(ids, labels, lengths)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate(items: list[dict], pad_id: int) -> dict:
    """A batch padded to its longest row: input_ids with `pad_id`, labels with -100, attention_mask 1 on tokens."""
    width = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = len(it["input_ids"])
        ids[row, :n], labels[row, :n], mask[row, :n] = it["input_ids"], it["labels"], 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def dense_floor(params: int, tokens: int, rate_gflops: float) -> float:
    """Seconds per epoch at the matmul rate for 6 x parameters FLOPs per token (forward 2, backward 4)."""
    return 6 * params * tokens / (rate_gflops * 1e9)


def engine_epochs(model, data, cfg, epochs: int) -> dict:
    """Our engine (`fit`) on every train row for `epochs` epochs: seconds per epoch (wall of fit / epochs, each
    epoch's own, and the process's CPU seconds / epochs), last epoch's and mean training loss."""
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    recipe = dataclasses.replace(recipe_from(cfg.train), epochs=epochs)
    start, cpu = time.perf_counter(), time.process_time()
    history = fit(model, data, torch.arange(len(data.y_train)), recipe, ctx)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu  # seconds
    return {"s_per_epoch": wall / epochs, "cpu_s_per_epoch": cpu / epochs,
            "epoch_seconds": [h["seconds"] for h in history],
            "loss_last_epoch": history[-1]["loss"], "loss_mean": sum(h["loss"] for h in history) / epochs}


def trainer_epochs(model, data, cfg, epochs: int, optim: str) -> dict:
    """Hugging Face's Trainer on the same rows, recipe and weights: seconds per epoch (wall of train() / epochs,
    and the process's CPU seconds / epochs) and its training loss (the mean over every step)."""
    from transformers import Trainer, TrainingArguments

    train = cfg.train
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=epochs, per_device_train_batch_size=train.batch_size,
            learning_rate=train.lr, weight_decay=train.weight_decay, optim=optim,
            lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1}, warmup_steps=0.05,
            max_grad_norm=train.clip or 0.0, use_cpu=True, seed=0, report_to=[], save_strategy="no",
            logging_strategy="no", eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        )
        pad = data.pad_id
        trainer = Trainer(model=model, args=args, train_dataset=Rows(data.x_train, data.labels_train, pad),
                          data_collator=lambda items: collate(items, pad))
        start, cpu = time.perf_counter(), time.process_time()
        out = trainer.train()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu  # seconds
    return {"s_per_epoch": wall / epochs, "cpu_s_per_epoch": cpu / epochs, "loss_mean": out.training_loss,
            "optim": optim, "schedule": SCHEDULE}


def engine_vs_trainer(overrides: list[str], epochs: int, optim: str, repeats: int) -> dict:
    """The original's training with ours and with the Trainer, from one set of initial weights (seed 0), `repeats`
    times in turn (ours first, then the Trainer first, ...: a busy machine slows both alike); the best of each
    counts. The matmul rate is taken after each training, to show how busy the machine was."""
    cfg = resolve_config(load_config(overrides=[*TEXT, *overrides]))
    data, _ = prepare(cfg)
    seed_everything(0)
    base = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    params = sum(p.numel() for p in base.parameters())  # tied embedding / head counted once
    tokens = int((data.x_train != data.pad_id).sum())  # prompt + answer + EOS tokens per epoch
    train = {"ours": lambda: engine_epochs(copy.deepcopy(base), data, cfg, epochs),
             "trainer": lambda: trainer_epochs(copy.deepcopy(base), data, cfg, epochs, optim)}
    tries, rates = {"ours": [], "trainer": []}, []  # rates in GFLOP/s
    for i in range(repeats):
        for name in (("ours", "trainer") if i % 2 == 0 else ("trainer", "ours")):
            tries[name].append(train[name]())
            rates.append(matmul_rate())
    best = {k: min(v, key=lambda t: t["s_per_epoch"]) for k, v in tries.items()}
    return {"epochs": epochs, "repeats": repeats, "rows": len(data.y_train), "batch_size": cfg.train.batch_size,
            "params": params, "tokens_per_epoch": tokens, "matmul_gflops_after_each": rates,
            "dense_floor_s_per_epoch": dense_floor(params, tokens, max(rates)), **best,
            "tries_s_per_epoch": {k: [t["s_per_epoch"] for t in v] for k, v in tries.items()},
            "ratio": best["ours"]["s_per_epoch"] / best["trainer"]["s_per_epoch"]}


def summary(record: dict) -> str:
    """The figures as compact markdown."""
    env, rates = record["environment"], record["matmul_gflops"]
    shown = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
    lines = [(f"**{env['cpu']}**, {env['threads']} threads, torch {env['torch']}, transformers {env['transformers']}; "
              f"fp32 matmul GFLOP/s: {shown}"), ""]
    if (r := record.get("run")) is not None:
        lines += ["| part | s | loop s/epoch | one-off s |", "|---|---:|---:|---:|"]
        for row in r["rows"]:
            per = "-" if row.get("loop_s_per_epoch") is None else f"{row['loop_s_per_epoch']:.2f}"
            once = "-" if row.get("one_off_s") is None else f"{row['one_off_s']:.1f}"
            lines.append(f"| {row['part']}{' (failed)' if row['error'] else ''} | {row['time_s']:.1f} | {per} "
                         f"| {once} |")
        verdict = "PASS" if r["reference_s"] <= TARGET_S else "MISS"
        lines += [f"| evaluation (wall - the above) | {r['evaluation_s']:.1f} | | |",
                  f"| **total** | **{r['wall_s']:.1f}** | | |", "",
                  (f"total: {r['wall_s']:.1f} s wall = **{r['reference_s']:.1f} reference s** at "
                   f"{r['matmul_gflops']:.1f} GFLOP/s (target {TARGET_S:.0f}, aim {AIM_S:.0f}): {verdict}"), ""]
    c = record["engine_vs_trainer"]
    ours, theirs = c["ours"], c["trainer"]
    tries = "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in c["tries_s_per_epoch"].items())
    verdict = "PASS" if c["ratio"] <= RATIO_TARGET else "MISS"
    lines += [(f"original's training, {c['epochs']} epochs of {c['rows']} rows, batch {c['batch_size']} "
               f"({c['params']:,} params, {c['tokens_per_epoch']:,} tokens/epoch), best of {c['repeats']}:"), "",
              "| | s/epoch | CPU s/epoch | loss (mean over steps) | loss (last epoch) |", "|---|---:|---:|---:|---:|",
              (f"| ours (engine.fit) | {ours['s_per_epoch']:.2f} | {ours['cpu_s_per_epoch']:.2f} "
               f"| {ours['loss_mean']:.3f} | {ours['loss_last_epoch']:.3f} |"),
              (f"| HF Trainer ({theirs['optim']}) | {theirs['s_per_epoch']:.2f} | {theirs['cpu_s_per_epoch']:.2f} "
               f"| {theirs['loss_mean']:.3f} | - |"),
              f"| dense floor (6 x params x tokens / matmul) | {c['dense_floor_s_per_epoch']:.2f} | | | |", "",
              (f"ours / Trainer's: **{c['ratio']:.2f}x** wall (target <= {RATIO_TARGET}): {verdict}; CPU time "
               f"{ours['cpu_s_per_epoch'] / theirs['cpu_s_per_epoch']:.2f}x"),
              (f"each try, s/epoch: {tries}; matmul GFLOP/s after each: "
               + ", ".join(f"{g:.0f}" for g in c["matmul_gflops_after_each"])),
              f"Trainer schedule: {theirs['schedule']}; ours: warmup_cosine (5% warm-up, cosine to 10%)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import transformers

    torch.set_num_threads(args.threads)
    from prunelora.store.environment import cpu_name

    env = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
           "transformers": transformers.__version__}
    print(f"{env['cpu']}; {args.threads} threads", flush=True)
    rates = {"before": matmul_rate()}  # GFLOP/s
    record = {"environment": env, "matmul_gflops": rates, "overrides": args.overrides}
    if not args.skip_run:
        print("default text run ...", flush=True)
        record["run"] = timed_run([f"threads={args.threads}", *args.overrides], args.out)
        rates["after_run"] = matmul_rate()
        rate = (rates["before"] + rates["after_run"]) / 2  # GFLOP/s around the run
        record["run"].update(matmul_gflops=rate, reference_s=reference_seconds(record["run"]["wall_s"], rate))
    print(f"engine vs Trainer, {args.epochs} epochs x {args.repeats} ...", flush=True)
    record["engine_vs_trainer"] = engine_vs_trainer(args.overrides, args.epochs, args.optim, args.repeats)
    print("\n" + summary(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nfigures: {args.json}")


if __name__ == "__main__":
    main()
