"""Adversarial attacks on a text classifier: accuracy under attack, attack success rate, perturbed
words and queries per example.

Two attacks, each a greedy search over words ranked by importance, as TextAttack's
``GreedyWordSwapWIR`` does. A word's importance is the drop in the gold label's probability when
the word is deleted ("delete" ranking, tokenizer-agnostic). The words are then tried in that
order. At each word every candidate is checked against the constraints first and only the
survivors are queried, and the candidate that lowers the gold label's probability most is kept.
The attack stops at the first prediction that differs from the gold label (an untargeted goal) or
when the words run out. Examples the model already gets wrong are skipped, as TextAttack does.

- ``char``: DeepWordBug (Gao et al. 2018; TextAttack's ``DeepWordBugGao2018``). Each word gets
  four candidates: two adjacent characters swapped, one character substituted, one deleted, one
  inserted, positions and letters drawn from a seeded RNG. Constraints: stopwords and
  already-changed words are never modified (stopwords: NLTK's and TextFooler's lists), and the
  total Levenshtein distance stays <= 30.
- ``word``: TextFooler-style word substitution (Jin et al. 2020). Candidates are a word's 30
  nearest neighbours with cosine >= 0.5 in a word-embedding space. The perturbed text's sentence
  embedding must keep cosine >= 0.85 with the original, and stopwords and already-changed words
  are never modified.
  **Differences from TextFooler:** the counter-fitted GloVe vectors and the Universal Sentence
  Encoder are downloads, and no POS tagger is installed. So the word space is the whole-word rows
  of all-MiniLM-L6-v2's input embeddings, the sentence encoder is all-MiniLM-L6-v2 (mean
  pooling, the sentence-transformers model built for this), both installed with edgec, and there
  is no POS constraint. These resources are the same for every model attacked, so figures
  compare across methods; they are not TextFooler's published numbers.

TextAttack itself is not used. Its recipes need downloads at run time (word embeddings, USE,
NLTK data) and its install pulls in a large stack. Both attacks here keep its semantics (search,
goal, constraints, skipped/failed/succeeded accounting) and say where they differ.

Example::

    results = run_attack(victim, examples, attack="char", seed=0)
    summarize(results)
    # {'accuracy': 0.9, 'accuracy_under_attack': 0.31, 'attack_success': 0.66, ...}
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from toolchain.data.examples import Example
from toolchain.errors import ConfigError
from toolchain.log import progress

ATTACKS = ("char", "word")
ALIASES = {"deepwordbug": "char", "textfooler": "word"}
MAX_EDIT_DISTANCE = 30  # DeepWordBug's Levenshtein bound in TextAttack
NEIGHBOURS = 30
MIN_WORD_COS = 0.5
MIN_SENTENCE_COS = 0.85

# Words never modified: the union of NLTK's English stopwords and TextFooler's list, which
# adds negations and quantifiers ("nothing", "never", "everything"): without counter-fitted
# vectors, swapping one of those for its antonym would flip the label the attack must keep.
STOPWORDS = frozenset(
    """a about above after again against ain all am an and any are aren aren't as at be because
    been before being below between both but by can couldn couldn't d did didn didn't do does doesn
    doesn't doing don don't down during each few for from further had hadn hadn't has hasn hasn't
    have haven haven't having he her here hers herself him himself his how i if in into is isn
    isn't it it's its itself just ll m ma me mightn mightn't more most mustn mustn't my myself
    needn needn't no nor not now o of off on once only or other our ours ourselves out over own re
    s same shan shan't she she's should should've shouldn shouldn't so some such t than that
    that'll the their theirs them themselves then there these they this those through to too
    under until up ve very was wasn wasn't we were weren weren't what when where which while who
    whom why will with won won't wouldn wouldn't y you you'd you'll you're you've your yours
    yourself yourselves
    """.split()
) | frozenset(
    """a about above across after afterwards again against ain all almost alone along already
    also although am among amongst an and another any anyhow anyone anything anyway anywhere
    are aren aren't around as at back been before beforehand behind being below beside besides
    between beyond both but by can cannot could couldn couldn't d didn didn't doesn doesn't
    don don't down due during either else elsewhere empty enough even ever everyone everything
    everywhere except first for former formerly from hadn hadn't hasn hasn't haven haven't he
    hence her here hereafter hereby herein hereupon hers herself him himself his how however
    hundred i if in indeed into is isn isn't it it's its itself just latter latterly least ll
    may me meanwhile mightn mightn't mine more moreover most mostly must mustn mustn't my
    myself namely needn needn't neither never nevertheless next no nobody none noone nor not
    nothing now nowhere o of off on once one only onto or other others otherwise our ours
    ourselves out over per please s same shan shan't she she's should've shouldn shouldn't
    somehow something sometime somewhere such t than that that'll the their theirs them
    themselves then thence there thereafter thereby therefore therein thereupon these they
    this those through throughout thru thus to too toward towards under unless until up upon
    used ve was wasn wasn't we were weren weren't what whatever when whence whenever where
    whereafter whereas whereby wherein whereupon wherever whether which while whither who
    whoever whole whom whose why with within without won won't would wouldn wouldn't y yet you
    you'd you'll you're you've your yours yourself yourselves
    """.split()
)

_PIECES = re.compile(r"[A-Za-z0-9']+|[^A-Za-z0-9']+")
_WORD = re.compile(r"[A-Za-z0-9']+")

# probabilities (N, C) for a list of examples
Victim = Callable[[list[Example]], np.ndarray]


@dataclass(frozen=True)
class WordResources:
    """What the word attack needs: a word-embedding space and a sentence encoder.

    Args:
        words: the vocabulary (lower-case whole words).
        vectors: (len(words), D) unit-normalised embeddings.
        encode: texts -> (N, E) unit-normalised sentence embeddings.
    """

    words: Sequence[str]
    vectors: np.ndarray
    encode: Callable[[list[str]], np.ndarray]
    source: str = ""
    index: dict = field(default_factory=dict, compare=False)
    cache: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not self.index:
            self.index.update({w: i for i, w in enumerate(self.words)})

    def neighbours(self, word: str) -> list[str]:
        """Up to :data:`NEIGHBOURS` nearest words with cosine >= :data:`MIN_WORD_COS`."""
        key = word.lower()
        if key not in self.cache:
            i = self.index.get(key)
            if i is None:
                self.cache[key] = []
            else:
                sims = self.vectors @ self.vectors[i]
                sims[i] = -1.0
                top = np.argsort(-sims, kind="stable")[:NEIGHBOURS]
                self.cache[key] = [self.words[j] for j in top if sims[j] >= MIN_WORD_COS]
        return self.cache[key]

    def similarity(self, original: str, texts: list[str]) -> np.ndarray:
        """Cosine of each text's sentence embedding with ``original``'s."""
        emb = self._embed([original, *texts])
        return emb[1:] @ emb[0]

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if ("s", t) not in self.cache]
        if missing:
            for t, e in zip(missing, self.encode(missing), strict=True):
                self.cache[("s", t)] = e
        return np.stack([self.cache[("s", t)] for t in texts])


@dataclass
class AttackResult:
    """One example's attack. ``status``: ``skipped`` (already misclassified), ``success`` or
    ``failure``; ``perturbed`` keeps the example's gold label."""

    original: Example
    perturbed: Example
    status: str
    original_prediction: int
    prediction: int
    queries: int
    words: int
    changed: int
    edit_distance: int = 0
    similarity: float | None = None
    changes: list = field(default_factory=list)


