"""`sentiment`: UTF-8 text -> negative / positive, learned from bytes.

No sentence-level sentiment corpus ships with any installed package, so the
training sentences are generated from the VADER lexicon (vaderSentiment, MIT)
and labelled by VADER's own rule-based scorer, which handles negation
("not good"), intensifiers ("very"), contrast ("but") and capitals. The
models therefore learn to imitate VADER from raw bytes: they are as good as
VADER is on the sentences it can score, and no better.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.specs.base import Dataset, ModelSpec, TrainingPlan

TEXT_LENGTH = 256  # bytes the graph takes; longer texts are truncated
_TRAIN_LENGTH = 96  # generated sentences are shorter than this
_N_SENTENCES = 16_000
_HELD_OUT = 0.2

_FILLER = (
    "the movie was the food is this service it my day our trip their show "
    "a book was an idea is that phone felt the hotel seemed the ending looked "
    "i think it was we found the staff honestly the plot overall the music "
    "the price today this place the team after all the story in the end"
).split()
# Everyday sentiment words, drawn far more often than the rest of the
# lexicon (real text is Zipfian; a uniform draw would see "good" a few times).
_COMMON = (
    "good great love like nice happy best excellent amazing awesome wonderful fantastic perfect "
    "enjoy fun beautiful glad pleasant recommend helpful friendly fine cool brilliant delicious "
    "bad hate terrible awful worst poor horrible boring sad angry disappointed disappointing "
    "annoying ugly wrong broken useless rude stupid hard problem fail waste dislike"
).split()
_COMMON_SHARE = 0.5
_NEGATIONS = ("not", "never", "isn't", "wasn't", "don't", "hardly")
_BOOSTERS = ("very", "really", "extremely", "so", "incredibly", "slightly", "barely")


def _lexicon() -> tuple[list[str], list[str]]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    words = [w for w in analyzer.lexicon if w.isalpha() and len(w) > 2]
    positive = sorted(w for w in words if analyzer.lexicon[w] >= 1.0)
    negative = sorted(w for w in words if analyzer.lexicon[w] <= -1.0)
    return positive, negative


def _sentence(rng: np.random.Generator, positive: list[str], negative: list[str], common: list[str]) -> str:
    parts: list[str] = []
    for _ in range(rng.integers(1, 3)):
        # Some clauses have no filler at all, so that a lone "good" is in distribution.
        clause = [str(w) for w in rng.choice(_FILLER, size=rng.integers(0, 5))]
        if rng.random() < 0.25:
            clause.append(str(rng.choice(_BOOSTERS)))
        if rng.random() < 0.3:
            clause.append(str(rng.choice(_NEGATIONS)))
        if rng.random() < _COMMON_SHARE:
            clause.append(str(rng.choice(common)))
        else:
            clause.append(str(rng.choice(positive if rng.random() < 0.5 else negative)))
        parts.append(" ".join(clause))
    text = " but ".join(parts) if rng.random() < 0.3 else " and ".join(parts)
    if rng.random() < 0.2:
        text += "!"
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    return text[:_TRAIN_LENGTH]


def encode(texts: list[str], length: int = TEXT_LENGTH) -> np.ndarray:
    """UTF-8 bytes, truncated or zero-padded to `length`: the graph's input."""
    out = np.zeros((len(texts), length), dtype=np.uint8)
    for row, text in enumerate(texts):
        raw = text.encode("utf-8")[:length]
        out[row, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def load_data(seed: int) -> Dataset:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    positive, negative = _lexicon()
    common = [w for w in _COMMON if w in analyzer.lexicon]
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    while len(texts) < _N_SENTENCES:
        text = _sentence(rng, positive, negative, common)
        if text in seen:
            continue
        compound = analyzer.polarity_scores(text)["compound"]
        if abs(compound) < 0.05:  # VADER calls it neutral: no label to learn
            continue
        seen.add(text)
        texts.append(text)
        labels.append(int(compound > 0))
    split = int(len(texts) * (1 - _HELD_OUT))
    x = encode(texts, _TRAIN_LENGTH)
    y = np.asarray(labels, dtype=np.int64)
    return Dataset(
        x_train=x[:split],
        y_train=y[:split],
        x_test=encode(texts[split:], TEXT_LENGTH),
        y_test=y[split:],
        description=(
            f"{len(texts)} sentences generated from the VADER lexicon "
            f"({len(positive)} positive, {len(negative)} negative words; {len(common)} everyday ones "
            f"drawn {int(_COMMON_SHARE * 100)}% of the time), labelled by "
            f"VADER's compound score (neutral dropped); seed {seed}; "
            f"{int(_HELD_OUT * 100)}% held out"
        ),
    )


class _Bytes(nn.Module):
    """uint8 bytes -> (embeddings, mask). ASCII capitals fold to lower case
    inside the graph, so clients send raw UTF-8 and nothing else."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, dim, padding_idx=0)

    @staticmethod
    def fold(text: torch.Tensor) -> torch.Tensor:
        codes = text.to(torch.int64)
        upper = (codes >= 65) & (codes <= 90)
        return torch.where(upper, codes + 32, codes)

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.fold(text)
        mask = (codes != 0).to(torch.float32)
        return self.embed(codes), mask


class BagOfTrigrams(nn.Module):
    """v1: fastText-style mean of hashed byte-trigram embeddings -> linear.
    Order-blind beyond three bytes, so "not good" and "good, not" look alike;
    a deliberately simple baseline."""

    def __init__(self, dim: int = 32, buckets: int = 8191) -> None:
        super().__init__()
        self.bytes = _Bytes(1)  # only its case folding and mask are used
        self.buckets = buckets
        self.embed = nn.Embedding(buckets, dim)
        self.head = nn.Linear(dim, 2)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        codes = self.bytes.fold(text)
        a, b, c = codes[:, :-2], codes[:, 1:-1], codes[:, 2:]
        grams = (a * 65536 + b * 256 + c) % self.buckets  # a prime: every byte counts
        mask = (c != 0).to(torch.float32)
        emb = self.embed(grams) * mask.unsqueeze(-1)
        pooled = emb.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return torch.softmax(self.head(pooled), dim=-1)


class ByteCNN(nn.Module):
    """v2: byte embeddings -> two 1-D convolutions -> masked max-pool -> linear.
    Sees character n-grams of words and their neighbours (negation)."""

    def __init__(self, dim: int = 32, channels: int = 64) -> None:
        super().__init__()
        self.bytes = _Bytes(dim)
        self.conv1 = nn.Conv1d(dim, channels, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=5, padding=4, dilation=2)
        self.head = nn.Linear(channels, 2)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        emb, mask = self.bytes(text)
        h = torch.relu(self.conv1(emb.transpose(1, 2)))
        h = torch.relu(self.conv2(h))
        h = h - (1.0 - mask.unsqueeze(1)) * 1e4  # padding never wins the max
        return torch.softmax(self.head(h.amax(dim=2)), dim=-1)


SPEC = ModelSpec(
    name="sentiment",
    labels=("negative", "positive"),
    input_name="text",
    input_dims=(TEXT_LENGTH,),
    output_name="probabilities",
    parameters={
        "input_kind": "text_utf8",
        "text_length": str(TEXT_LENGTH),
        "text_padding": "zero bytes after the UTF-8 text; longer texts are truncated",
    },
    load_data=load_data,
    architectures={"bag": BagOfTrigrams, "cnn": ByteCNN},
    plans={
        "bag": TrainingPlan(epochs=8, batch_size=128, learning_rate=1e-2),
        "cnn": TrainingPlan(epochs=10, batch_size=64, learning_rate=2e-3),
    },
    default_arch="cnn",
)
