"""The command line starts without PyTorch: importing the package and its CLI, `--help`, `--version`, `list` and a
mistake in the settings (of a run, or of a checkpoint's) never import torch, timm, peft, scikit-learn or matplotlib,
which took most of the 16 s `prunelora --help` once needed. Run in a fresh interpreter, since this one has them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("torch", "timm", "peft", "sklearn", "matplotlib", "safetensors", "optuna", "transformers", "tokenizers",
         "rouge_score", "scipy")

SCRIPT = textwrap.dedent("""
    import contextlib, io, json, sys

    heavy = {heavy!r}
    loaded = lambda: sorted(m for m in heavy if m in sys.modules)
    import prunelora
    import prunelora.cli
    after = {{"import": loaded()}}
    out, err = io.StringIO(), io.StringIO()
    codes = {{}}
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for argv in {commands!r}:
            try:
                codes[" ".join(argv)] = prunelora.cli.main(argv)
            except SystemExit as exit_:
                codes[" ".join(argv)] = exit_.code
            after[" ".join(argv)] = loaded()
    prunelora.load_config  # a public name, imported when first used
    after["load_config"] = loaded()
    print(json.dumps({{"loaded": after, "codes": codes, "out": out.getvalue()}}))
""")


def test_the_command_line_answers_without_pytorch(tmp_path, checkpoint):
    commands = [
        ["--help"], ["--version"], ["list"],
        ["run", "--out", str(tmp_path / "a"), "seed=-1"],
        ["train", "--out", str(tmp_path / "b"), "methods=prunlora"],
        ["run", "--out", str(tmp_path / "c"), "hparams.salun.share=2"],
        ["run", "--config", str(tmp_path)],
        ["evaluate", "--checkpoint", str(checkpoint), "unlearn.lr=.inf"],
        ["unlearn", "--checkpoint", str(checkpoint), "--method", "prunelora", "--out", str(checkpoint.parent)],
        ["tune", "--method", "ssd", "--trials", "0", "--out", str(tmp_path / "d")],
        ["run", "--out", str(tmp_path / "e"), "data.name=authors", "forget.classes=[Nobody Atall]"],
        ["run", "--out", str(tmp_path / "f"), "data.name=authors", "methods=[scrub]"],
    ]
    script = SCRIPT.format(heavy=HEAVY, commands=commands)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["codes"] == {"--help": 0, "--version": 0, "list": 0, **{" ".join(a): 2 for a in commands[3:]}}
    assert "methods (settings:" in report["out"] and "usage: prunelora" in report["out"]
    assert report["loaded"] == {step: [] for step in report["loaded"]}, report["loaded"]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_public_names_load_when_used():
    script = ("import prunelora, sys; before = 'torch' in sys.modules; run = prunelora.run; "
              "print(before, run.__module__, 'torch' in sys.modules, 'run' in dir(prunelora))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["False", "prunelora.workflows.run", "True", "True"]
