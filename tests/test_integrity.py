"""What a run reads and writes stays what it claims to be: damaged cache entries and checkpoints are found by their
digest, a resumed run notices input files and data that changed under the same name, two commands never write one
--out (nor train one cache entry) at once, outputs that cannot be written and weights that are not finite are
refused before any work, and an unreadable progress entry runs again."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prunelora.cli import main
from prunelora.engine.context import Context
from prunelora.errors import UserError
from prunelora.store import cache
from prunelora.store.checkpoints import read_checkpoint, tensors_digest
from prunelora.store.lock import EntryLock, out_lock
from prunelora.store.resume import Progress, entry_problem, run_inputs
from prunelora.workflows.experiment import train_original

FAST = ["methods=[finetune]", "eval.curves=false", "eval.evidence=[]"]


@pytest.fixture
def cache_here(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELORA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _flip_data_byte(path: Path, fraction: float = 0.5) -> None:
    """Flip one byte inside the tensor data of a safetensors file (past its JSON header)."""
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    at = start + int((len(raw) - start) * fraction)
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


def _rewrite(path: Path, change, meta_change=None) -> None:
    """The file's tensors passed through `change`, its metadata kept (or changed by `meta_change`)."""
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not iterable)
    state = {k: change(k, v) for k, v in state.items()}
    save_file(state, str(path), metadata=meta_change(meta) if meta_change else meta)


def _one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prunelora: error: "), lines
    return lines[0]


# ---------------------------------------------------------------- 1. digests of cache entries and checkpoints


@pytest.mark.parametrize("damage", ["flipped-byte", "zeroed-weights"])
def test_a_damaged_cache_entry_is_said_and_trained_again(damage, cache_here, tiny_cfg, tiny_data, capsys):
    data, _ = tiny_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    first, _ = train_original(tiny_cfg, data, ctx)
    (path,) = cache_here.glob("original-*.safetensors")
    if damage == "flipped-byte":
        _flip_data_byte(path)
    else:  # same key, same names and shapes: only the values are gone
        _rewrite(path, lambda k, v: torch.zeros_like(v))
    capsys.readouterr()
    again, record = train_original(tiny_cfg, data, ctx)
    assert "cached" not in record  # retrained, not loaded
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"prunelora: model-cache entry '{path}' is damaged (its tensors do not match their SHA-256); "
                    "training it again")]
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    assert train_original(tiny_cfg, data, ctx)[1]["cached"]  # stored again, whole


def test_tensors_digest_covers_names_dtypes_shapes_and_bytes():
    state = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor(True)}
    digest = tensors_digest(state)
    for other in ({**state, "a": state["a"].reshape(3, 2)}, {**state, "a": state["a"].double()},
                  {"c": state["a"], "b": state["b"]}, {**state, "b": torch.tensor(False)}):
        assert tensors_digest(other) != digest
    assert tensors_digest({"b": state["b"], "a": state["a"].clone()}) == digest  # order of insertion does not count
    assert tensors_digest({"x": torch.zeros(0), "y": torch.ones(2, dtype=torch.bfloat16)})  # empty and bf16 hash


