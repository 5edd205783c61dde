"""Wrong numbers the other tests would let through, each pinned by a value worked out by hand:
which samples the metrics and the MIA read, which samples retrain trains on, how much pruning prunes (masks and
channel removal), which channels removal drops, and LoRA's alpha / r scaling. No assertion here rests on what a
trained model happens to compute: the models are hand-set, or training is replaced by a spy."""

from __future__ import annotations

import copy
import importlib
import math

import pytest
import torch
from torch import nn

from conftest import TINY_OVERRIDES
from prunelora.config import load_config
from prunelora.data import ImageData, make_splits
from prunelora.methods import UnlearnTask
from prunelora.metrics.evaluate import evaluate
from prunelora.models import create_model
from prunelora.models.adapters import add_lora, merge_lora
from prunelora.models.pruning import prune_l2_structured, remove_channels, zero_rows
from prunelora.workflows.experiment import resolve_config
from prunelora.workflows.unlearn import unlearn_one

# the methods' modules (whose `fit` a test replaces by a spy)
RETRAIN = importlib.import_module("prunelora.methods.retrain")
PRUNELORA = importlib.import_module("prunelora.methods.prunelora")


def _cfg(*extra: str):
    return resolve_config(load_config(overrides=[*TINY_OVERRIDES, *extra]))


# ---------------------------------------------------------------- a data set and a model whose outputs are set by hand

# 3 classes, class 2 forgotten. Train: forget = [1, 4, 8, 11], retain = [0, 2, 3, 5, 6, 7, 9, 10].
# Test: test_forget = [2, 6], test_retain = [0, 1, 3, 4, 5, 7].
Y_TRAIN = [0, 2, 1, 0, 2, 1, 0, 1, 2, 1, 0, 2]
Y_TEST = [1, 0, 2, 1, 0, 1, 2, 0]
TEST_CODE = 100  # test image j holds the pixel value 100 + j, train image i the value i


def _hand_data() -> ImageData:
    """Each image is one pixel that names it (train i -> i, test j -> 100 + j); mean 0 and std 1, so the
    normalised pixel is value / 255."""
    x_train = torch.arange(len(Y_TRAIN), dtype=torch.uint8).view(-1, 1, 1, 1)
    x_test = (TEST_CODE + torch.arange(len(Y_TEST))).to(torch.uint8).view(-1, 1, 1, 1)
    return ImageData("hand", x_train, torch.tensor(Y_TRAIN), x_test, torch.tensor(Y_TEST), ["a", "b", "c"], (0.0,), (1.0,))


class _Lookup(nn.Module):
    """Logits read from a table by the image's code: `train[i]` for train image i, `test[j]` for test image j."""

    def __init__(self, train: list[list[float]], test: list[list[float]]):
        super().__init__()
        self.table = torch.zeros(256, 3)
        self.table[: len(train)] = torch.tensor(train)
        self.table[TEST_CODE : TEST_CODE + len(test)] = torch.tensor(test)

    def forward(self, x):
        code = torch.round(x.flatten(1)[:, 0] * 255).long()
        return self.table[code].clone()


def _hand_splits(data: ImageData):
    splits = make_splits(data.y_train, data.y_test, [2])
    assert splits.forget.tolist() == [1, 4, 8, 11] and splits.retain.tolist() == [0, 2, 3, 5, 6, 7, 9, 10]
    assert splits.test_forget.tolist() == [2, 6] and splits.test_retain.tolist() == [0, 1, 3, 4, 5, 7]
    return splits


def _right(y: int, logit: float = 5.0) -> list[float]:
    """Logits with `logit` on class y, 0 elsewhere."""
    row = [0.0, 0.0, 0.0]
    row[y] = logit
    return row


def _wrong(y: int) -> list[float]:
    """Logits that predict the class after y."""
    return _right((y + 1) % 3)


def test_ua_ra_ta_read_their_own_samples(cpu_ctx):
    """Every set gets a different share right, so a metric read on another set (UA on test samples of the forgotten
    class, RA on the whole train set, TA on every test sample, ...) gives another value."""
    data = _hand_data()
    splits = _hand_splits(data)
    train = [_right(y) for y in Y_TRAIN]
    test = [_right(y) for y in Y_TEST]
    train[9] = _wrong(Y_TRAIN[9])  # retain: 7 of 8 right -> RA 87.5
    for i in (1, 8, 11):  # forget: 1 of 4 right (sample 4) -> UA 100 - 25 = 75
        train[i] = _wrong(Y_TRAIN[i])
    for j in (1, 5):  # test retain: 4 of 6 right -> TA 66.67
        test[j] = _wrong(Y_TEST[j])
    test[2] = _wrong(Y_TEST[2])  # test forget: 1 of 2 right (sample 6) -> forget TA 50
    metrics = evaluate(_Lookup(train, test), data, splits, cpu_ctx, batch_size=5)
    assert metrics["UA"] == 75.0
    assert metrics["RA"] == 87.5
    assert metrics["TA"] == pytest.approx(400 / 6, rel=1e-12)
    assert metrics["forget_TA"] == 50.0


