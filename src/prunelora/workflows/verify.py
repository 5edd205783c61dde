"""`prunelora verify`: a deletion receipt that a release can be gated on.

Given the model before and after a deletion request (and, if there is one, a model retrained without the samples),
it writes receipt.json and receipt.md: the SHA-256 of the forget sample ids and of every model file, the resolved
config, and each check with its value, threshold and result. `verify` returns the receipt; the command line exits
with 1 when a check fails.

The checks compare the after-model with the retrained reference when one is given; otherwise with held-out
non-members (test samples of the forgotten classes, or the whole test set for a sample request), which the model
never saw, and with the before-model for utility. Thresholds are the config's `verify` section (README).
Every input is checked before PyTorch is imported.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

from .. import config as C
from ..errors import UserError
from ..report.summary import md
from ..store.checkpoints import read_config
from ..store.files import atomic_write, check_outputs, same_path, sha256_file, to_json
from .resolve import check_out, checkpoint_config, images_only

RECEIPT_FILES = ("receipt.json", "receipt.md")
IDS_ENCODING = "sorted train-set indices as little-endian int64"
REQUEST_HELP = 'a JSON file like {"classes": ["cat"]} or {"indices": [12, 40]}, or a list of train-set indices'


def read_request(path: str | Path) -> dict:
    """{"classes": [...]} or {"indices": [...]} from a request file; its format checked, not yet against the data."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"request file '{path}' does not exist; pass {REQUEST_HELP}")
    text = path.read_text(errors="replace").strip()
    try:
        value = json.loads(text) if text.startswith(("[", "{")) else [int(v) for v in re.split(r"[\s,]+", text) if v]
    except ValueError:
        raise UserError(f"request file '{path}' is neither JSON nor a list of integers; pass {REQUEST_HELP}") from None
    if isinstance(value, list):
        value = {"indices": value}
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("classes", "indices"):
        raise UserError(f"request file '{path}' must name either classes or indices; pass {REQUEST_HELP}")
    (kind, items), = value.items()
    ok = (lambda v: isinstance(v, (int, str)) and not isinstance(v, bool)) if kind == "classes" else \
        (lambda v: isinstance(v, int) and not isinstance(v, bool))
    if not isinstance(items, list) or not items or not all(ok(v) for v in items):
        what = "class names or indices" if kind == "classes" else "integer train-set indices"
        raise UserError(f"request file '{path}': '{kind}' must be a non-empty list of {what}")
    return value


