"""PyTorch CPU reference: Zaremba et al.'s small PTB model trained the way ``fastrnn lm train
--preset zaremba-small`` trains it, printing words/s for a side-by-side throughput comparison.

Same model (embedding 200, 2 x 200 LSTM, linear read-out to the vocabulary, no dropout, every
parameter U(-0.1, 0.1) as in Zaremba's code), same batching (fastrnn.train.data's
zaremba_windows: N 20 streams, windows of T 20, state carried and detached between windows), same
optimization (SGD lr 1, halved every epoch after the 4th, global-norm clipping at 5, the loss
summed over time and averaged over the batch), float32.

    python benches/torch_lm_train.py --data /path/to/ptb --threads 1 --steps 300
    python -m fastrnn lm train --data /path/to/ptb --preset zaremba-small --threads 1 \\
        --max-steps 300 --out /tmp/fr-run          # fastrnn's words/s for the same work

``--compare`` alternates blocks of updates of fastrnn (LMTrainer.train_step on the preset's
LanguageModel) and of torch in one process, each on its own model carrying its own state, and
prints both rates and their ratio (fair under a shared, loaded machine: both see the same load).

Run from the project root (it reads the corpus with fastrnn.train.data, so both see the same
windows).  Words/s counts training tokens (N * T per update) over the training loop's time,
excluding evaluation, as fastrnn's metrics.json does.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(vocab, embed=200, hidden=200, layers=2, init_scale=0.1, seed=0):
    import torch
    from torch import nn

    class SmallLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, embed)
            self.lstm = nn.LSTM(embed, hidden, layers, batch_first=True)
            self.out = nn.Linear(hidden, vocab)

        def forward(self, x, state):
            h, state = self.lstm(self.embed(x), state)
            return self.out(h), state

    torch.manual_seed(seed)
    model = SmallLM()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-init_scale, init_scale)
    return model


def train(
    corpus,
    steps=None,
    epochs=1,
    N=20,
    T=20,
    lr=1.0,
    decay=0.5,
    after=4,
    clip=5.0,
    threads=1,
    seed=0,
    log=print,
):
    """Train; return (words/s over all updates, final train perplexity, updates made)."""
    import torch
    from torch import nn

    from fastrnn.train.data import zaremba_windows

    torch.set_num_threads(threads)
    model = build(len(corpus.vocab), seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    words, seconds, done, total, count = 0, 0.0, 0, 0.0, 0
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * decay ** max(epoch + 1 - after, 0)
        state = None
        start = time.perf_counter()
        for xs, ts in zaremba_windows(corpus.train, N, T):
            if steps is not None and done == steps:
                break
            x, t = torch.from_numpy(xs), torch.from_numpy(ts)
            if state is not None:
                state = tuple(s.detach() for s in state)
            scores, state = model(x, state)
            loss = loss_fn(scores.reshape(-1, scores.shape[-1]), t.reshape(-1))
            opt.zero_grad(set_to_none=False)
            (loss * T).backward()  # summed over time, averaged over the batch
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            total += loss.item() * t.numel()
            count += t.numel()
            words += t.numel()
            done += 1
        seconds += time.perf_counter() - start
        if log:
            log(
                f"epoch {epoch + 1}: {done} updates, train ppl {np.exp(total / count):.2f}, "
                f"{words / seconds:.0f} words/s"
            )
        if steps is not None and done == steps:
            break
    return words / seconds, float(np.exp(total / count)), done


def compare(corpus, rounds=6, block=10, threads=1, seed=0, log=print):
    """Alternate `block` updates of fastrnn and of torch, `rounds` times; return
    (fastrnn words/s, torch words/s)."""
    import torch
    from threadpoolctl import threadpool_limits
    from torch import nn

    from fastrnn.train.cli import _make_trainer, build_model
    from fastrnn.train.data import zaremba_windows
    from fastrnn.train.presets import preset

    cfg = dict(preset("zaremba-small"), seed=seed)
    N, T = cfg["batch_size"], cfg["bptt"]
    torch.set_num_threads(threads)
    windows = list(zaremba_windows(corpus.train, N, T))[: (rounds + 1) * block]
    with threadpool_limits(limits=threads, user_api="blas"):
        fr = _make_trainer(cfg, build_model(cfg, len(corpus.vocab)), threads, False)
        fr.optimizer.lr = cfg["lr"]
        tm = build(len(corpus.vocab), seed=seed)
        opt = torch.optim.SGD(tm.parameters(), lr=cfg["lr"])
        loss_fn = nn.CrossEntropyLoss()
        state = [None]

        def torch_step(xs, ts):
            x, t = torch.from_numpy(xs), torch.from_numpy(ts)
            if state[0] is not None:
                state[0] = tuple(s.detach() for s in state[0])
            scores, state[0] = tm(x, state[0])
            loss = loss_fn(scores.reshape(-1, scores.shape[-1]), t.reshape(-1))
            opt.zero_grad(set_to_none=False)
            (loss * T).backward()
            nn.utils.clip_grad_norm_(tm.parameters(), cfg["clip"])
            opt.step()

        times = {"fastrnn": 0.0, "torch": 0.0}
        steps = {"fastrnn": fr.train_step, "torch": torch_step}
        for r in range(rounds + 1):  # round 0 warms both up, untimed
            chunk = windows[r * block : (r + 1) * block]
            for name in ("fastrnn", "torch") if r % 2 else ("torch", "fastrnn"):
                start = time.perf_counter()
                for xs, ts in chunk:
                    steps[name](xs, ts)
                if r:
                    times[name] += time.perf_counter() - start
    words = rounds * block * N * T
    rates = words / times["fastrnn"], words / times["torch"]
    if log:
        log(
            f"{threads} thread(s), {rounds} x {block} updates each, alternating: fastrnn "
            f"{rates[0]:.0f} words/s, torch {rates[1]:.0f} words/s, ratio "
            f"{rates[0] / rates[1]:.2f}"
        )
    return rates


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="PTB directory (ptb.train.txt ...)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=300, help="updates to time (0: whole epochs)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--compare",
        action="store_true",
        help="alternate fastrnn and torch updates in this process; print the ratio",
    )
    p.add_argument("--rounds", type=int, default=6, help="--compare: timed rounds")
    p.add_argument("--block", type=int, default=10, help="--compare: updates per block")
    args = p.parse_args(argv)
    from fastrnn.train.data import load_ptb

    corpus = load_ptb(args.data)
    if args.compare:
        compare(corpus, args.rounds, args.block, args.threads, args.seed)
        return 0
    wps, ppl, done = train(
        corpus, args.steps or None, args.epochs, threads=args.threads, seed=args.seed
    )
    import torch

    print(
        f"torch {torch.__version__}, {args.threads} thread(s): {done} updates of N 20 T 20, "
        f"{wps:.0f} words/s, train ppl {ppl:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
