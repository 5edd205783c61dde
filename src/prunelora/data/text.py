"""The text modality's data: question-answer rows as token ids, the tokenizer trained on them, and their batches.

A row is a prompt ("Question: ...\\nAnswer:") followed by its answer (" ..." and the end-of-sequence token). The
training loss reads the answer tokens only (`labels`: -100 elsewhere). Authors play the role classes play for
images: `y_train` is each row's author (the class a request forgets), -1 for the extra facts that every model keeps,
and the test rows are the holdout authors' questions (-2), which no model trains on. The same splits code turns a
request into forget/retain rows for both modalities.

The tokenizer is a byte-level BPE (Hugging Face `tokenizers`) trained on the train rows' text only (questions and
answers of the trained authors and the facts); byte-level, so it encodes any text, the holdout authors' included,
and decodes it back unchanged. Its JSON enters the data's digest, so the model cache keys a model to its tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

import torch

from .authors import QA, AuthorsSet
from .catalog import generate_authors

PAD, EOS = "<pad>", "<eos>"
VOCAB_SIZE = 2048  # tokens of the BPE (256 bytes, 2 special tokens, merges)
HOLDOUT_LABEL, FACT_LABEL = -2, -1  # y of a holdout author's row (test) and of an extra fact (train)


def prompt_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def answer_text(answer: str) -> str:
    return f" {answer}"


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE trained on `texts` (deterministic: the same texts give the same merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(text: str):
    """A tokenizer from its JSON (`TextData.tokenizer_json`, or OUT/tokenizer.json of a text run)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


@dataclass
class TextData:
    """Question-answer rows as right-padded token ids, their answer labels and each row's author."""

    modality: ClassVar[str] = "text"
    augment: ClassVar[str] = "none"
    name: str
    x_train: torch.Tensor  # int64 (N, L): prompt + answer + EOS, then PAD
    y_train: torch.Tensor  # int64 (N,): the row's author (its class), FACT_LABEL for an extra fact
    labels_train: torch.Tensor  # int64 (N, L): the answer tokens (EOS included) where the loss reads, -100 elsewhere
    x_test: torch.Tensor  # the holdout authors' rows
    y_test: torch.Tensor  # HOLDOUT_LABEL
    labels_test: torch.Tensor
    classes: list[str]  # the trained authors' names, by index
    tokenizer_json: str
    source: AuthorsSet  # the generated text: paraphrased and perturbed answers, attributes
    train_rows: torch.Tensor | None = None  # as ImageData's: rows of the data set's own train set (None: all)
    _digest: str | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _tokenizer: object = dataclasses.field(default=None, init=False, repr=False, compare=False)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_json)
        return self._tokenizer

    @property
    def eos_id(self) -> int:
        return self.tokenizer.token_to_id(EOS)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.token_to_id(PAD)

    @property
    def num_classes(self) -> int:
        """The model's output classes: the vocabulary (`create_model` builds a Llama over it)."""
        return self.tokenizer.get_vocab_size()

    @property
    def in_chans(self) -> int:
        return 1

    @property
    def image_size(self) -> int:
        """The longest row in tokens (`create_model`: the Llama's positions)."""
        return max(self.x_train.shape[1], self.x_test.shape[1])

    def digest(self) -> str:
        """SHA-256 of the token tensors, the authors and the tokenizer: what a cached model was trained on."""
        if self._digest is None:
            from ..store.checkpoints import tensors_digest

            tensors = {k: getattr(self, k) for k in ("x_train", "y_train", "labels_train", "x_test", "y_test")}
            extra = torch.frombuffer(bytearray((self.tokenizer_json + json.dumps(self.classes)).encode()),
                                     dtype=torch.uint8)
            self._digest = tensors_digest({**tensors, "text": extra})
        return self._digest

    def to(self, device: torch.device) -> TextData:
        keys = ("x_train", "y_train", "labels_train", "x_test", "y_test", "labels_test")
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in keys})

    def source_rows(self, index: torch.Tensor) -> torch.Tensor:
        return index if self.train_rows is None else self.train_rows[index.to(self.train_rows.device)]

    def batch(self, rows: torch.Tensor, test: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(token ids, labels) of `rows`, cut to the batch's longest row (right padding never reaches a real
        token through causal attention, so no attention mask is needed)."""
        x, labels = (self.x_test, self.labels_test) if test else (self.x_train, self.labels_train)
        ids, lab = x[rows], labels[rows]
        width = int((ids != self.pad_id).sum(1).max())
        return ids[:, :width], lab[:, :width]

    def qa(self, rows: torch.Tensor, test: bool = False) -> list[QA]:
        """The question-answer records of train (or test) rows."""
        if test:
            return [self.source.holdout_qa[i] for i in rows.tolist()]
        table = [*self.source.qa, *self.source.facts]
        return [table[i] for i in self.source_rows(rows).tolist()]

    def alternatives(self, rows: torch.Tensor, test: bool = False) -> tuple[list[list[int]], list[list[list[int]]]]:
        """Each row's paraphrased answer and its perturbed answers (wrong values in the trained answer's wording),
        as answer tokens (EOS included): what TOFU's truth ratio compares."""
        records = self.qa(rows, test)
        paraphrases = encode_answers(self.tokenizer, [q.paraphrase for q in records], self.eos_id)
        width = len(records[0].perturbed) if records else 0
        flat = encode_answers(self.tokenizer, [p for q in records for p in q.perturbed], self.eos_id)
        return paraphrases, [flat[k * width:(k + 1) * width] for k in range(len(records))]

    def prompts_answers(self, rows: torch.Tensor, test: bool = False) -> tuple[list[list[int]], list[list[int]]]:
        """Each row's prompt tokens and answer tokens (EOS included), as lists, for evaluation."""
        x, labels = (self.x_test, self.labels_test) if test else (self.x_train, self.labels_train)
        prompts, answers = [], []
        for ids, lab in zip(x[rows].tolist(), labels[rows].tolist()):
            start = next(i for i, v in enumerate(lab) if v != -100)
            end = start + sum(v != -100 for v in lab)
            prompts.append(ids[:start])
            answers.append(ids[start:end])
        return prompts, answers


