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
LanguageModel) and of torch, each in a process of its own on its own model carrying its own
state, warmed up by an untimed first block, and prints both rates and their ratio (fair under a
shared, loaded machine too: both see the same load).  Not one process: after its calls each
framework's worker threads spin for a while, and elsewhere (benches/lengths.py) torch's took a
core from fastrnn's kernels in the same process at 2 threads.  Here the two ways read the same
within the machine's spread (2 threads, idle: 1.35 and 1.46 in one process, 1.32-1.35 in two).

``--bf16``: both at bfloat16 precision, fastrnn with ``matmul_precision="medium"`` (its large
products' operands in bfloat16, float32 sums) and torch under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (its LSTM and linear layers in bfloat16).
"""

import argparse
import importlib.util
import os
import sys
import time

import numpy as np

if importlib.util.find_spec("fastrnn") is None:  # run from a source checkout: use its build
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
    bf16=False,
):
    """Train; return (words/s over all updates, final train perplexity, updates made)."""
    from fastrnn.train.data import zaremba_windows

    step, opt, state = _torch_step(len(corpus.vocab), threads, seed, lr, clip, bf16)
    words, seconds, done, total, count = 0, 0.0, 0, 0.0, 0
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = lr * decay ** max(epoch + 1 - after, 0)
        state[0] = None
        start = time.perf_counter()
        for xs, ts in zaremba_windows(corpus.train, N, T):
            if steps is not None and done == steps:
                break
            loss = step(xs, ts)
            total += loss.item() * ts.size
            count += ts.size
            words += ts.size
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


def _block_worker(conn, name, data, threads, seed, windows_needed, bf16=False):
    """A process that trains one implementation ("fastrnn" or "torch") on the first
    `windows_needed` windows of zaremba-small's batching: each message (start, stop) from `conn`
    runs those windows and answers with their seconds; None ends it."""
    from threadpoolctl import threadpool_limits

    from fastrnn.train.config import build_model, make_trainer
    from fastrnn.train.data import load_ptb, zaremba_windows
    from fastrnn.train.presets import preset

    corpus = load_ptb(data, splits=("train",))
    cfg = dict(preset("zaremba-small"), seed=seed)
    if bf16:
        cfg["matmul_precision"] = "medium"
    with threadpool_limits(limits=threads, user_api="blas"):
        if name == "fastrnn":
            trainer = make_trainer(cfg, build_model(cfg, len(corpus.vocab)), threads, False)
            trainer.optimizer.lr = cfg["lr"]
            step = trainer.train_step
        else:
            step = _torch_step(len(corpus.vocab), threads, seed, cfg["lr"], cfg["clip"], bf16)[0]
        windows = zaremba_windows(corpus.train, cfg["batch_size"], cfg["bptt"])
        windows = list(windows)[:windows_needed]
        conn.send("ready")
        while (block := conn.recv()) is not None:
            start = time.perf_counter()
            for xs, ts in windows[block[0] : block[1]]:
                step(xs, ts)
            conn.send(time.perf_counter() - start)


def _torch_step(vocab, threads, seed, lr=1.0, clip=5.0, bf16=False):
    """(step, optimizer, state): step(xs, ts) makes one update of the torch model, the state
    carried from the window before and detached (``state[0] = None`` forgets it), and returns
    the window's mean token loss (a tensor).  bf16: the forward under CPU autocast to
    bfloat16."""
    import contextlib

    import torch
    from torch import nn

    torch.set_num_threads(threads)
    model = build(vocab, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    state = [None]
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )

    def step(xs, ts):
        x, t = torch.from_numpy(xs), torch.from_numpy(ts)
        if state[0] is not None:
            state[0] = tuple(s.detach() for s in state[0])
        with autocast():
            scores, state[0] = model(x, state[0])
            loss = loss_fn(scores.reshape(-1, scores.shape[-1]).float(), t.reshape(-1))
        opt.zero_grad(set_to_none=False)
        (loss * xs.shape[1]).backward()  # summed over time, averaged over the batch
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    return step, opt, state


def compare(data, rounds=6, block=10, threads=1, seed=0, pause=0.3, log=print, bf16=False):
    """Alternate `block` updates of fastrnn and of torch, `rounds` times, each implementation in a
    process of its own (after its calls, each framework's worker threads spin for a while: in one
    process, at 2 threads, torch's took a core from fastrnn's kernels), with `pause` seconds
    between blocks for that spinning to end; return (fastrnn words/s, torch words/s)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    names, conns, procs = ("fastrnn", "torch"), {}, []
    for name in names:
        here, there = ctx.Pipe()
        proc = ctx.Process(
            target=_block_worker,
            args=(there, name, data, threads, seed, (rounds + 1) * block, bf16),
        )
        proc.start()
        conns[name] = here
        procs.append(proc)
    try:
        for name in names:
            if conns[name].recv() != "ready":
                raise RuntimeError(f"{name} worker failed to start")
        times = {name: 0.0 for name in names}
        for r in range(rounds + 1):  # round 0 warms both up, untimed
            for name in names if r % 2 else names[::-1]:
                conns[name].send((r * block, (r + 1) * block))
                seconds = conns[name].recv()
                if r:
                    times[name] += seconds
                time.sleep(pause)
    finally:
        for name in names:
            conns[name].send(None)
        for proc in procs:
            proc.join()
    from fastrnn.train.presets import preset

    cfg = preset("zaremba-small")
    words = rounds * block * cfg["batch_size"] * cfg["bptt"]
    rates = words / times["fastrnn"], words / times["torch"]
    if log:
        log(
            f"{threads} thread(s){', bfloat16' if bf16 else ''}, {rounds} x {block} updates "
            "each, alternating between two "
            f"processes: fastrnn {rates[0]:.0f} words/s, torch {rates[1]:.0f} words/s, ratio "
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
        help="alternate blocks of fastrnn and torch updates, each in a process of its own; "
        "print the ratio",
    )
    p.add_argument("--rounds", type=int, default=6, help="--compare: timed rounds")
    p.add_argument("--block", type=int, default=10, help="--compare: updates per block")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="fastrnn at matmul_precision='medium', torch under CPU autocast to bfloat16",
    )
    args = p.parse_args(argv)
    if args.compare:
        compare(args.data, args.rounds, args.block, args.threads, args.seed, bf16=args.bf16)
        return 0
    from fastrnn.train.data import load_ptb

    corpus = load_ptb(args.data)
    wps, ppl, done = train(
        corpus,
        args.steps or None,
        args.epochs,
        threads=args.threads,
        seed=args.seed,
        bf16=args.bf16,
    )
    import torch

    print(
        f"torch {torch.__version__}, {args.threads} thread(s): {done} updates of N 20 T 20, "
        f"{wps:.0f} words/s, train ppl {ppl:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