def sha256_tensors(path: str | Path) -> str:
    """SHA-256 over a safetensors file's tensors in name order (each one's name, dtype, shape and bytes), read from
    the file without PyTorch; its metadata (the config saved with it) left out, so that one model saved twice with
    other configs has one digest."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
            for name in sorted(k for k in header if k != "__metadata__"):
                entry = header[name]
                start, end = (int(v) for v in entry["data_offsets"])
                digest.update(json.dumps([name, str(entry["dtype"]), list(entry["shape"])]).encode())
                f.seek(8 + size + start)
                data = f.read(end - start)
                if len(data) != end - start:
                    raise ValueError("the file ends inside a tensor")
                digest.update(data)
    except (KeyError, TypeError, ValueError, struct.error) as err:
        raise UserError(f"checkpoint '{path}' is not a readable safetensors file ({err}); pass a file written by "
                        "prunelora") from None
    return digest.hexdigest()


def sha256_ids(ids) -> str:
    """SHA-256 of the forget sample ids, encoded as IDS_ENCODING says."""
    import numpy as np

    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).astype("<i8").tobytes()).hexdigest()


def check_inputs(before, after, request, out, reference=None, overrides=(), config_file=None):
    """(resolved config, request, {role: (path, sha256)}) after every check that needs no PyTorch: the files are
    prunelora checkpoints of one architecture, before and after are two models, the request is well formed and
    `out` can be written without touching an input."""
    check_outputs(out, RECEIPT_FILES)
    paths = {"before": before, "after": after, **({"reference": reference} if reference is not None else {})}
    saved = {role: read_config(path) for role, path in paths.items()}
    if same_path(before, after):
        raise UserError(f"--before and --after are the same file '{after}'; pass the model before the deletion and "
                        "the model after it")
    digests = {role: sha256_file(path) for role, path in paths.items()}
    tensors = {role: sha256_tensors(path) for role, path in paths.items()}
    if tensors["before"] == tensors["after"]:
        raise UserError(f"--before '{before}' and --after '{after}' hold the same model (SHA-256 of the tensors "
                        f"{tensors['after'][:12]}...): nothing was unlearned; pass the model after the deletion")
    if reference is not None and (same_path(reference, after) or tensors["reference"] == tensors["after"]):
        raise UserError(f"--reference '{reference}' is the model being checked (--after '{after}', tensors' SHA-256 "
                        f"{tensors['after'][:12]}...); the reference must be a model retrained without the forget "
                        "samples")
    for role, path in paths.items():
        if role != "before" and _architecture(*saved[role]) != _architecture(*saved["before"]):
            raise UserError(f"--{role} '{path}' is another architecture than --before '{before}' "
                            f"({_describe(*saved[role])} against {_describe(*saved['before'])}); pass models of one "
                            "architecture and data set")
    req = read_request(request)
    forget = [f"forget.classes={json.dumps(req['classes'])}"] if "classes" in req else [
        "forget.classes=null", f"forget.indices={json.dumps(str(request))}"]
    cfg, _ = checkpoint_config(after, [*overrides, "forget.fraction=null", "forget.sequence=null", "forget.indices=null",
                                       *forget], config_file)
    images_only(cfg, "verify")
    check_out(cfg, out, {f"--{role}": path for role, path in {**paths, "request": request}.items()})
    return cfg, req, {role: (str(paths[role]), digests[role], tensors[role]) for role in paths}


def _architecture(config: dict, extra: dict) -> tuple:
    model = {k: v for k, v in config.get("model", {}).items() if k not in ("init", "pretrained")}
    data = {k: config.get("data", {}).get(k) for k in ("name", "image_size")}
    shape = tuple(extra.get(k) for k in ("num_classes", "in_chans", "image_size"))
    return json.dumps(model, sort_keys=True), json.dumps(data, sort_keys=True), shape


def _describe(config: dict, extra: dict) -> str:
    model = config.get("model", {})
    arch = ", ".join(f"{k} {model[k]}" for k in ("width", "depth", "heads", "patch_size") if model.get(k) is not None)
    return (f"{model.get('name')} ({arch}) on {config.get('data', {}).get('name')}, "
            f"{extra.get('num_classes')} classes")


def verify(before, after, request, out, reference=None, overrides=(), config_file=None) -> dict:
    """Check a deletion and write OUT/receipt.json and OUT/receipt.md; returns the receipt ("passed": all checks)."""
    cfg, req, files = check_inputs(before, after, request, out, reference, overrides, config_file)

    from ..metrics.evaluate import outputs
    from ..store.environment import environment
    from .experiment import make_context

    ctx = make_context(cfg, progress=False)
    data, splits = _splits(cfg, req, ctx)
    models = {role: _model(path, data, ctx) for role, (path, *_) in files.items()}
    outs = {role: outputs(model, data, ctx, cfg.eval.batch_size) for role, model in models.items()}
    checks, leaks, against = _checks(outs, data, splits, cfg.verify, cfg.seed)
    receipt = {
        "passed": all(c["passed"] for c in checks),
        "request": _request_record(req, data, splits),
        "models": {role: {"path": path, "sha256": digest, "tensors_sha256": tensors}
                   for role, (path, digest, tensors) in files.items()},
        "compared_with": against,
        "checks": checks,
        "leaks": leaks,
        "config": C.to_dict(cfg),
        "environment": environment(ctx.device, ctx.meter.kind),
    }
    atomic_write(Path(out) / "receipt.json", to_json(receipt))
    atomic_write(Path(out) / "receipt.md", receipt_markdown(receipt))
    return receipt


def _splits(cfg: C.ExperimentConfig, req: dict, ctx):
    """The data (checked against the model's classes) and the request's splits."""
    import torch

    from ..data import load_dataset, make_sample_splits, make_splits, resolve_classes

    data = load_dataset(cfg.data)
    data = data.to(ctx.device) if ctx.device.type == "cuda" else data
    if "classes" in req:
        return data, make_splits(data.y_train.cpu(), data.y_test.cpu(), resolve_classes(req["classes"], data.classes))
    n = len(data.y_train)
    bad = [i for i in req["indices"] if not 0 <= i < n]
    if bad:
        raise UserError(f"request index {bad[0]} is out of range: the model's train set has indices 0..{n - 1}")
    ids = torch.tensor(sorted(set(req["indices"])), dtype=torch.long)
    if len(ids) >= n:
        raise UserError(f"the request names all {n} train samples, which leaves nothing to retain")
    return data, make_sample_splits(data.y_train.cpu(), data.y_test.cpu(), ids)


def _model(path: str, data, ctx):
    from ..models import classifier_name
    from .checkpoint import load_module

    model = load_module(path)
    head = model.get_submodule(classifier_name(model)).out_features
    if head != data.num_classes:
        raise UserError(f"model '{path}' has {head} outputs but its data set {data.num_classes} classes; pass a model "
                        "trained on this data set")
    return ctx.prepare_model(model).eval()


def _request_record(req: dict, data, splits) -> dict:
    record = {"kind": "classes" if "classes" in req else "samples", "forget_samples": len(splits.forget),
              "forget_ids_sha256": sha256_ids(splits.forget.numpy()), "ids_encoding": IDS_ENCODING}
    if splits.forget_classes:
        record["classes"] = [data.classes[c] for c in splits.forget_classes]
    return record


def _checks(outs: dict, data, splits, v: C.VerifyConfig, seed: int) -> tuple[list[dict], list[dict], str]:
    """Each check (name, what it measures, before, after, rule, threshold, passed), the leak list, and what the
    after-model was compared with."""
    import numpy as np

    from ..metrics.attack import logit_confidence, membership_accuracy
    from ..metrics.evaluate import accuracy

    y_train, y_test = data.y_train.cpu().numpy(), data.y_test.cpu().numpy()
    f, r, t = splits.forget.numpy(), splits.retain.numpy(), splits.test_retain.numpy()
    held = splits.test_forget.numpy() if splits.forget_classes else splits.test_retain.numpy()
    ref = outs.get("reference")
    if ref is None and len(held) < 2:
        raise UserError("the request's classes have fewer than 2 test samples to compare with; pass --reference")
    phi = lambda o: logit_confidence(o[0][f], y_train[f])
    nonmember = lambda o: phi(ref) if ref is not None else logit_confidence(o[1][held], y_test[held])
    forget_acc = lambda o: accuracy(o[0][f], y_train[f])
    if ref is not None:
        against = "the retrained reference model"
    else:
        kind = "test samples of the forgotten classes" if splits.forget_classes else "the test set"
        against = f"{len(held)} held-out non-members ({kind}) and, for the accuracies, the before-model"

    def never_seen(o) -> float:
        """Forget accuracy of a model that never saw the samples: the reference's; else 0 for whole classes (a class
        never trained on is never predicted) and, for samples, this model's accuracy on held-out ones."""
        if ref is not None:
            return forget_acc(ref)
        return 0.0 if splits.forget_classes else accuracy(o[1][held], y_test[held])

    def rows(o) -> dict:
        p = _p_values(phi(o), nonmember(o))
        return {"forget_accuracy": (forget_acc(o), never_seen(o) + v.forget_gap_max),
                "mia": (membership_accuracy(phi(o), nonmember(o), seed), v.mia_max),
                "leaks": (float(100.0 * (p <= v.leak_p).mean()), v.leak_share_max)}

    base = ref if ref is not None else outs["before"]
    before, after = rows(outs["before"]), rows(outs["after"])
    checks = [_check(name, WHAT[name], before[name][0], *after[name], "<=") for name in after]
    smallest_p = 1 / (1 + len(nonmember(outs["after"])))
    if smallest_p > v.leak_p:  # no sample can be called leaking: a gate must not pass on a check that cannot fail
        leak = next(c for c in checks if c["name"] == "leaks")
        leak.update(passed=False, note=f"with {len(nonmember(outs['after']))} non-members the smallest p is "
                    f"{smallest_p:.3f} > verify.leak_p = {v.leak_p}: the check cannot tell; raise verify.leak_p or "
                    "pass --reference")
    for name, part, kept, y, drop in (("retain_accuracy", 0, r, y_train, v.ra_drop_max),
                                      ("test_accuracy", 1, t, y_test, v.ta_drop_max)):
        before_acc, after_acc, base_acc = (accuracy(o[part][kept], y[kept]) for o in (outs["before"], outs["after"], base))
        checks.append(_check(name, WHAT[name], before_acc, after_acc, base_acc - drop, ">="))
    p = _p_values(phi(outs["after"]), nonmember(outs["after"]))
    order = np.lexsort((-phi(outs["after"]), p))[: v.leaks]
    leaks = [{"id": int(f[i]), "class": data.classes[int(y_train[f[i]])], "phi": float(phi(outs["after"])[i]),
              "p": float(p[i]), "leaks": bool(p[i] <= v.leak_p)} for i in order]
    return checks, leaks, against


