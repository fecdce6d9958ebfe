"""Corpus reading and truncated-BPTT batching for language models.

A corpus is three tokenised text files, train, valid and test: a directory of Mikolov's
preprocessed PTB (``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt``) or WikiText's
(``wiki.train.tokens``, ``wiki.valid.tokens``, ``wiki.test.tokens``; WikiText-2 and -103), or any
three files named one by one.  Words are split on whitespace and ``<eos>`` appended at the end of
every line; the vocabulary comes from the training file, ids in order of first appearance (as the
DLFS2 book's ``dataset/ptb.py`` numbers them, so its PTB train corpus is the same 929,589 ids).
A corpus not preprocessed that way (every word kept) takes a vocabulary size: the most frequent
training words are kept and every other word, in any split, reads as ``<unk>``.

Batching cuts a corpus into ``N`` parallel streams read in windows of ``T`` steps, targets
shifted by one; the model's state is carried from one window to the next, so every window
continues its stream.  Two layouts are provided, each exactly as its source does it:

- :func:`zaremba_windows` (Zaremba et al. 2014, TensorFlow's ``ptb_iterator``): the first
  ``N * (len // N)`` ids reshaped into ``N`` rows, ``(row_len - 1) // T`` windows per epoch.
- :func:`dlfs2_windows` (the book's ``RnnlmTrainer``): stream ``i`` starts at ``i * (len // N)``
  and reads modulo the corpus; ``len // (N * T)`` windows per epoch, and the read position goes on
  from one epoch to the next (``epoch`` selects where it stands).
"""

import os

import numpy as np

__all__ = [
    "BATCHINGS",
    "EOS",
    "UNK",
    "Corpus",
    "Vocabulary",
    "dlfs2_windows",
    "LAYOUTS",
    "corpus_files",
    "eval_windows",
    "load_corpus",
    "load_ptb",
    "read_words",
    "window_count",
    "zaremba_windows",
]

EOS = "<eos>"
UNK = "<unk>"  # PTB's word for the rare words its preprocessing replaced
# the file names of each corpus layout a directory may hold
LAYOUTS = {
    "ptb": {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
    "wikitext": {
        "train": "wiki.train.tokens",
        "valid": "wiki.valid.tokens",
        "test": "wiki.test.tokens",
    },
}
PTB_FILES = LAYOUTS["ptb"]
SPLITS = ("train", "valid", "test")


def corpus_files(directory):
    """{split: path} of the corpus in `directory`: the first layout of ``LAYOUTS`` whose training
    file is there.  A ValueError naming the directory and the expected names otherwise."""
    directory = os.fspath(directory)
    expected = " or ".join(", ".join(files.values()) for files in LAYOUTS.values())
    if not os.path.isdir(directory):
        raise ValueError(f"{directory}: not a directory (expected one holding {expected})")
    for files in LAYOUTS.values():
        if os.path.exists(os.path.join(directory, files["train"])):
            return {k: os.path.join(directory, v) for k, v in files.items()}
    raise ValueError(f"{directory}: holds no corpus (expected {expected})")


class Vocabulary:
    """Word <-> id maps; ids in order of first appearance."""

    def __init__(self, words):
        self.id_to_word = list(words)
        self.word_to_id = {w: i for i, w in enumerate(self.id_to_word)}
        if len(self.word_to_id) != len(self.id_to_word):
            dup = next(w for i, w in enumerate(self.id_to_word) if self.word_to_id[w] != i)
            raise ValueError(f"vocabulary words must be unique, {dup!r} appears twice")

    @classmethod
    def from_corpus(cls, words, max_size=None):
        """The words of a training corpus, in order of first appearance; with `max_size`, only
        the most frequent words (ties: the first to appear) and ``<unk>``, max_size in all
        (``<unk>`` at the end where the corpus never wrote it)."""
        if max_size is None:
            return cls(dict.fromkeys(words))  # dict keeps first-appearance order
        if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)):
            raise TypeError(f"max_size must be an integer or None, got {max_size!r}")
        if max_size < 2:
            raise ValueError(f"max_size must be at least 2 (a word and {UNK}), got {max_size}")
        counts = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        # sorted() is stable, reverse too: equal counts keep the order of first appearance
        by_count = sorted(counts, key=counts.__getitem__, reverse=True)
        kept = set([w for w in by_count if w != UNK][: max_size - 1]) | {UNK}
        ordered = [w for w in counts if w in kept]
        return cls(ordered if UNK in counts else ordered + [UNK])

    def __len__(self):
        return len(self.id_to_word)

    def __contains__(self, word):
        return word in self.word_to_id

    def encode(self, words, path="<words>"):
        """ids of `words`; a word outside the vocabulary is a ValueError naming `path`."""
        try:
            return np.fromiter(
                (self.word_to_id[w] for w in words), dtype=np.int64, count=len(words)
            )
        except KeyError as e:
            raise ValueError(
                f"{path}: word {e.args[0]!r} is not in the training vocabulary ({len(self)} words)"
            ) from None

    def encode_unk(self, words, path="<words>"):
        """(ids of `words`, how many were outside the vocabulary and read as ``<unk>``); with no
        ``<unk>`` in the vocabulary, such a word is a ValueError naming `path`."""
        unk = self.word_to_id.get(UNK)
        if unk is None:
            return self.encode(words, path), 0
        ids = np.fromiter(
            (self.word_to_id.get(w, -1) for w in words), dtype=np.int64, count=len(words)
        )
        outside = ids < 0
        ids[outside] = unk
        return ids, int(outside.sum())