class _Text:
    """An example's text fields cut into pieces; words are addressed by (field, piece)."""

    def __init__(self, ex: Example):
        self.ex = ex
        self.fields = [_PIECES.findall(ex.text)]
        if ex.text_pair is not None:
            self.fields.append(_PIECES.findall(ex.text_pair))
        self.words = [
            (f, i) for f, pieces in enumerate(self.fields) for i, p in enumerate(pieces)
            if _WORD.fullmatch(p)
        ]  # fmt: skip

    def with_words(self, subs: dict) -> Example:
        fields = [list(p) for p in self.fields]
        for (f, i), w in subs.items():
            fields[f][i] = w
        text = "".join(fields[0])
        pair = "".join(fields[1]) if len(fields) > 1 else None
        return replace(self.ex, text=text, text_pair=pair)

    def word(self, pos) -> str:
        return self.fields[pos[0]][pos[1]]


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_candidates(word: str, rng: random.Random) -> list[str]:
    """DeepWordBug's four edits of ``word`` (each at a random position): swap two adjacent
    characters, substitute one, delete one, insert one. Duplicates and no-ops are dropped."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    n = len(word)
    if n >= 2:
        i = rng.randrange(n - 1)
        out.append(word[:i] + word[i + 1] + word[i] + word[i + 2 :])
    i = rng.randrange(n)
    out.append(word[:i] + rng.choice(letters.replace(word[i].lower(), "")) + word[i + 1 :])
    if n >= 2:
        i = rng.randrange(n)
        out.append(word[:i] + word[i + 1 :])
    i = rng.randrange(n + 1)
    out.append(word[:i] + rng.choice(letters) + word[i:])
    return [c for c in dict.fromkeys(out) if c != word]


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def attack_one(
    victim: Victim,
    ex: Example,
    *,
    attack: str,
    rng: random.Random,
    resources: WordResources | None = None,
    max_edit_distance: int = MAX_EDIT_DISTANCE,
    min_similarity: float = MIN_SENTENCE_COS,
) -> AttackResult:
    """Attack one example (see the module docstring)."""
    text = _Text(ex)
    gold = int(ex.label)
    probs = victim([ex])[0]
    queries = 1
    first = int(probs.argmax())

    def result(status, subs, pred, sim=None, dist=0, changes=()):
        return AttackResult(ex, text.with_words(subs), status, first, pred, queries,
                            len(text.words), len(subs), dist, sim, list(changes))  # fmt: skip

    if first != gold:
        return result("skipped", {}, first)
    # importance: the gold probability lost when each word is deleted
    if text.words:
        deleted = [text.with_words({pos: ""}) for pos in text.words]
        drop = probs[gold] - victim(deleted)[:, gold]
        queries += len(deleted)
        order = [text.words[i] for i in np.argsort(-drop, kind="stable")]
    else:
        order = []
    subs: dict = {}
    current = float(probs[gold])
    pred, dist, sim, changes = first, 0, None, []
    for pos in order:
        word = text.word(pos)
        if word.lower() in STOPWORDS:
            continue
        if attack == "char":
            cands = char_candidates(word, rng)
            cands = [c for c in cands if dist + levenshtein(word, c) <= max_edit_distance]
        else:
            cands = [_match_case(word, c) for c in resources.neighbours(word)]
        if not cands:
            continue
        trials = [text.with_words({**subs, pos: c}) for c in cands]
        sims = None
        if attack == "word":
            sims = resources.similarity(_joined(ex), [_joined(t) for t in trials])
            keep = [i for i, s in enumerate(sims) if s >= min_similarity]
            cands, trials, sims = [cands[i] for i in keep], [trials[i] for i in keep], sims[keep]
            if not cands:
                continue
        p = victim(trials)
        queries += len(trials)
        best = int(np.argmin(p[:, gold]))
        if p[best, gold] >= current:
            continue
        subs[pos] = cands[best]
        changes.append({"from": word, "to": cands[best]})
        current = float(p[best, gold])
        pred = int(p[best].argmax())
        dist += levenshtein(word, cands[best])
        sim = float(sims[best]) if sims is not None else None
        if pred != gold:
            return result("success", subs, pred, sim, dist, changes)
    return result("failure", subs, pred, sim, dist, changes)


def _joined(ex: Example) -> str:
    return ex.text if ex.text_pair is None else f"{ex.text} {ex.text_pair}"


def run_attack(
    victim: Victim,
    examples: Sequence[Example],
    *,
    attack: str,
    seed: int = 0,
    resources: WordResources | None = None,
    desc: str | None = None,
) -> list[AttackResult]:
    """Attack every example (labels are class indices). Deterministic for a given ``seed``:
    example ``i`` draws its character edits from ``Random(seed * 1_000_003 + i)``."""
    attack = ALIASES.get(attack, attack)
    if attack not in ATTACKS:
        raise ConfigError(f"unknown attack {attack!r}: choose from {', '.join(ATTACKS)} "
                          f"(or {', '.join(ALIASES)})", key="attack")  # fmt: skip
    if attack == "word" and resources is None:
        raise ConfigError("the word attack needs word resources (WordResources)", key="attack")
    for ex in examples:
        if not isinstance(ex.label, int) or isinstance(ex.label, bool):
            raise ConfigError(
                "attacks need labelled classification examples (class indices); "
                "regression and unlabelled splits cannot be attacked",
                key="attack",
            )
    out = []
    for i, ex in progress(list(enumerate(examples)), total=len(examples),
                          desc=desc or f"attack {attack}", unit="example"):  # fmt: skip
        rng = random.Random(seed * 1_000_003 + i)
        out.append(attack_one(victim, ex, attack=attack, rng=rng, resources=resources))
    return out


def summarize(results: Sequence[AttackResult]) -> dict:
    """TextAttack's summary figures.

    - ``accuracy``: correct before the attack, over all examples;
    - ``accuracy_under_attack``: still correct after it, over all examples;
    - ``attack_success``: successes over attacked (originally correct) examples;
    - ``avg_perturbed_words`` and ``avg_perturbed_fraction``: over successful attacks;
    - ``avg_queries``: model queries per attacked example.
    """
    n = len(results)
    attacked = [r for r in results if r.status != "skipped"]
    success = [r for r in attacked if r.status == "success"]
    failed = len(attacked) - len(success)
    out = {
        "n": n,
        "skipped": n - len(attacked),
        "succeeded": len(success),
        "failed": failed,
        "accuracy": round(len(attacked) / n, 4) if n else None,
        "accuracy_under_attack": round(failed / n, 4) if n else None,
        "attack_success": round(len(success) / len(attacked), 4) if attacked else None,
        "avg_perturbed_words": (
            round(float(np.mean([r.changed for r in success])), 3) if success else None
        ),
        "avg_perturbed_fraction": (
            round(float(np.mean([r.changed / max(r.words, 1) for r in success])), 4)
            if success
            else None
        ),
        "avg_queries": (
            round(float(np.mean([r.queries for r in attacked])), 1) if attacked else None
        ),
    }
    return out