WHAT = {
    "forget_accuracy": "accuracy (%) on the forget samples, at most that of a model that never saw them + "
                       "verify.forget_gap_max",
    "mia": "balanced accuracy (%) of a membership attack telling the forget samples from non-members",
    "leaks": "share (%) of forget samples the model is surer of than of all but verify.leak_p of non-members",
    "retain_accuracy": "accuracy (%) on the retain set, at least the reference's (else the before-model's) - "
                       "verify.ra_drop_max",
    "test_accuracy": "accuracy (%) on the test samples of the remaining classes, at least the reference's (else the "
                     "before-model's) - verify.ta_drop_max",
}


def _check(name: str, what: str, before: float, after: float, threshold: float, rule: str) -> dict:
    passed = after <= threshold if rule == "<=" else after >= threshold
    return {"name": name, "what": what, "before": before, "after": after, "rule": rule, "threshold": threshold,
            "passed": bool(passed)}


def _p_values(scores, nonmembers):
    """Per score, (1 + non-members at least as high) / (1 + non-members): small = surer than of unseen samples."""
    import numpy as np

    sorted_n = np.sort(nonmembers)
    higher = len(sorted_n) - np.searchsorted(sorted_n, scores, side="left")
    return (1 + higher) / (1 + len(sorted_n))