# Confident right answers (p_y = e^5 / (e^5 + 2) = 0.987) and confident wrong ones (p_y = 1 / (2 + e^5) = 0.007);
# every attack feature (confidence, entropy, modified entropy, loss) tells the two apart by a wide margin.
MEMBER, NONMEMBER = 5.0, -5.0


def test_mia_calls_forget_samples_that_look_like_test_samples_non_members(cpu_ctx):
    """Members (retain samples) are confident, non-members (test samples of the remaining classes) are not; three
    of the four forget samples look like non-members: every MIA-Efficacy is exactly 75. The test samples of the
    forgotten class look like members, so an attack that targeted them would read 0; with members and
    non-members swapped it would read 25."""
    data = _hand_data()
    splits = _hand_splits(data)
    train = [_right(y, MEMBER) for y in Y_TRAIN]
    test = [_right(y, NONMEMBER) for y in Y_TEST]
    for i in (1, 8, 11):
        train[i] = _right(Y_TRAIN[i], NONMEMBER)
    for j in (2, 6):
        test[j] = _right(Y_TEST[j], MEMBER)
    metrics = evaluate(_Lookup(train, test), data, splits, cpu_ctx)
    for key in ("MIA", "MIA_entropy", "MIA_m_entropy", "MIA_loss_balanced", "MIA_loss_authors"):
        assert metrics[key] == 75.0, key
    # the logits with -5 on the true class predict class 0 (or 1 for class 0): those three forget samples are wrong
    assert metrics["UA"] == 75.0 and metrics["RA"] == 100.0 and metrics["TA"] == 0.0 and metrics["forget_TA"] == 100.0


def test_forget_indices_are_train_samples_of_the_forgotten_class(tiny_data):
    """The request's splits index the train labels: forget = every train sample of class 3, retain = the rest,
    and the same for the test set."""
    data, splits = tiny_data
    y_train, y_test = data.y_train, data.y_test
    assert splits.forget_classes == [3]
    assert splits.forget.tolist() == torch.nonzero(y_train == 3).flatten().tolist()
    assert splits.retain.tolist() == torch.nonzero(y_train != 3).flatten().tolist()
    assert splits.test_forget.tolist() == torch.nonzero(y_test == 3).flatten().tolist()
    assert splits.test_retain.tolist() == torch.nonzero(y_test != 3).flatten().tolist()
    assert len(splits.forget) + len(splits.retain) == len(y_train) != len(y_test)


# ---------------------------------------------------------------- retrain


def test_retrain_trains_on_the_retain_set(tiny_data, cpu_ctx, monkeypatch):
    """Retrain's training loop gets exactly the retain indices (and its cache key is made from them)."""
    data, splits = tiny_data
    cfg = _cfg("cache=false")
    seen = {}

    def fit_spy(model, data_, index, recipe, ctx, **kwargs):  # records what it would train on; trains nothing
        seen["fit"] = index.clone()
        return []

    real_key = RETRAIN.cache.model_key

    def key_spy(kind, cfg_, seed, index, ctx, data_):
        seen["key"] = index.clone()
        return real_key(kind, cfg_, seed, index, ctx, data_)

    monkeypatch.setattr(RETRAIN, "fit", fit_spy)
    monkeypatch.setattr(RETRAIN.cache, "model_key", key_spy)
    original = create_model(cfg.model, data.num_classes, data.in_chans, data.image_size)
    unlearn_one("retrain", original, UnlearnTask(data, splits, cfg), cpu_ctx)
    assert seen["fit"].tolist() == seen["key"].tolist() == splits.retain.tolist()
    assert 3 not in set(data.y_train[seen["fit"]].tolist())


# ---------------------------------------------------------------- pruning amount and the L2 criterion


