"""`prunelora verify`: its receipt (hashes, config, checks) and exit code on the tiny digits models, and its pieces
against hand-computed values. Trained models' metric values move with the CPU, so only the receipt's facts and the
exit codes that thresholds force either way are asserted on them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from prunelora.cli import main
from prunelora.metrics.attack import membership_accuracy
from prunelora.workflows.verify import _p_values, read_request, sha256_ids

LENIENT = ["verify.forget_gap_max=100", "verify.mia_max=100", "verify.leak_share_max=100", "verify.ra_drop_max=100",
           "verify.ta_drop_max=100", "verify.leak_p=0.5"]


@pytest.fixture(scope="module")
def unlearned(checkpoint, tmp_path_factory):
    """The tiny original's finetune unlearning, written by `prunelora unlearn`."""
    from prunelora.api import unlearn

    out = tmp_path_factory.mktemp("verify") / "finetune"
    unlearn(checkpoint, "finetune", out, ["threads=1"], progress=False)
    return out / "model.safetensors"


def _request(folder: Path, value) -> str:
    path = folder / "request.json"
    path.write_text(json.dumps(value))
    return str(path)


def test_receipt_records_what_was_checked(checkpoint, unlearned, tmp_path, capsys):
    from prunelora.config import load_config
    from prunelora.data import load_dataset

    out = tmp_path / "receipt"
    code = main(["verify", "--before", str(checkpoint), "--after", str(unlearned), "--request",
                 _request(tmp_path, {"classes": ["3"]}), "--out", str(out), "-q", "threads=1", *LENIENT])
    assert code == 0 and "PASS" in capsys.readouterr().err
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["models"]["before"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert receipt["models"]["after"]["sha256"] == hashlib.sha256(unlearned.read_bytes()).hexdigest()
    y = load_dataset(load_config(overrides=["data.name=digits", "data.image_size=8"]).data).y_train.numpy()
    ids = np.flatnonzero(y == 3)
    expected = hashlib.sha256(b"".join(int(i).to_bytes(8, "little") for i in sorted(ids))).hexdigest()
    assert receipt["request"]["forget_ids_sha256"] == expected and receipt["request"]["forget_samples"] == len(ids)
    assert receipt["config"]["forget"]["classes"] == ["3"] and receipt["config"]["verify"]["mia_max"] == 100.0
    assert [c["name"] for c in receipt["checks"]] == ["forget_accuracy", "mia", "leaks", "retain_accuracy",
                                                      "test_accuracy"]
    assert all(c["passed"] for c in receipt["checks"]) and receipt["passed"]
    assert len(receipt["leaks"]) == 10 and all(x["class"] == "3" for x in receipt["leaks"])
    assert "# Deletion receipt: PASS" in (out / "receipt.md").read_text()


def test_a_failed_check_exits_1(checkpoint, unlearned, tmp_path, capsys):
    """The exit code follows the receipt; and a leak check that cannot fail (p is at least 1/361 with the 360 test
    samples as non-members, above verify.leak_p = 0.001) fails the gate whatever the CPU."""
    out = tmp_path / "receipt"
    code = main(["verify", "--before", str(checkpoint), "--after", str(unlearned), "--reference", str(checkpoint),
                 "--request", _request(tmp_path, [0, 1, 2]), "--out", str(out), "-q", "threads=1",
                 "verify.ra_drop_max=0", "verify.ta_drop_max=0"])
    receipt = json.loads((out / "receipt.json").read_text())
    retain = next(c for c in receipt["checks"] if c["name"] == "retain_accuracy")
    assert retain["threshold"] == retain["before"]  # the reference is the before-model here: drop 0 allowed
    assert code == (0 if receipt["passed"] else 1)
    assert receipt["compared_with"] == "the retrained reference model" and receipt["request"]["kind"] == "samples"
    code = main(["verify", "--before", str(checkpoint), "--after", str(unlearned), "--request",
                 _request(tmp_path, {"indices": [0, 1, 2]}), "--out", str(out), "-q", "threads=1", *LENIENT,
                 "verify.forget_gap_max=0", "verify.ra_drop_max=0", "verify.mia_max=50", "verify.leak_share_max=0",
                 "verify.leak_p=0.001"])
    assert code == 1 and "FAIL: " in capsys.readouterr().err
    receipt = json.loads((out / "receipt.json").read_text())
    leaks = next(c for c in receipt["checks"] if c["name"] == "leaks")
    assert not leaks["passed"] and "cannot tell" in leaks["note"]  # 360 test samples: p >= 1/361 > 0.001
    # the receipt's config names the request file as forget.indices, and the run reads it back as the same samples
    from prunelora.data import read_indices

    assert read_indices(receipt["config"]["forget"]["indices"], 360).tolist() == [0, 1, 2]


def test_p_values_and_the_membership_attack_by_hand():
    # 5 is above all three non-members: p = (1 + 0) / 4; 2 ties one and is below one: (1 + 2) / 4; 0: (1 + 3) / 4
    np.testing.assert_array_equal(_p_values(np.array([5.0, 2.0, 0.0]), np.array([1.0, 2.0, 3.0])), [0.25, 0.75, 1.0])
    assert membership_accuracy(np.zeros(40), np.zeros(30), seed=0) == 50.0  # nothing tells them apart
    assert membership_accuracy(np.full(40, 3.0), np.zeros(30), seed=0) == 100.0
    assert membership_accuracy(np.zeros(40), np.full(30, 3.0), seed=0) == 100.0  # less sure of members: caught too


def test_request_formats(tmp_path):
    assert read_request(_request(tmp_path, {"classes": ["cat", 3]})) == {"classes": ["cat", 3]}
    assert read_request(_request(tmp_path, [4, 5])) == {"indices": [4, 5]}
    (tmp_path / "ids.txt").write_text("4, 5\n6\n")
    assert read_request(tmp_path / "ids.txt") == {"indices": [4, 5, 6]}
    assert sha256_ids([2, 1]) == hashlib.sha256((1).to_bytes(8, "little") + (2).to_bytes(8, "little")).hexdigest()