def test_a_damaged_checkpoint_is_refused_naming_it(checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    shutil.copy(checkpoint, bad)
    _flip_data_byte(bad, 0.9)
    with pytest.raises(UserError, match=f"checkpoint '{bad}' is damaged: its tensors do not match the SHA-256"):
        read_checkpoint(bad)
    for argv in (["evaluate", "--checkpoint", str(bad)],
                 ["unlearn", "--checkpoint", str(bad), "--method", "finetune", "--out", str(tmp_path / "u"), "-q"]):
        assert main(argv) == 2
        assert f"'{bad}' is damaged" in _one_error(capsys)
    assert not (tmp_path / "u").exists()


def test_a_checkpoint_from_before_digests_loads_with_a_warning(checkpoint, tmp_path, capsys):
    old = tmp_path / "old.safetensors"
    shutil.copy(checkpoint, old)
    _rewrite(old, lambda k, v: v, lambda meta: {k: v for k, v in meta.items() if k != "digest"})
    capsys.readouterr()
    state, _, _ = read_checkpoint(old)
    assert state.keys() == read_checkpoint(checkpoint)[0].keys()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prunelora: warning: checkpoint '{old}' has no digest")


# ---------------------------------------------------------------- 2. a run is the content of what it reads


def test_resume_refuses_a_forget_indices_file_changed_under_the_same_path(tmp_path, tiny_overrides, capsys):
    indices, out = tmp_path / "forget.txt", tmp_path / "run"
    indices.write_text("1 2 3 4 5\n")
    argv = ["run", "--out", str(out), "-q", *tiny_overrides, *FAST, f"forget.indices={indices}"]
    assert main(argv) == 0
    indices.write_text("6 7 8 9 10 11\n")  # same path, another forget set
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error(capsys)
    assert f"forget.indices file '{indices}' held other content" in line and "--force" in line
    assert main([*argv, "--force"]) == 0
    assert json.loads((out / "results.json").read_text())["data"]["sizes"]["forget"] == 6


def test_resume_refuses_data_or_model_init_of_other_content(tmp_path, tiny_cfg, tiny_data):
    """The recorded inputs: sha256 of model.init and of the data's tensors; one pixel or one byte changed is refused."""
    import dataclasses

    data, _ = tiny_data
    init = tmp_path / "init.bin"
    init.write_bytes(b"weights")
    cfg = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, init=str(init)))
    inputs = run_inputs(cfg, data)
    assert set(inputs) == {"model.init", "data"}
    out, config = tmp_path / "run", {"seed": 0}
    Progress(out, config, inputs=inputs).save(0, "x", {"method": "x"}, None)
    Progress(out, config, inputs=run_inputs(cfg, data))  # same content: resumes
    pixel = data.x_train.clone()
    pixel[0, 0, 0, 0] ^= 1
    with pytest.raises(UserError, match=r"whose data set \(built in\) held other content"):
        Progress(out, config, inputs=run_inputs(cfg, dataclasses.replace(data, x_train=pixel)))
    init.write_bytes(b"weightz")
    with pytest.raises(UserError, match=f"model.init file '{init}' held other content"):
        Progress(out, config, inputs=run_inputs(cfg, data))
    Progress(out, config, force=True, inputs=run_inputs(cfg, data))  # --force starts over


# ---------------------------------------------------------------- 3. locks

HOLD = textwrap.dedent("""
    import sys, time
    from prunelora.store.lock import EntryLock, out_lock
    if sys.argv[1] == "out":
        with out_lock(sys.argv[2]):
            print("held", flush=True)
            sys.stdin.read()
    else:  # hold a cache entry's lock, then store the entry (a copy of it) and let go
        lock = EntryLock(sys.argv[2])
        lock.acquire(wait=True)
        print("held", flush=True)
        time.sleep(float(sys.argv[5]))
        import os
        tmp = sys.argv[4] + ".part"
        with open(sys.argv[3], "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        os.replace(tmp, sys.argv[4])
        lock.release()
""")


def _holder(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["run", "train", "unlearn", "tune"])
def test_a_second_command_on_one_out_is_refused_naming_the_first(command, tmp_path, tiny_overrides, checkpoint,
                                                                  capsys, cache_here):
    out = tmp_path / "out"
    argv = {"run": ["run", *tiny_overrides], "train": ["train", *tiny_overrides],
            "unlearn": ["unlearn", "--checkpoint", str(checkpoint), "--method", "finetune"],
            "tune": ["tune", "--method", "ssd", "--trials", "1", *tiny_overrides]}[command]
    first = _holder("out", str(out))
    try:
        capsys.readouterr()
        assert main([*argv, "--out", str(out), "-q"]) == 2
        line = _one_error(capsys)
        assert f"--out '{out}' is in use by process {first.pid}" in line
        assert not cache_here.exists()  # refused before anything trained
    finally:
        first.communicate("")
    assert not out.exists()  # the first made it for its lock and left it empty
    with out_lock(out):  # free again
        assert (out / ".lock").read_text().strip() == str(os.getpid())
    assert not (out / ".lock").exists()


def test_only_rank_0_locks_the_out(tmp_path, monkeypatch):
    first = _holder("out", str(tmp_path / "out"))
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "1")
        with out_lock(tmp_path / "out"):  # rank 1 writes nothing there: it does not ask
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(UserError, match="is in use by"), out_lock(tmp_path / "out"):
            pass
    finally:
        first.communicate("")


