"""The data of sequence classification: labelled files (``label<TAB>sentence`` per line), plain
sentence files, the vocabulary built from training examples, and the demo's synthetic task."""

import contextlib
import sys
import warnings

import numpy as np

__all__ = [
    "PAD",
    "UNK",
    "demo_data",
    "read_labelled",
    "read_sentences",
    "read_word_vectors",
    "vocabulary",
]

#: id 0 pads a batch, id 1 reads every word the training examples did not hold often enough
PAD, UNK = "<pad>", "<unk>"


def _lines(path, what):
    """(line number, line without its end) of a UTF-8 text file ("-": standard input); errors
    name the path."""
    try:
        if path == "-":  # UTF-8 whatever the locale says, and never decoded with replacements
            raw = getattr(sys.stdin, "buffer", None)
            f = contextlib.nullcontext(sys.stdin if raw is None else (b.decode() for b in raw))
        else:
            f = open(path, encoding="utf-8")
        with f as lines:
            for number, line in enumerate(lines, 1):
                yield number, line.rstrip("\n").rstrip("\r")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file ({what})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, expected a file ({what})") from None
    except UnicodeDecodeError as e:
        where = "standard input" if path == "-" else path
        raise ValueError(f"{where}: not UTF-8 text ({e})") from None


def read_labelled(path):
    """[(label, [words])] from a file of ``label<TAB>sentence`` lines (blank lines skipped).

    Raises FileNotFoundError naming a missing path, ValueError naming the path and line of a
    malformed line (no tab, empty label or sentence) or a file that is not UTF-8 text."""
    examples = []
    for number, line in _lines(path, "the labelled corpus"):
        if not line.strip():
            continue
        label, tab, sentence = line.partition("\t")
        words = sentence.split()
        if not tab or not label.strip() or not words:
            raise ValueError(f"{path}:{number}: expected 'label<TAB>sentence', got {line[:60]!r}")
        examples.append((label.strip(), words))
    if not examples:
        raise ValueError(f"{path}: holds no examples")
    return examples


def read_sentences(path):
    """[[words]] of a file of one sentence per line ("-": standard input; blank lines skipped);
    errors as ``read_labelled``'s.  A tab in a line is an error: the file is labelled, and its label
    would be read as a word (``fastrnn classify eval`` reads labelled files)."""
    sentences = []
    for number, line in _lines(path, "the sentences to classify"):
        if "\t" in line:
            raise ValueError(
                f"{path}:{number}: holds a tab; expected one sentence per line, not "
                "'label<TAB>sentence' (give labelled files to `fastrnn classify eval`)"
            )
        if line.strip():
            sentences.append(line.split())
    if not sentences:
        raise ValueError(f"{path}: holds no sentences")
    return sentences


def read_word_vectors(path, words=None):
    """{word: float32 vector} of a text file of word vectors, one word a line followed by its
    numbers (GloVe's format; word2vec's text format, whose first line gives the count and the
    size, too).  With `words`, only those are kept (a large file read for a small vocabulary).

    Every vector must have the size of the first (and the header's); a line that breaks that, a
    number that does not parse, a word2vec file with fewer or more vectors than its header says
    (a truncated download), a missing or non-UTF-8 file is an error naming the path (and line).
    A word given twice keeps its first vector, with a warning (gensim's reading: some published
    files repeat a few words)."""
    wanted = None if words is None else set(words)
    vectors, size, header, count, repeated = {}, None, None, 0, []
    seen = set()
    for number, line in _lines(path, "the word vectors"):
        parts = line.rstrip().split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            header = int(parts[0]), int(parts[1])  # word2vec's header: count and size
            size = header[1] or None
            continue
        if not line.strip():
            continue
        word, values = parts[0], parts[1:]
        if size is None:
            size = len(values)
            if size < 1:
                raise ValueError(f"{path}:{number}: expected a word and its numbers")
        if len(values) != size:
            first = "the header says" if header else "the first line had"
            raise ValueError(
                f"{path}:{number}: {len(values)} numbers after {word[:30]!r}, {first} {size}"
            )
        count += 1
        if word in seen:
            repeated.append(word)
            continue
        seen.add(word)
        if wanted is not None and word not in wanted:
            continue
        try:
            vectors[word] = np.array(values, np.float32)
        except ValueError:
            raise ValueError(
                f"{path}:{number}: numbers that do not parse after {word[:30]!r}"
            ) from None
    if size is None or count == 0:
        raise ValueError(f"{path}: holds no word vectors")
    if header is not None and count != header[0]:
        raise ValueError(
            f"{path}: its header says {header[0]} vectors, it holds {count} (a truncated or "
            "damaged file?)"
        )
    if repeated:
        warnings.warn(
            f"{path}: {len(repeated)} word(s) given more than once, the first vector kept "
            f"({', '.join(map(repr, repeated[:5]))}{', ...' if len(repeated) > 5 else ''})",
            stacklevel=2,
        )
    if not all(np.isfinite(v).all() for v in vectors.values()):
        raise ValueError(f"{path}: holds NaN or Inf")
    return vectors


def vocabulary(examples, min_count=1):
    """The word list (id order) of training `examples` [(label, [words])]: ``<pad>``,
    ``<unk>``, then every word seen at least `min_count` times, the most frequent first (ties
    in string order, so the same examples give the same ids)."""
    counts = {}
    for _, words in examples:
        for w in words:
            counts[w] = counts.get(w, 0) + 1
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [PAD, UNK] + [w for w in kept if w not in (PAD, UNK)]


def demo_data(n, steps, classes, vocab, rng):
    """The demo's task: ids (n, steps) int64, labels (n,), lengths (n,) (uniform in
    [steps // 2, steps]).  Token ids 0..classes-1 are the class tokens; the label is the
    first token; every other valid position holds a token uniform over [0, vocab); padding
    holds 0."""
    if vocab <= classes:
        raise ValueError(f"vocab ({vocab}) must be larger than classes ({classes})")
    lengths = rng.integers(steps // 2, steps + 1, n)
    ids = rng.integers(0, vocab, (n, steps))
    labels = rng.integers(0, classes, n)
    ids[:, 0] = labels
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return ids, labels, lengths