def _set_row_norms(module: nn.Module, order: torch.Tensor) -> None:
    """Row i of the weight becomes (order[i] + 1) x the same unit row: L2 norms exactly proportional to 1..n."""
    n = module.weight.shape[0]
    unit = torch.ones(module.weight[0].shape) / math.sqrt(module.weight[0].numel())
    with torch.no_grad():
        module.weight.copy_((order.float() + 1).view(n, *[1] * unit.dim()) * unit)


def test_prune_a_quarter_of_eight_rows():
    layer = nn.Linear(3, 8, bias=False)
    _set_row_norms(layer, torch.tensor([5, 0, 7, 3, 1, 6, 2, 4]))  # norms 6, 1, 8, 4, 2, 7, 3, 5 (x 1/sqrt 3)
    before = layer.weight.detach().clone()
    pruned = prune_l2_structured(nn.Sequential(layer), ["0"], 0.25)
    assert pruned == {"0": [1, 4]}  # 0.25 x 8 = 2 rows: the norms 1 and 2
    assert zero_rows(layer.weight) == [1, 4]
    keep = [0, 2, 3, 5, 6, 7]
    assert torch.equal(layer.weight.detach()[keep], before[keep])


def _hand_normed_model(cfg) -> nn.Module:
    """The tiny ResNet with every conv's output rows at norms 1..n in a scrambled order."""
    torch.manual_seed(0)
    model = create_model(cfg.model, 10, 1, 8)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            _set_row_norms(m, torch.randperm(m.out_channels))
    return model


