"""The Cross-View Training tagger (Clark et al., 2018, "Semi-Supervised Sequence Modeling with
Cross-View Training"): a character CNN and word embeddings, a two-layer BiLSTM, a primary
prediction module on the full view and auxiliary modules on restricted views of the first layer.

Views of word ``t`` (``f1``/``b1``: the forward/backward LSTM of the first layer):

- ``primary``: both directions of the second layer (the whole sentence);
- ``forward``: ``f1[t]``, words ``1..t``;  ``backward``: ``b1[t]``, words ``t..n``;
- ``future``: ``f1[t-1]``, words ``1..t-1`` (it must guess word t's label without seeing it);
- ``past``: ``b1[t+1]``, words ``t+1..n``.

Each direction is its own unidirectional ``nn.LSTM``; the backward one reads each sentence
reversed within its length (:func:`reverse`), so padding never reaches a real word in either
direction and the graph exports to ONNX (``LSTM`` ops) without packed sequences. The characters
are the word's UTF-8 bytes (+1; 0 pads), so no character vocabulary is needed at run time.

Example::

    model = CVTTagger(CVTShape(vocab=20000, labels=9))
    logits = model(word_ids, char_ids, mask)               # (B, W, labels), the primary module
    views = model.views(word_ids, char_ids, mask)          # {"forward": (B, W, labels), ...}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

VIEWS = ("forward", "backward", "future", "past")


@dataclass(frozen=True)
class CVTShape:
    """The sizes of a :class:`CVTTagger`."""

    vocab: int
    labels: int
    word_dim: int = 300
    char_dim: int = 50
    char_filters: int = 100
    char_width: int = 3
    hidden: int = 256  # first BiLSTM layer, per direction
    hidden2: int = 128  # second BiLSTM layer, per direction
    proj: int = 256  # the prediction modules' hidden layer
    max_word_bytes: int = 16
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def reverse(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` (B, T, D) reversed within its length; padding stays where it is."""
    t = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, T)
    n = lengths.unsqueeze(1)  # (B, 1)
    idx = torch.where(t < n, n - 1 - t, t)  # (B, T)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class Head(nn.Module):
    """A prediction module: one hidden layer (ReLU), then the label scores."""

    def __init__(self, dim: int, proj: int, labels: int):
        super().__init__()
        self.hidden = nn.Linear(dim, proj)
        self.out = nn.Linear(proj, labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class CVTTagger(nn.Module):
    """See the module docstring; ``forward`` is the primary module (what ships)."""

    def __init__(self, shape: CVTShape):
        super().__init__()
        s = self.shape = shape
        self.word = nn.Embedding(s.vocab, s.word_dim, padding_idx=0)
        self.char = nn.Embedding(257, s.char_dim, padding_idx=0)
        self.char_cnn = nn.Conv1d(s.char_dim, s.char_filters, s.char_width, padding=1)
        d_in = s.word_dim + s.char_filters
        self.l1f = nn.LSTM(d_in, s.hidden, batch_first=True)
        self.l1b = nn.LSTM(d_in, s.hidden, batch_first=True)
        self.l2f = nn.LSTM(2 * s.hidden, s.hidden2, batch_first=True)
        self.l2b = nn.LSTM(2 * s.hidden, s.hidden2, batch_first=True)
        self.drop = nn.Dropout(s.dropout)
        self.primary = Head(2 * s.hidden2, s.proj, s.labels)
        self.aux = nn.ModuleDict({f"view_{v}": Head(s.hidden, s.proj, s.labels) for v in VIEWS})

    def encode(self, word_ids, char_ids, mask):
        """``(f1, b1, h2)``: the first layer's forward and backward states (B, W, hidden) and
        the second layer's output (B, W, 2 * hidden2)."""
        b, w, c = char_ids.shape
        chars = self.char(char_ids.reshape(b * w, c)).transpose(1, 2)  # (B*W, char_dim, C)
        chars = torch.relu(self.char_cnn(chars)).max(-1).values.reshape(b, w, -1)
        x = self.drop(torch.cat([self.word(word_ids), chars], -1))  # (B, W, d_in)
        n = mask.sum(1)
        f1 = self.l1f(x)[0]
        b1 = reverse(self.l1b(reverse(x, n))[0], n)
        h1 = self.drop(torch.cat([f1, b1], -1))
        f2 = self.l2f(h1)[0]
        b2 = reverse(self.l2b(reverse(h1, n))[0], n)
        return f1, b1, self.drop(torch.cat([f2, b2], -1))

    def forward(self, word_ids, char_ids, mask):
        return self.primary(self.encode(word_ids, char_ids, mask)[2])

    def views(self, word_ids, char_ids, mask) -> dict[str, torch.Tensor]:
        """The auxiliary modules' scores (B, W, labels) for each view of :data:`VIEWS`."""
        f1, b1, _ = self.encode(word_ids, char_ids, mask)
        return self.view_scores(f1, b1, mask)

    def view_scores(self, f1, b1, mask) -> dict[str, torch.Tensor]:
        f1, b1 = self.drop(f1), self.drop(b1)
        m = mask.unsqueeze(-1).to(f1.dtype)
        zero = torch.zeros_like(f1[:, :1])
        future = torch.cat([zero, f1[:, :-1]], 1)  # f1[t-1]: words before t
        past = torch.cat([b1[:, 1:], zero], 1) * torch.cat([m[:, 1:], m[:, :1] * 0], 1)
        inputs = {"forward": f1, "backward": b1, "future": future, "past": past}
        return {v: self.aux[f"view_{v}"](inputs[v]) for v in VIEWS}


__all__ = ["VIEWS", "CVTShape", "CVTTagger", "reverse"]