def receipt_markdown(receipt: dict) -> str:
    """The receipt for people: verdict, request, files, checks and what still leaks."""
    req, env = receipt["request"], receipt["environment"]
    what = f"forget class(es) {', '.join(map(md, req['classes']))}" if req.get("classes") else "forget samples"
    request = (f"Request: {what}, {req['forget_samples']} train samples; SHA-256 of their ids ({req['ids_encoding']}): "
               f"`{req['forget_ids_sha256']}`.")
    lines = [f"# Deletion receipt: {'PASS' if receipt['passed'] else 'FAIL'}", "", request, "",
             "| Model | File | SHA-256 |", "|---|---|---|"]
    lines += [f"| {role} | {md(m['path'])} | `{m['sha256']}` |" for role, m in receipt["models"].items()]
    lines += ["", f"Compared with {receipt['compared_with']}.", "",
              "| Check | Before | After | Rule | Threshold | Result | What |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['before']:.2f} | {c['after']:.2f} | {c['rule']} | {c['threshold']:.2f} | "
              f"{'pass' if c['passed'] else 'FAIL'} | {md(c['what'])}{'; ' + md(c['note']) if c.get('note') else ''} |"
              for c in receipt["checks"]]
    if receipt["leaks"]:
        lines += ["", ("Forget samples the after-model is surest of, against non-members (p = share of non-members "
                       "at least as sure; leaks = p <= verify.leak_p):"), "", "| Id | Class | phi | p | Leaks |",
                  "|---|---|---|---|---|"]
        lines += [f"| {x['id']} | {md(x['class'])} | {x['phi']:.2f} | {x['p']:.4f} | {'yes' if x['leaks'] else 'no'} |"
                  for x in receipt["leaks"]]
    lines += ["", (f"The resolved config is in receipt.json. Device: {md(env['device'])} ({md(env['device_name'])}); "
                   f"prunelora {env['versions']['prunelora']}, torch {env['versions']['torch']}; {env['date']}.")]
    return "\n".join(lines) + "\n"