def encode_answers(tokenizer, texts: list[str], eos_id: int) -> list[list[int]]:
    """Answers as the models are trained to give them: " " + the text, then EOS."""
    return [enc.ids + [eos_id] for enc in tokenizer.encode_batch([answer_text(t) for t in texts])]


def encode_rows(tokenizer, records: list[QA], pad_id: int, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, labels) of question-answer records, right-padded to the longest."""
    rows, labels = [], []
    for qa in records:
        prompt = tokenizer.encode(prompt_text(qa.question)).ids
        answer = tokenizer.encode(answer_text(qa.answer)).ids + [eos_id]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, a) in enumerate(zip(rows, labels)):
        ids[i, :len(r)] = torch.tensor(r)
        lab[i, :len(a)] = torch.tensor(a)
    return ids, lab


def load_authors(config) -> TextData:
    """The `authors` data set: generated (data.authors x data.questions, seeded by data.split_seed), tokenized by a
    BPE trained on its train rows."""
    source = generate_authors(config)
    train = [*source.qa, *source.facts]
    tokenizer = train_tokenizer([prompt_text(q.question) + answer_text(q.answer) for q in train])
    pad_id, eos_id = tokenizer.token_to_id(PAD), tokenizer.token_to_id(EOS)
    x_train, labels_train = encode_rows(tokenizer, train, pad_id, eos_id)
    x_test, labels_test = encode_rows(tokenizer, list(source.holdout_qa), pad_id, eos_id)
    y_train = torch.tensor([q.author for q in source.qa] + [FACT_LABEL] * len(source.facts), dtype=torch.long)
    y_test = torch.full((len(source.holdout_qa),), HOLDOUT_LABEL, dtype=torch.long)
    return TextData(config.name, x_train, y_train, labels_train, x_test, y_test, labels_test,
                    [a.name for a in source.authors], tokenizer.to_str(), source)
