"""Training: optimizers (``SGD``, ``Adam``), corpora (PTB, WikiText) and TBPTT batching
(``data``), learning-rate schedules, weight averaging (``averaging``), the language-model
trainer (``LMTrainer``), data-parallel training over MPI (``distributed``), checkpoints, text
generation and the ``fastrnn lm`` command line (``cli``, ``run``, ``saved``, ``config``)."""

from .averaging import WeightAverage, nt_triggered
from .data import Corpus, Vocabulary, eval_windows, load_corpus, load_ptb, read_words, train_windows
from .generate import generate
from .optim import SGD, Adam
from .schedules import ConstantLR, DecayLR, PlateauLR, make_schedule
from .trainer import EVAL_BPTT, LMTrainer, TrainingInterrupted, evaluate_perplexity

__all__ = [
    "EVAL_BPTT",
    "SGD",
    "Adam",
    "ConstantLR",
    "Corpus",
    "DecayLR",
    "LMTrainer",
    "PlateauLR",
    "TrainingInterrupted",
    "Vocabulary",
    "WeightAverage",
    "eval_windows",
    "evaluate_perplexity",
    "generate",
    "load_corpus",
    "load_ptb",
    "make_schedule",
    "nt_triggered",
    "read_words",
    "train_windows",
]