class Corpus:
    """A language-modelling corpus: ``train``, ``valid``, ``test`` id arrays and ``vocab``;
    ``paths`` {split: file}; ``unknown`` {split: how many of its words, outside the vocabulary,
    read as ``<unk>``}."""

    def __init__(self, train, valid, test, vocab, paths=None, unknown=None):
        self.train, self.valid, self.test, self.vocab = train, valid, test, vocab
        self.paths = paths or {}
        self.unknown = unknown or {}

    def __repr__(self):
        return (
            f"Corpus(vocab={len(self.vocab)}, train={len(self.train)}, "
            f"valid={len(self.valid)}, test={len(self.test)})"
        )


def read_words(path):
    """The words of a Mikolov-style text file: each line split on whitespace, then ``<eos>``.

    A missing, unreadable, binary or undecodable file, or one without a word, is a ValueError
    naming `path`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a text file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    if b"\x00" in raw:
        raise ValueError(f"{path}: binary file (NUL bytes), expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (undecodable byte at offset {e.start})") from None
    words = []
    for line in text.splitlines():
        words.extend(line.split())
        words.append(EOS)
    if all(w == EOS for w in words):
        raise ValueError(f"{path}: no words (empty file)")
    return words


def load_corpus(source, splits=SPLITS, max_vocab=None):
    """Read a corpus into a :class:`Corpus`: `source` is a directory (PTB's or WikiText's file
    names: :func:`corpus_files`) or a dict {"train", "valid", "test": path}.

    The vocabulary is the training file's: every word, or with `max_vocab` its most frequent
    words and ``<unk>`` (:meth:`Vocabulary.from_corpus`).  Where the vocabulary holds ``<unk>``
    (PTB's, WikiText's, any capped one), a word outside it reads as ``<unk>`` and is counted in
    ``Corpus.unknown``; elsewhere it is a ValueError naming the file.  Splits not listed in
    `splits` (besides train, always read) are left empty."""
    if isinstance(source, dict):
        missing = [k for k in SPLITS if not source.get(k)]
        if missing:
            raise ValueError(f"a corpus needs a file for each of {', '.join(SPLITS)}: {missing}")
        paths = {k: os.fspath(source[k]) for k in SPLITS}
    else:
        paths = corpus_files(source)
    train_words = read_words(paths["train"])
    vocab = Vocabulary.from_corpus(train_words, max_vocab)
    ids, unknown = {}, {}
    for split in SPLITS:
        if split != "train" and split not in splits:
            ids[split] = np.zeros(0, np.int64)
            continue
        words = train_words if split == "train" else read_words(paths[split])
        try:
            ids[split], unknown[split] = vocab.encode_unk(words, paths[split])
        except ValueError as e:
            raise ValueError(
                f"{e}; a vocabulary size (max_vocab, `--max-vocab V`) reads rare and unseen "
                f"words as {UNK}"
            ) from None
    return Corpus(ids["train"], ids["valid"], ids["test"], vocab, paths, unknown)


#: the same as :func:`load_corpus` (the name the PTB-only reader had)
load_ptb = load_corpus


def _check_layout(ids, N, T, name):
    if not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"batch size must be a positive integer, got {N!r}")
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"bptt (window length) must be a positive integer, got {T!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if window_count(len(ids), N, T, name) < 1:
        raise ValueError(
            f"corpus of {len(ids)} ids is too short for batch size {N} and bptt "
            f"{T} ({name} batching needs at least one window)"
        )
    return ids


def window_count(n, N, T, batching="zaremba"):
    """Windows per epoch for a corpus of `n` ids."""
    if batching == "zaremba":
        return (n // N - 1) // T
    if batching == "dlfs2":
        return (n - 1) // (N * T)
    raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")


def zaremba_windows(ids, N, T, epoch=0, start=0):
    """Yield (xs, ts), each (N, T) int64, as Zaremba et al.'s ``ptb_iterator``.

    `epoch` is accepted for symmetry with :func:`dlfs2_windows` (this layout restarts every
    epoch); `start` skips that many windows (to resume inside an epoch)."""
    ids = _check_layout(ids, N, T, "zaremba")
    row_len = len(ids) // N
    data = ids[: N * row_len].reshape(N, row_len)
    for i in range(start, window_count(len(ids), N, T, "zaremba")):
        yield data[:, i * T : (i + 1) * T], data[:, i * T + 1 : (i + 1) * T + 1]


def dlfs2_windows(ids, N, T, epoch=0, start=0):
    """Yield (xs, ts), each (N, T) int64, as the book's ``RnnlmTrainer.get_batch``.

    xs = ids[:-1], ts = ids[1:]; stream i reads from offset i * (len(xs) // N), modulo len(xs).
    The book's read position carries on across epochs: epoch e starts `e * windows * T` steps
    in.  `start` skips that many windows of the epoch."""
    ids = _check_layout(ids, N, T, "dlfs2")
    xs_all, ts_all = ids[:-1], ids[1:]
    size = len(xs_all)
    offsets = np.arange(N)[:, None] * (size // N)
    windows = window_count(len(ids), N, T, "dlfs2")
    steps = np.arange(T)[None, :]
    for i in range(start, windows):
        pos = (offsets + (epoch * windows + i) * T + steps) % size
        yield xs_all[pos], ts_all[pos]


BATCHINGS = ("zaremba", "dlfs2")
_LAYOUTS = {"zaremba": zaremba_windows, "dlfs2": dlfs2_windows}


def train_windows(batching, ids, N, T, epoch=0, start=0):
    """The windows of one training epoch in the named layout (see the module doc)."""
    if batching not in _LAYOUTS:
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
    return _LAYOUTS[batching](ids, N, T, epoch, start)


def eval_windows(ids, T):
    """Yield (xs, ts), each (1, t) with t <= T, covering every prediction of `ids` once.

    One stream (batch 1), all ``len(ids) - 1`` next-word predictions, the last window shorter:
    with the state carried across windows this is the paper's word-by-word evaluation (batch 1,
    one step per call), computed T steps per call."""
    ids = np.asarray(ids)
    if len(ids) < 2:
        raise ValueError(f"evaluation needs at least 2 ids, got {len(ids)}")
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"bptt (window length) must be a positive integer, got {T!r}")
    for i in range(0, len(ids) - 1, T):
        j = min(i + T, len(ids) - 1)
        yield ids[None, i:j], ids[None, i + 1 : j + 1]