def test_a_second_process_waits_for_the_cache_entry_the_first_trains(cache_here, tiny_cfg, tiny_data, capsys):
    data, _ = tiny_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    first, _ = train_original(tiny_cfg, data, ctx)
    (path,) = cache_here.glob("original-*.safetensors")
    saved = cache_here.parent / "entry.bin"
    path.rename(saved)  # the entry is missing until the other process "finishes training" it
    other = _holder("entry", str(path.with_suffix(".lock")), str(saved), str(path), "0.5")
    try:
        capsys.readouterr()
        model, record = train_original(tiny_cfg, data, ctx)
    finally:
        other.communicate("")
    assert record.get("cached")  # loaded what the other stored, not trained again
    assert capsys.readouterr().err.strip() == (f"prunelora: waiting for process {other.pid}, which is training "
                                               f"model-cache entry '{path}'")
    for a, b in zip(first.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert not path.with_suffix(".lock").exists()


def test_a_missed_entry_is_locked_until_stored(cache_here, tiny_cfg, tiny_data):
    """Between a miss and its store this process holds the entry's lock (another process would wait)."""
    data, _ = tiny_data
    ctx = Context(torch.device("cpu"), seed=0, progress=False)
    model, _ = train_original(tiny_cfg, data, ctx)
    key, described = cache.model_key("probe", tiny_cfg, 0, torch.arange(3), ctx, data)
    assert cache.load("probe", key, model) is None
    other = EntryLock(cache_here / f"probe-{key[:20]}.lock")
    assert not other.acquire(wait=False)
    cache.store("probe", key, described, model, {})
    assert other.acquire(wait=False)
    other.release()


# ---------------------------------------------------------------- 4. train over another config's model


def test_train_over_another_configs_model_is_refused_unless_forced(tmp_path, tiny_overrides, checkpoint, capsys):
    out = tmp_path / "original"
    shutil.copytree(checkpoint.parent, out)
    before = (out / "model.safetensors").read_bytes()
    assert main(["train", "--out", str(out), "-q", *tiny_overrides, "seed=1"]) == 2
    line = _one_error(capsys)
    assert "holds the model of another config (seed differs)" in line and "--force" in line
    assert (out / "model.safetensors").read_bytes() == before
    assert main(["train", "--out", str(out), "-q", "--force", *tiny_overrides, "seed=1"]) == 0
    assert read_checkpoint(out / "model.safetensors")[1]["seed"] == 1


# ---------------------------------------------------------------- 5. outputs that cannot be written


OUTPUTS = {  # (command, the path in --out made the wrong kind, extra overrides)
    "run-results-json-folder": ("run", "results.json", "dir", []),
    "run-config-yaml-folder": ("run", "config.yaml", "dir", []),
    "run-progress-file": ("run", "progress", "file", []),
    "run-models-file": ("run", "models", "file", ["save_models=true"]),
    "run-progress-entry-folder": ("run", "progress/seed0-finetune.json", "dir", []),
    "train-metrics-folder": ("train", "metrics.json", "dir", []),
    "unlearn-model-yaml-folder": ("unlearn", "model.yaml", "dir", []),
    "tune-trials-csv-folder": ("tune", "trials.csv", "dir", []),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_an_output_that_cannot_be_written_is_refused_before_any_work(case, tmp_path, tiny_overrides, checkpoint,
                                                                     capsys, cache_here):
    command, name, kind, extra = OUTPUTS[case]
    out = tmp_path / "out"
    target = out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir() if kind == "dir" else target.write_text("mine\n")
    argv = {"run": ["run", *tiny_overrides, *FAST], "train": ["train", *tiny_overrides],
            "unlearn": ["unlearn", "--checkpoint", str(checkpoint), "--method", "finetune"],
            "tune": ["tune", "--method", "ssd", "--trials", "1", *tiny_overrides]}[command]
    assert main([*argv, *extra, "--out", str(out), "-q"]) == 2
    line = _one_error(capsys)
    what = "a folder" if kind == "dir" else "a file"
    assert f"holds {what} '{Path(name).name}'" in line and str(target) in line
    assert not cache_here.exists()  # nothing trained
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == sorted(
        str(Path(*Path(name).parts[:i + 1])) for i in range(len(Path(name).parts)))


# ---------------------------------------------------------------- 6. an unreadable progress entry


@pytest.mark.parametrize("content", ["{}", "[]", '{"method": "finetune", "seed": 0, "metrics": {"UA": "high"}, "info": {}}',
                                     '{"method": "finetune", "seed": 0, "info": {}}', "{not json"])
def test_an_unreadable_progress_entry_runs_that_method_again(content, tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    argv = ["run", "--out", str(out), *tiny_overrides, *FAST]
    assert main([*argv, "-q"]) == 0
    whole = json.loads((out / "results.json").read_text())
    entry = out / "progress" / "seed0-finetune.json"
    entry.write_text(content)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "is unreadable" in line]
    assert len(said) == 1 and f"progress entry '{entry}' is unreadable" in said[0] and "running it again" in said[0]
    again = json.loads((out / "results.json").read_text())
    assert again["runs"][1]["method"] == "finetune" and again["runs"][1]["metrics"]["UA"] == whole["runs"][1]["metrics"]["UA"]
    assert json.loads(entry.read_text())["method"] == "finetune"  # written anew


def test_entry_problem():
    good = {"method": "m", "seed": 0, "metrics": {"UA": 1.0, "MIA": None, "RA": 2, "TA": 3.0, "time_s": 0.1}, "info": {}}
    outputs = (torch.zeros(2, 3).numpy(), torch.zeros(1, 3).numpy())
    assert entry_problem(good, 0, "m", outputs) is None
    assert entry_problem({**good, "metrics": {}, "error": "diverged"}, 0, "m", None) is None  # a failure kept
    for bad, seed, name, outs in ((good, 1, "m", outputs), (good, 0, "n", outputs), (good, 0, "m", None),
                                  ({**good, "metrics": {**good["metrics"], "RA": True}}, 0, "m", outputs),
                                  ({**good, "info": []}, 0, "m", outputs), ({**good, "error": 3}, 0, "m", None)):
        assert entry_problem(bad, seed, name, outs), (bad, seed, name)


# ---------------------------------------------------------------- 7. non-finite weights


def _nan_init(checkpoint: Path, path: Path, value: float) -> str:
    state = read_checkpoint(checkpoint)[0]
    name = next(k for k in state if k.endswith("weight"))
    state[name].view(-1)[1] = value
    save_file(state, str(path))
    return name


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_in_an_input_are_refused_naming_the_tensor(value, checkpoint, tmp_path, tiny_overrides,
                                                                      capsys, cache_here):
    init = tmp_path / "init.safetensors"
    name = _nan_init(checkpoint, init, value)
    assert main(["run", "--out", str(tmp_path / "run"), "-q", *tiny_overrides, *FAST, f"model.init={init}"]) == 2
    line = _one_error(capsys)
    assert f"'{init}' holds non-finite weights: tensor '{name}' has 1 NaN or infinite value" in line
    assert not (tmp_path / "run" / "results.json").exists() and not cache_here.exists()
    # a prunelora checkpoint with such weights (its digest intact): refused by every command that reads it
    state = read_checkpoint(checkpoint)[0]
    state[name].view(-1)[1] = value
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={**_meta(checkpoint), "digest": tensors_digest(state)})
    assert main(["unlearn", "--checkpoint", str(bad), "--method", "finetune", "--out", str(tmp_path / "u"), "-q"]) == 2
    assert f"tensor '{name}'" in _one_error(capsys)


def _meta(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_finite_weights_whose_outputs_overflow_fail_with_one_message(checkpoint, tmp_path, capsys):
    """Sign-flipped weights are a valid input; scaled so far that the outputs overflow, evaluating them fails
    (exit 1) with the advice given once."""
    state = {k: (-v * 1e30 if v.is_floating_point() and "running_var" not in k else v)
             for k, v in read_checkpoint(checkpoint)[0].items()}
    flipped = tmp_path / "flipped.safetensors"
    save_file(state, str(flipped), metadata={**_meta(checkpoint), "digest": tensors_digest(state)})
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(flipped)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].count("lower the learning rate") == 1, lines


# ---------------------------------------------------------------- 8. PRUNELORA_CACHE naming a file


@pytest.mark.parametrize("under", [False, True])
def test_a_cache_naming_a_file_is_refused_before_pytorch(under, tmp_path, tiny_overrides):
    afile = tmp_path / "cache.txt"
    afile.write_text("not a folder\n")
    env = {**os.environ, "PRUNELORA_CACHE": str(afile / "sub" if under else afile)}
    script = textwrap.dedent(f"""
        import sys
        from prunelora.cli import main
        code = main(["run", "--out", {str(tmp_path / 'run')!r}, "-q", *{list(tiny_overrides)!r}])
        print(code, "torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"PRUNELORA_CACHE='{env['PRUNELORA_CACHE']}' names" in line and "set PRUNELORA_CACHE=off" in line
    assert ("a path under the file" in line) == under
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage", ["", "{not json", "[1, 2]", '{"data": "x"}', "\xff\xfe"])
def test_a_damaged_inputs_record_is_rebuilt_not_taken_for_changed_data(tmp_path, tiny_cfg, tiny_data, damage):
    data, _ = tiny_data
    inputs, out, config = run_inputs(tiny_cfg, data), tmp_path / "run", {"seed": 0}
    Progress(out, config, inputs=inputs).save(0, "x", {"method": "x"}, None)
    (out / "progress" / "inputs.json").write_bytes(damage.encode("latin-1"))
    said = []
    Progress(out, config, inputs=inputs, log=said.append)  # resumes: no "held other content"
    assert said == [f"--out '{out}': progress/inputs.json is damaged; rebuilding it from this run's inputs"]
    assert json.loads((out / "progress" / "inputs.json").read_text()) == inputs
    Progress(out, config, inputs=inputs, log=said.append)  # rebuilt: nothing more to say
    assert len(said) == 1
