"""Data-parallel training over MPI (``mpirun -n K fastrnn lm train --mpi ...``).

Every rank holds the same model.  A window's N streams are cut into K equal blocks of rows, one
per rank; each rank runs forward and backward on its block.  Each update, one ``Allreduce`` per
gradient dtype (a flat buffer) averages the gradients and one more sums the window's loss, its
token count and two flags (stop, checkpoint), so that every rank clips, updates and stops
alike: the parameters stay identical without being sent.  Without dropout a K-rank run follows the
single-process run to rounding (the averaged gradient of equal blocks is the whole batch's
gradient of the mean loss); with dropout each rank draws its own masks (rank 0 the
single-process stream, rank r > 0 a stream derived from the seed and r).

Rank 0 evaluates (batch 1 cannot be split by rows) and broadcasts the perplexity, writes the
checkpoints and prints.  A checkpoint is gathered from all ranks (the state carried into the
next window, each rank's dropout streams) and resumes on the same number of ranks.

Needs ``mpi4py`` with an MPI (``pip install "fastrnn[mpi]"`` brings mpi4py and Open MPI's wheel).
"""

import numpy as np

__all__ = ["DataParallel"]


class DataParallel:
    """The communication of data-parallel training on an mpi4py communicator.

    comm : mpi4py communicator or None
        ``MPI.COMM_WORLD`` by default.
    """

    def __init__(self, comm=None):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise ImportError(
                "data-parallel training needs mpi4py and an MPI library: "
                'pip install "fastrnn[mpi]" (or mpi4py with your MPI)'
            ) from e
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._buffers = None

    # -- data -------------------------------------------------------------------------------
    def check_batch(self, N):
        """A clear error unless the N streams split evenly over the ranks."""
        if N % self.size:
            raise ValueError(
                f"--batch-size {N} must be a multiple of the {self.size} MPI ranks "
                "(each rank takes an equal block of the streams)"
            )

    def rows(self, N):
        """This rank's block of the N streams (a slice)."""
        n = N // self.size
        return slice(self.rank * n, (self.rank + 1) * n)

    # -- one update -------------------------------------------------------------------------
    def reduce_step(self, grads, loss, count, stop, checkpoint):
        """Average `grads` in place over the ranks; returns (the window's mean token loss over
        all ranks, any rank's stop, any rank's checkpoint).  A non-finite `loss` on any rank
        makes the result non-finite on every rank (it diverged: all stop together)."""
        for flat, members in self._flat_buffers(grads):
            offset = 0
            for i in members:
                flat[offset : offset + grads[i].size] = grads[i].reshape(-1)
                offset += grads[i].size
            self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
            flat *= 1.0 / self.size
            offset = 0
            for i in members:  # (copyto: a gradient may be a strided view)
                g = grads[i]
                np.copyto(g, flat[offset : offset + g.size].reshape(g.shape))
                offset += g.size
        scalars = np.array([loss * count, count, float(stop), float(checkpoint)])
        self.comm.Allreduce(self.MPI.IN_PLACE, scalars, op=self.MPI.SUM)
        return float(scalars[0] / scalars[1]), bool(scalars[2]), bool(scalars[3])

    def _flat_buffers(self, grads):
        """[(flat buffer, indices of its gradients)], one per dtype; kept across updates (the
        gradients' shapes do not change)."""
        key = tuple((g.shape, g.dtype) for g in grads)
        if self._buffers is None or self._buffers[0] != key:
            members = {}
            for i, g in enumerate(grads):
                members.setdefault(np.dtype(g.dtype), []).append(i)
            buffers = [
                (np.empty(sum(grads[i].size for i in idx), dtype), idx)
                for dtype, idx in members.items()
            ]
            self._buffers = (key, buffers)
        return self._buffers[1]

    # -- the rest ---------------------------------------------------------------------------
    def bcast(self, value):
        """Rank 0's `value` on every rank."""
        return self.comm.bcast(value, root=0)

    def gather_rows(self, block):
        """The blocks of rows of all ranks stacked in rank order (on every rank)."""
        block = np.ascontiguousarray(block)
        out = np.empty((block.shape[0] * self.size,) + block.shape[1:], block.dtype)
        self.comm.Allgather(block, out)
        return out

    def gather_json(self, value):
        """[value of rank 0, value of rank 1, ...] on every rank (small JSON-able values)."""
        return self.comm.allgather(value)

    def own_streams(self, generators, seed):
        """Give rank r > 0 dropout streams of its own, derived from `seed` and r (rank 0 keeps
        the single-process ones)."""
        if self.rank == 0:
            return
        for k, g in enumerate(generators):
            seq = np.random.SeedSequence([0 if seed is None else int(seed), k, self.rank])
            g.bit_generator.state = type(g.bit_generator)(seq).state