def test_task_prune_uses_pruning_amount(tiny_data):
    """pruning.amount=0.25 through the config: in each conv, the quarter of the rows with the smallest norms."""
    data, splits = tiny_data
    cfg = _cfg("pruning.amount=0.25")
    model = _hand_normed_model(cfg)
    norms = {n: m.weight.detach().flatten(1).norm(dim=1) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruned = UnlearnTask(data, splits, cfg).prune(model)
    assert list(pruned) == list(norms)
    modules = dict(model.named_modules())
    for name, rows in pruned.items():
        n = len(norms[name])
        expected = sorted(torch.argsort(norms[name])[: n // 4].tolist())  # widths 4, 8, 16, 32: a quarter exactly
        assert rows == expected and zero_rows(modules[name].weight) == expected, name


def test_task_prune_removes_pruning_amount_of_the_channels(tiny_data):
    """pruning.mode=remove with pruning.amount=0.25: every root conv keeps three quarters of its channels."""
    data, splits = tiny_data
    cfg = _cfg("pruning.amount=0.25", "pruning.mode=remove")
    model = _hand_normed_model(cfg)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    task = UnlearnTask(data, splits, cfg)
    assert task.prune(model) == {}
    after = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert after == {n: w * 3 // 4 for n, w in widths.items()}
    assert model.conv1.out_channels == 3 and model.head.out_features == 10
    assert task.removed["params_after"] < task.removed["params_before"]


class _OneConv(nn.Module):
    """Conv2d(1 -> 8, 3x3) into a linear head whose input columns all have the same norm, so that a channel's
    group norm orders as its conv row's L2 norm. Rows chosen so that L2, L1 and max-abs orders all disagree."""

    # row: (L2, L1, max) = 0: (3, 9, 1)  1: (3.5, 3.5, 3.5)  2: (2.5, 2.5, 2.5)  3: (6, 18, 2)  4: (5, 5, 5)
    #                      5: (4, 8, 2)  6: (7, 7, 7)  7: (1.5, 4.5, 0.5)
    # L2 ascending: 7, 2, 0, 1, 5, 4, 3, 6;  L1 ascending: 2, 1, 7, 4, 6, 5, 0, 3
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.head = nn.Linear(8, 3)
        w = torch.zeros(8, 1, 3, 3)
        w[0] = 1.0
        w[1, 0, 0, 0] = 3.5
        w[2, 0, 1, 1] = -2.5
        w[3] = -2.0
        w[4, 0, 2, 2] = 5.0
        w[5, 0, :2, :2] = 2.0
        w[6, 0, 0, 2] = -7.0
        w[7] = 0.5
        with torch.no_grad():
            self.conv.weight.copy_(w)
            self.head.weight.fill_(1.0)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("amount, kept", [(0.25, [0, 1, 3, 4, 5, 6]), (0.5, [3, 4, 5, 6])])
def test_remove_channels_keeps_the_largest_l2_norms(amount, kept):
    net = _OneConv()
    weight, head = net.conv.weight.detach().clone(), net.head.weight.detach().clone()
    changed = remove_channels(net, ["conv"], amount, "head", torch.zeros(1, 1, 4, 4))
    assert changed == {"conv": [8, len(kept)]}
    assert torch.equal(net.conv.weight.detach(), weight[kept])  # the kept rows, in their order
    assert torch.equal(net.head.weight.detach(), head[:, kept])
    assert net.head.out_features == 3


class _Residual(nn.Module):
    """Two 1x1 convs added together (one coupled group of 4 channels) into a head with equal input columns.
    Row norms: a = 1, 2, 3, 4; b = 4, 0.5, 0.5, 0.5. Group norms^2 (+ the head's): 17, 4.25, 9.25, 16.25, so half
    removed drops channels 1 and 2; by a's norms alone it would drop 0 and 1, by b's alone 1, 2 or 3."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 1, bias=False)
        self.b = nn.Conv2d(1, 4, 1, bias=False)
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1))
            self.b.weight.copy_(torch.tensor([4.0, 0.5, 0.5, 0.5]).view(4, 1, 1, 1))
            self.head.weight.fill_(1.0)

    def forward(self, x):
        return self.head((self.a(x) + self.b(x)).mean((2, 3)))


def test_remove_channels_ranks_coupled_channels_by_group_norm():
    net = _Residual()
    a, b, head = (m.weight.detach().clone() for m in (net.a, net.b, net.head))
    changed = remove_channels(net, ["a", "b"], 0.5, "head", torch.zeros(1, 1, 2, 2))
    assert changed == {"a": [4, 2], "b": [4, 2]}
    kept = [0, 3]
    assert torch.equal(net.a.weight.detach(), a[kept]) and torch.equal(net.b.weight.detach(), b[kept])
    assert torch.equal(net.head.weight.detach(), head[:, kept])


# ---------------------------------------------------------------- LoRA alpha


class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.fc(x))


def test_lora_scaling_is_alpha_over_r_and_merges_by_hand():
    """r = 2, alpha = 6: scaling 3, and the merged weight is W + 3 B A."""
    torch.manual_seed(0)
    net = _Two()
    w = torch.tensor([[1.0, 0.0, -1.0], [2.0, 1.0, 0.0]])
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])  # r x in
    b = torch.tensor([[1.0, 0.0], [0.5, 2.0]])  # out x r
    with torch.no_grad():
        net.fc.weight.copy_(w)
    wrapped = add_lora(net, "^(?:fc)$", r=2, alpha=6, dropout=0.0, train_modules=["head"], seed=0)
    layer = wrapped.base_model.model.fc
    assert layer.scaling == {"default": 3.0} and layer.r == {"default": 2}
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b)
    # B A = [[1, 2, 0], [0.5, 3, -2]]; W + 3 B A = [[4, 6, -1], [3.5, 10, -6]]
    expected = torch.tensor([[4.0, 6.0, -1.0], [3.5, 10.0, -6.0]])
    merged = merge_lora(wrapped)
    torch.testing.assert_close(merged.fc.weight.detach(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["prunelora", "lora"])
def test_methods_train_lora_with_the_configs_alpha_and_amount(method, tiny_data, cpu_ctx, monkeypatch):
    """lora.r=2, lora.alpha=6 (scaling 3; alpha = r would give 1, the preset's alpha 16 gives 8) and
    pruning.amount=0.25 through the config; the training step is replaced by a spy that trains nothing."""
    data, splits = tiny_data
    cfg = _cfg("lora.r=2", "lora.alpha=6", "pruning.amount=0.25")
    seen = {}

    def fit_spy(model, *args, **kwargs):
        seen["scaling"] = {n: dict(m.scaling) for n, m in model.named_modules() if hasattr(m, "lora_A")}
        seen["r"] = {n: dict(m.r) for n, m in model.named_modules() if hasattr(m, "lora_A")}
        return []

    monkeypatch.setattr(PRUNELORA, "fit", fit_spy)
    model = _hand_normed_model(cfg)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    task = UnlearnTask(data, splits, cfg)
    _, record = unlearn_one(method, copy.deepcopy(model), task, cpu_ctx)
    assert len(seen["scaling"]) == record["lora_layers"] == 16
    assert all(s == {"default": 3.0} for s in seen["scaling"].values())
    assert all(r == {"default": 2} for r in seen["r"].values())
    if method == "prunelora":
        quarter = sum(w // 4 for w in widths)  # widths 4, 8, 16, 32: a quarter exactly
        # no training: B = 0, so the merged update writes nothing into the pruned rows
        assert record["pruned_rows"] == record["pruned_rows_still_zero"] == quarter
    else:
        assert "pruned_rows" not in record

