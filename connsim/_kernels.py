"""Numba kernels. They see raw arrays only, never validate, and never see SciPy objects.

Graph kernels work on a whole packed LayeredGraph in one call (CSR blocks with rows = source
nodes and columns = destination nodes, packed end to end) and boolean node states. Position
kernels work on boolean feature maps ``(C, H, W)`` and on the kept weights of one conv layer listed
as parallel int arrays grouped by output channel (``ptr``/``ci``/``ky``/``kx``) or by input
channel (``ptr``/``co``/``ky``/``kx``).
Mask kernels read one prunable layer's boolean mask directly, as a ``uint8`` matrix with one row
per output node (any nonzero byte is a kept weight: a boolean array may hold bytes other than 1):
``(n_dst, a*k)``, ``a`` input nodes per output and ``k`` weights per group edge
(:mod:`connsim.ops`). Source reachability comes expanded to weights (``x[s*k + j]`` = node ``s``),
so that every row is one contiguous, vectorisable pass; output ``o`` reads the slice that starts at
``(o // b) * a*k`` (``b`` outputs per group).
Every parallel loop writes only to slots owned by its loop index, so results do not depend on the
number of threads.
"""


import math

import numba
import numpy as np
from numba import types
from numba.cpython import randomimpl
from numba.extending import intrinsic

from ._config import njit, pnjit, prange

# ---------------------------------------------------------------- graph (CSR) kernels
#
# A whole LayeredGraph in one call: its blocks' ``indptr`` and ``indices`` packed end to end
# (block ``k`` at ``ptr_off[k]`` and ``idx_off[k]``, local values), node states flat over all groups
# (group ``g`` at ``node_off[g]``), ``b_src``/``b_dst`` the groups of each block.


@njit
def graph_reach(order_f, order_b, b_src, b_dst, node_off, ptr_off, idx_off, indptr, indices,
                fwd, bwd):
    """Forward reachability (blocks in ``order_f``, by destination) and backward co-reachability
    (blocks in ``order_b``, by source, latest first) of a packed graph, in place.

    The forward step scatters from reached sources and counts the destinations it newly
    reaches without a branch, so it stops at the end of the row that settles the block; the
    backward step stops each source at its first co-reached destination.
    """
    for t in range(order_f.shape[0]):
        k = order_f[t]
        s0, d0 = node_off[b_src[k]], node_off[b_dst[k]]
        n_src, n_dst = node_off[b_src[k] + 1] - s0, node_off[b_dst[k] + 1] - d0
        p0, i0 = ptr_off[k], idx_off[k]
        left = n_dst
        for j in range(d0, d0 + n_dst):
            left -= fwd[j]
        for i in range(n_src):
            if left == 0:
                break
            if fwd[s0 + i]:
                for q in range(i0 + indptr[p0 + i], i0 + indptr[p0 + i + 1]):
                    j = d0 + indices[q]
                    left -= 1 - fwd[j]
                    fwd[j] = 1
    for t in range(order_b.shape[0]):
        k = order_b[t]
        s0, d0 = node_off[b_src[k]], node_off[b_dst[k]]
        n_src = node_off[b_src[k] + 1] - s0
        p0, i0 = ptr_off[k], idx_off[k]
        for i in range(n_src):
            if not bwd[s0 + i]:
                for q in range(i0 + indptr[p0 + i], i0 + indptr[p0 + i + 1]):
                    if bwd[d0 + indices[q]]:
                        bwd[s0 + i] = 1
                        break


@njit
def graph_effective(b_src, b_dst, node_off, ptr_off, idx_off, indptr, indices, fwd, bwd, out):
    """``out[q]`` (edges packed as ``indices``) is whether edge ``q = (i, j)`` joins a reached
    source to a co-reached destination: a flat gather over each block's edges (a fill when every
    destination is co-reached), then the rows of unreached sources are cleared."""
    for k in range(b_src.shape[0]):
        s0, d0 = node_off[b_src[k]], node_off[b_dst[k]]
        n_src, n_dst = node_off[b_src[k] + 1] - s0, node_off[b_dst[k] + 1] - d0
        p0, i0 = ptr_off[k], idx_off[k]
        edges = out[i0:idx_off[k + 1]]
        dst = bwd[d0:d0 + n_dst]
        if _all_set(dst):
            edges[:] = 1
        else:
            idx = indices[i0:idx_off[k + 1]]
            for q in range(edges.shape[0]):
                edges[q] = dst[idx[q]]
        if not _all_set(fwd[s0:s0 + n_src]):
            for i in range(n_src):
                if not fwd[s0 + i]:
                    edges[indptr[p0 + i]:indptr[p0 + i + 1]] = 0


@njit
def _all_set(a):
    """Whether every byte of ``a`` is nonzero (a vectorised count)."""
    c = 0
    for j in range(a.shape[0]):
        c += a[j] != 0
    return c == a.shape[0]


# ---------------------------------------------------------------- mask kernels

CHUNK = 64  # bytes scanned (vectorised) before the first check for a hit; doubled after each


@njit
def _any_and(a, b):
    """Whether ``a[j] & b[j]`` is nonzero for some ``j`` (a branch-free, vectorised scan)."""
    acc = 0
    for j in range(a.shape[0]):
        acc |= (a[j] != 0) & b[j]
    return acc != 0


PARALLEL_BYTES = 1 << 20  # masks from this size run on all of Numba's threads (docs/performance.md)


NONE_REACHED = np.empty(0, np.uint8)  # ``fwd_x`` of :func:`mask_pull` when no source is reached


def mask_push(mask, b, fwd_x, fwd_dst):
    """Forward step straight from a mask: ``fwd_dst[o] |= any(mask[o] & fwd_x[row slice of o])``.

    Each row stops at the first chunk that holds a kept weight from a reached source, so a
    well-connected layer costs a fraction of one read of its mask. Rows are split over the
    threads when the mask has at least ``PARALLEL_BYTES`` bytes.
    """
    (_push_parallel if _parallel(mask) else _push_serial)(mask, b, fwd_x, fwd_dst)


def mask_pull(mask, b, fwd_x, bwd_dst, bwd_x, eff):
    """Backward step and effective mask in one pass over the rows of co-reached outputs ``o``:
    ``eff[o] = mask[o] & fwd_x[slice]`` and ``bwd_x[slice] |= mask[o]``; the rows of outputs that
    are not co-reached are zeroed without reading the mask. Every byte of ``eff`` is written, so it
    may arrive uninitialised (fresh zeroed pages would cost one more write pass). An empty
    ``fwd_x`` (``NONE_REACHED``) stands for no reached source: every row of ``eff`` is zeroed,
    each co-reached row right after it is read (``eff`` may be the mask itself).

    Rows are split over the threads when the mask has at least ``PARALLEL_BYTES`` bytes; OR-ing
    is order-free, so the result does not depend on them.
    """
    if _parallel(mask):
        _pull_parallel(mask, b, fwd_x, bwd_dst, bwd_x, eff, numba.get_num_threads())
    else:
        _pull_serial(mask, b, fwd_x, bwd_dst, bwd_x, eff)


def mask_or(mask, b, bwd_dst, bwd_x):
    """``bwd_x[slice] |= mask[o]`` for every co-reached output ``o``: the backward step of
    :func:`mask_pull` alone (the position level forms its effective masks after every step).
    An effective mask with no rows tells the kernels to write none."""
    mask_pull(mask, b, NONE_REACHED, bwd_dst, bwd_x, np.empty((0, mask.shape[1]), np.uint8))


def mask_count(mask, b, fwd_x, bwd_dst, bwd_x):
    """:func:`mask_pull` that counts instead of writing: returns ``(kept, effective)``, the
    nonzero bytes of ``mask`` (any nonzero byte counts once) and of the effective mask it would
    write, and ORs into ``bwd_x`` as :func:`mask_pull` does. Every row is read once (rows of
    outputs that are not co-reached are only counted), and nothing is written but ``bwd_x``."""
    if _parallel(mask):
        t_n = numba.get_num_threads()
        counts = np.zeros((t_n, 2), np.int64)
        _count_parallel(mask, b, fwd_x, bwd_dst, bwd_x, counts, t_n)
        kept, eff = counts.sum(axis=0)
    else:
        kept, eff = _count_rows(mask, b, fwd_x, bwd_dst, bwd_x, np.int64(0), mask.shape[0])
    return int(kept), int(eff)


def _parallel(mask):
    return mask.nbytes >= PARALLEL_BYTES and numba.get_num_threads() > 1


@njit
def group_any(x, k, out):
    """``out[i] |= any(x[i*k:(i+1)*k])``: weights' states (``uint8``) folded onto their nodes, ``k``
    weights per node (``out`` is ``uint8`` too)."""
    for i in range(out.shape[0]):
        acc = 0
        for j in range(i * k, i * k + k):
            acc |= x[j]
        out[i] |= acc != 0


@njit
def _push_row(row, x):
    """Whether ``row & x`` has a nonzero byte, scanned in chunks that double from ``CHUNK``: a
    dense row stops within its first cache line, a sparse one streams in long runs."""
    start, size = 0, CHUNK
    while start < row.shape[0]:
        if _any_and(row[start:start + size], x[start:start + size]):
            return 1
        start += size
        size *= 2
    return 0


@njit
def _push_serial(mask, b, fwd_x, fwd_dst):
    w = mask.shape[1]
    for o in range(mask.shape[0]):
        if not fwd_dst[o]:
            fwd_dst[o] = _push_row(mask[o], fwd_x[(o // b) * w:(o // b) * w + w])


@pnjit
def _push_parallel(mask, b, fwd_x, fwd_dst):
    w = mask.shape[1]
    for o in prange(mask.shape[0]):
        if not fwd_dst[o]:
            fwd_dst[o] = _push_row(mask[o], fwd_x[(o // b) * w:(o // b) * w + w])


@njit
def _pull_rows(mask, b, fwd_x, bwd_dst, bwd_x, eff, lo, hi):
    """:func:`mask_pull` on rows ``lo:hi`` (with no effective mask when ``eff`` has no rows, and
    zero rows written when ``fwd_x`` is empty)."""
    w = mask.shape[1]
    write = eff.shape[0] > 0
    for o in range(lo, hi):
        row = mask[o]
        if not bwd_dst[o]:
            if write:
                eff[o, :] = 0
            continue
        y = bwd_x[(o // b) * w:(o // b) * w + w]
        if not write or fwd_x.shape[0] == 0:
            for j in range(w):
                y[j] |= row[j] != 0
            if write:  # after the row's last read: ``eff`` may be the mask
                eff[o, :] = 0
        else:
            x = fwd_x[(o // b) * w:(o // b) * w + w]
            out = eff[o]
            for j in range(w):
                m = row[j] != 0
                out[j] = m & x[j]
                y[j] |= m


@njit
def _pull_serial(mask, b, fwd_x, bwd_dst, bwd_x, eff):
    _pull_rows(mask, b, fwd_x, bwd_dst, bwd_x, eff, np.int64(0), mask.shape[0])  # not a literal


@njit
def _row_blocks(n_dst, b, t_n):
    """The parallel kernels' row blocks, worked out before their parallel loops: whole groups of
    ``b`` rows per thread when there are at least ``t_n`` groups (``own``: each thread owns its
    slice of ``bwd_x``), else equal blocks of rows."""
    groups = n_dst // b
    own = groups >= t_n
    ends = np.empty(t_n + 1, np.int64)
    for t in range(t_n + 1):
        ends[t] = groups * t // t_n * b if own else n_dst * t // t_n
    return ends, own


@njit
def _merge(ys, bwd_x):
    """OR the threads' own copies of the co-reachability (rows of ``ys``) into ``bwd_x``."""
    for t in range(ys.shape[0]):
        for j in range(bwd_x.shape[0]):
            bwd_x[j] |= ys[t, j]


@pnjit
def _pull_parallel(mask, b, fwd_x, bwd_dst, bwd_x, eff, t_n):
    """Each of ``t_n`` threads takes whole groups of ``b`` rows when there are enough groups,
    hence disjoint slices of ``bwd_x``; otherwise a block of rows and its own copy of ``bwd_x``,
    merged after."""
    ends, own = _row_blocks(mask.shape[0], b, t_n)
    if own:
        for t in prange(t_n):
            _pull_rows(mask, b, fwd_x, bwd_dst, bwd_x, eff, ends[t], ends[t + 1])
    else:
        ys = np.zeros((t_n, bwd_x.shape[0]), np.uint8)
        for t in prange(t_n):
            _pull_rows(mask, b, fwd_x, bwd_dst, ys[t], eff, ends[t], ends[t + 1])
        _merge(ys, bwd_x)


LANES = 255  # 8-byte words summed lane by lane before a byte lane (0/1 per word) can overflow


@njit
def _count_rows(mask, b, fwd_x, bwd_dst, bwd_x, lo, hi):
    """:func:`mask_count` on rows ``lo:hi``; ``(kept, effective)``. Each row is read as 8-byte
    words, each byte made 0 or 1 (a boolean array may hold other nonzero bytes; ``fwd_x`` holds
    0 and 1 only), and the byte lanes are summed (at most ``LANES`` words before the lanes are
    folded into the count), with the last ``w % 8`` bytes one by one."""
    w = mask.shape[1]
    w8 = w - w % 8
    kept = eff = 0
    for o in range(lo, hi):
        row = mask[o]
        if not bwd_dst[o]:
            kept += _words_kept(row[:w8].view(np.uint64))
            for j in range(w8, w):
                kept += row[j] != 0
            continue
        x = fwd_x[(o // b) * w:(o // b) * w + w]
        y = bwd_x[(o // b) * w:(o // b) * w + w]
        k, e = _words_pull(row[:w8].view(np.uint64), x[:w8].view(np.uint64),
                           y[:w8].view(np.uint64))
        for j in range(w8, w):
            m = row[j] != 0
            k += m
            e += m & x[j]
            y[j] |= m
        kept += k
        eff += e
    return kept, eff


@njit
def _words_kept(rw):
    kept = 0
    for start in range(0, rw.shape[0], LANES):
        r = rw[start:start + LANES]  # a slice: a computed loop bound stops vectorisation
        k = np.uint64(0)
        for j in range(r.shape[0]):
            k += _ones(r[j])
        kept += _lane_sum(k)
    return kept


@njit
def _words_pull(rw, xw, yw):
    kept = eff = 0
    for start in range(0, rw.shape[0], LANES):
        r, x, y = rw[start:start + LANES], xw[start:start + LANES], yw[start:start + LANES]
        k = e = np.uint64(0)
        for j in range(r.shape[0]):
            m = _ones(r[j])
            k += m
            e += m & x[j]
            y[j] |= m
        kept += _lane_sum(k)
        eff += _lane_sum(e)
    return kept, eff


@njit
def _ones(v):
    """Each byte of ``v`` (``uint64``) as 1 if nonzero, else 0: bit 0 of a byte ORs its 8 bits
    (each shift moves a byte's bits 4-7, 2-3, then 1 onto its bits 0-3, 0-1, then 0)."""
    v |= v >> np.uint64(4)
    v |= v >> np.uint64(2)
    v |= v >> np.uint64(1)
    return v & np.uint64(0x0101010101010101)


@njit
def _lane_sum(v):
    """The sum of the eight byte lanes of ``v`` (``uint64``), with no product that wraps."""
    m = np.uint64(0x00FF00FF00FF00FF)
    pairs = (v & m) + ((v >> np.uint64(8)) & m)  # four 16-bit lanes, each at most 510
    s = pairs + (pairs >> np.uint64(16))
    s = s + (s >> np.uint64(32))
    return np.int64(s & np.uint64(0xFFFF))


@pnjit
def _count_parallel(mask, b, fwd_x, bwd_dst, bwd_x, counts, t_n):
    """:func:`_pull_parallel`'s partition, each thread counting into its row of ``counts``."""
    ends, own = _row_blocks(mask.shape[0], b, t_n)
    if own:
        for t in prange(t_n):
            counts[t, 0], counts[t, 1] = _count_rows(mask, b, fwd_x, bwd_dst, bwd_x, ends[t],
                                                     ends[t + 1])
    else:
        ys = np.zeros((t_n, bwd_x.shape[0]), np.uint8)
        for t in prange(t_n):
            counts[t, 0], counts[t, 1] = _count_rows(mask, b, fwd_x, bwd_dst, ys[t], ends[t],
                                                     ends[t + 1])
        _merge(ys, bwd_x)


# ---------------------------------------------------------------- position-level kernels


@pnjit
def conv_push(ptr, ci, ky, kx, fwd_in, sh, sw, ph, pw, out):
    """Forward through a conv: output position (o, y, x) is reached iff a kept weight (o, i, ky, kx)
    reads an in-bounds, reached input position (i, y*sh + ky - ph, x*sw + kx - pw)."""
    n_out, ho, wo = out.shape
    h = fwd_in.shape[1]
    w = fwd_in.shape[2]
    for o in prange(n_out):
        left = ho * wo
        for k in range(ptr[o], ptr[o + 1]):
            i = ci[k]
            for y in range(ho):
                iy = y * sh + ky[k] - ph
                if iy < 0 or iy >= h:
                    continue
                for x in range(wo):
                    ix = x * sw + kx[k] - pw
                    if 0 <= ix < w and fwd_in[i, iy, ix] and not out[o, y, x]:
                        out[o, y, x] = True
                        left -= 1
            if left == 0:
                break


@pnjit
def conv_pull(ptr, co, ky, kx, bwd_out, sh, sw, ph, pw, bwd_in):
    """Backward through a conv: input position (i, iy, ix) is co-reached iff a kept weight
    (o, i, ky, kx) carries it to a co-reached output position. Weights are grouped by input
    channel ``i``; ``bwd_in`` is OR-ed into (a node may feed several layers)."""
    n_in, h, w = bwd_in.shape
    ho = bwd_out.shape[1]
    wo = bwd_out.shape[2]
    for i in prange(n_in):
        for k in range(ptr[i], ptr[i + 1]):
            o = co[k]
            for y in range(ho):
                iy = y * sh + ky[k] - ph
                if iy < 0 or iy >= h:
                    continue
                for x in range(wo):
                    ix = x * sw + kx[k] - pw
                    if 0 <= ix < w and bwd_out[o, y, x]:
                        bwd_in[i, iy, ix] = True


@pnjit
def conv_effective(ptr, ci, ky, kx, fwd_in, bwd_out, sh, sw, ph, pw, out):
    """``out[k]`` is True iff kept weight k = (o, ci, ky, kx) reads an in-bounds reached input
    position for at least one co-reached output position of channel o."""
    n_out, ho, wo = bwd_out.shape
    h = fwd_in.shape[1]
    w = fwd_in.shape[2]
    for o in prange(n_out):
        for k in range(ptr[o], ptr[o + 1]):
            i = ci[k]
            hit = False
            for y in range(ho):
                iy = y * sh + ky[k] - ph
                if iy < 0 or iy >= h:
                    continue
                for x in range(wo):
                    ix = x * sw + kx[k] - pw
                    if 0 <= ix < w and bwd_out[o, y, x] and fwd_in[i, iy, ix]:
                        hit = True
                        break
                if hit:
                    break
            out[k] = hit


@pnjit
def pool_push(fwd_in, kh, kw, sh, sw, out):
    """Forward through a pooling window (average or max: any reached position in the window)."""
    c_n, ho, wo = out.shape
    for c in prange(c_n):
        for y in range(ho):
            for x in range(wo):
                hit = False
                for dy in range(kh):
                    for dx in range(kw):
                        if fwd_in[c, y * sh + dy, x * sw + dx]:
                            hit = True
                            break
                    if hit:
                        break
                out[c, y, x] = hit


@pnjit
def pool_pull(bwd_out, kh, kw, sh, sw, bwd_in):
    """Backward through a pooling window: every position of a co-reached window is co-reached."""
    c_n, ho, wo = bwd_out.shape
    for c in prange(c_n):
        for y in range(ho):
            for x in range(wo):
                if bwd_out[c, y, x]:
                    for dy in range(kh):
                        for dx in range(kw):
                            bwd_in[c, y * sh + dy, x * sw + dx] = True


# ---------------------------------------------------------------- theory kernels

LOG_UNDERFLOW = -746.0  # exp() of anything below is 0 in double precision
RESYNC = 32  # steps of the ratio recurrence between two accurate evaluations
# stirlerr(n) = log n! - log(sqrt(2 pi n) (n / e)^n) for n = 0..15 (n = 0 unused)
STIRLERR = np.array([
    0.0, 0.0810614667953272582196702, 0.0413406959554092940938221, 0.02767792568499833914878929,
    0.02079067210376509311152277, 0.01664469118982119216319487, 0.01387612882307074799874573,
    0.01189670994589177009505572, 0.010411265261972096497478567, 0.009255462182712732917728637,
    0.008330563433362871256469318, 0.007573675487951840794972024, 0.006942840107209529865664152,
    0.006408994188004207068439631, 0.005951370112758847735624416, 0.005554733551962801371038690])


@njit
def _stirlerr(n):
    """``log n! - log(sqrt(2 pi n) (n / e)^n)`` for an integer ``n >= 1``: the table, then the
    Stirling series (absolute error below 2e-16 from n = 16 on)."""
    if n <= 15:
        return STIRLERR[n]
    nn = float(n) * n
    if n > 500:
        return (1 / 12 - 1 / 360 / nn) / n
    if n > 80:
        return (1 / 12 - (1 / 360 - 1 / 1260 / nn) / nn) / n
    if n > 35:
        return (1 / 12 - (1 / 360 - (1 / 1260 - 1 / 1680 / nn) / nn) / nn) / n
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / 1188 / nn) / nn) / nn) / nn) / n


@njit
def _bd0(x, m):
    """``x log(x / m) + m - x`` without cancellation (a series in ``(x - m) / (x + m)`` when
    ``x`` is near ``m``)."""
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        s = (x - m) * v
        ej = 2 * x * v
        v = v * v
        j = 3.0
        while True:
            ej *= v
            s1 = s + ej / j
            if s1 == s:
                return s1
            s = s1
            j += 2.0
    return x * math.log(x / m) + m - x


@njit
def log_binom_pmf(s, n, p, q, log_q):
    """``log P(Binomial(n, p) = s)`` with ``q = 1 - p`` and ``log_q = log q`` given separately.

    The saddle-point form (Stirling remainders and deviances instead of differences of large
    ``log k!``): about 1e-15 relative in the probability, plus what the rounding of ``p`` and
    ``q`` itself implies (about ``|s - n p|`` units of 1e-16). The end points are ``n log q`` and
    ``n log p`` from the exact ``log q``, so that their error does not grow with ``n``.
    """
    if s == 0:
        return n * log_q
    if s == n:
        if p <= 0:
            return -math.inf
        return n * (math.log1p(-q) if q < 0.5 else math.log(p))
    if p <= 0 or q <= 0:
        return -math.inf
    # the deviances take n p + n q = n although the rounded p and q need not sum to 1: the
    # result is the binomial renormalised to total mass 1, whose error stays near the mode's
    lc = (_stirlerr(n) - _stirlerr(s) - _stirlerr(n - s) - _bd0(float(s), n * p)
          - _bd0(float(n - s), n * q))
    return lc - 0.5 * math.log(2 * math.pi * s * (n - s) / n)


@njit
def binomial_mix(weight, log_miss, out):
    """``out[s] += sum_i weight[i] * P(Binomial(n, p_i) = s)`` with ``n = out.size - 1`` and
    ``log(1 - p_i) = log_miss[i]`` (finite and negative).

    Each row is summed over its band only: from its mode outward in both directions until a
    term's log-probability falls below :data:`LOG_UNDERFLOW` (its ``exp`` is 0; the binomial pmf
    is log-concave, so every term further out is smaller still). Inside the band, terms follow
    from the ratio ``P(s+1) / P(s) = (n-s) p / ((s+1) (1-p))``; every :data:`RESYNC` steps a
    term is evaluated anew with :func:`log_binom_pmf`, so rounding never accumulates over more
    than that many products.
    """
    n = out.shape[0] - 1
    for i in range(weight.shape[0]):
        w, q = weight[i], math.exp(log_miss[i])
        p = -math.expm1(log_miss[i])
        if q == 0.0:  # every other term underflows
            out[n] += w * math.exp(n * math.log(p))
            continue
        odds = p / q
        m = min(int(p * (n + 1)), n)
        s = m
        while s <= n:  # upward from the mode
            lp = log_binom_pmf(s, n, p, q, log_miss[i])
            if lp < LOG_UNDERFLOW:
                break
            t = w * math.exp(lp)
            end = min(s + RESYNC, n + 1)
            for j in range(s, end):
                out[j] += t
                t *= (n - j) * odds / (j + 1)
            s = end
        s = m - 1
        while s >= 0:  # downward
            lp = log_binom_pmf(s, n, p, q, log_miss[i])
            if lp < LOG_UNDERFLOW:
                break
            t = w * math.exp(lp)
            end = max(s - RESYNC, -1)
            for j in range(s, end, -1):
                out[j] += t
                t *= j / ((n - j + 1) * odds)
            s = end


# ---------------------------------------------------------------- Monte Carlo kernels


@intrinsic
def _np_random_state(typingctx):
    """Pointers to the position and the 624 words of Numba's ``np.random`` Mersenne Twister
    state of the calling thread (the state that ``np.random.seed`` sets in a kernel)."""
    sig = types.Tuple((types.CPointer(types.int32), types.CPointer(types.uint32)))()

    def codegen(context, builder, signature, args):
        state = randomimpl.get_state_ptr(context, builder, "np")
        words = builder.bitcast(randomimpl.get_array_ptr(builder, state),
                                context.get_value_type(types.CPointer(types.uint32)))
        return context.make_tuple(builder, signature.return_type,
                                  (randomimpl.get_index_ptr(builder, state), words))

    return sig, codegen


@njit
def _mt_twist(mt):
    """The Mersenne Twister's regeneration of its 624 state words, in place."""
    hi, lo, mat = np.uint32(0x80000000), np.uint32(0x7fffffff), np.uint32(0x9908b0df)
    one = np.uint32(1)
    for i in range(227):
        y = (mt[i] & hi) | (mt[i + 1] & lo)
        mt[i] = mt[i + 397] ^ (y >> one) ^ (mat * (y & one))
    for i in range(227, 623):
        y = (mt[i] & hi) | (mt[i + 1] & lo)
        mt[i] = mt[i - 227] ^ (y >> one) ^ (mat * (y & one))
    y = (mt[623] & hi) | (mt[0] & lo)
    mt[623] = mt[396] ^ (y >> one) ^ (mat * (y & one))


@njit
def _tempered(mt, out):
    """The Mersenne Twister's outputs for its 624 state words (its tempering), into ``out``: one
    vectorised pass per regeneration instead of one per draw."""
    for i in range(624):
        y = mt[i]
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9d2c5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xefc60000)
        out[i] = y ^ (y >> np.uint32(18))


@njit
def _distinct_draws(n, picked, seen):
    """Fill ``picked`` with distinct integers below ``n`` (``2 <= n <= 2**32``), drawn in turn as
    ``np.random.randint(0, n)`` draws them and skipping repeats, marked in the bit words
    ``seen``.

    The words come from Numba's generator state directly: the same numbers, in the same order,
    as ``np.random.randint`` in a kernel gives (the low bits of each output, rejected at ``n`` or
    above), without a call into the generator per draw. The loop has no data-dependent branch:
    at VGG-19's 2.4 million weights per layer, 44 % of the draws are rejected at random.
    """
    if n > 2**32:  # two words per draw: Numba's own call
        _distinct_calls(n, picked, seen)
        return
    pos, words = _np_random_state()
    index = numba.carray(pos, 1)
    mt = numba.carray(words, 624)
    out = np.empty(624, dtype=np.uint32)
    bits = 0
    while (n - 1) >> bits:
        bits += 1
    # unsigned throughout: indexing skips the wraparound of negative indices
    one, u6, u63, u624 = np.uint64(1), np.uint64(6), np.uint64(63), np.uint64(624)
    mask, below, top = np.uint64((1 << bits) - 1), np.uint64(n), np.uint64(n - 1)
    idx = np.uint64(index[0])
    if idx < u624:  # words left from the last regeneration
        _tempered(mt, out)
    c, m = np.uint64(0), np.uint64(picked.shape[0])
    while c < m:
        if idx >= u624:
            _mt_twist(mt)
            _tempered(mt, out)
            idx = np.uint64(0)
        r = np.uint64(out[idx]) & mask
        idx += one
        q = min(r, top)  # a rejected draw reads a word of the bitmap and leaves it unchanged
        w, b = q >> u6, one << (q & u63)
        old = seen[w]
        new = np.uint64((r < below) & ((old & b) == 0))
        seen[w] = old | (b * new)
        picked[c] = r
        c += new
    index[0] = np.int32(idx)


@njit
def _distinct_calls(n, picked, seen):
    """:func:`_distinct_draws` through ``np.random.randint`` calls."""
    c = 0
    while c < picked.shape[0]:
        r = np.random.randint(0, n)  # noqa: NPY002 - Numba kernels use the legacy API
        w, b = r >> 6, np.uint64(1) << np.uint64(r & 63)
        if not seen[w] & b:
            seen[w] |= b
            picked[c] = r
            c += 1


if numba.config.DISABLE_JIT:  # no generator state to read: NumPy's legacy calls, same numbers
    _distinct_draws = _distinct_calls  # noqa: F811


@njit
def sample_distinct(n, k, seen):
    """``k`` distinct integers drawn uniformly from ``range(n)`` (in no particular order).

    Sequential ``np.random.randint(0, n)`` draws with rejection of repeats, tracked in the bit
    words ``seen`` (``uint64``, at least ``n`` bits, all 0; left all 0 again, so that one bitmap
    serves every draw of a thread without being cleared in full): every k-subset is equally
    likely, and the expected number of draws, the sum of ``n / (n - j)`` for ``j < k``, is at most
    ``2 ln 2 k < 1.4 k`` for ``k <= n/2``. For ``k > n/2`` the complement is drawn and the rest
    returned, in increasing order.
    """
    m = k if 2 * k <= n else n - k
    picked = np.empty(m, dtype=np.int64)
    if m:
        _distinct_draws(n, picked, seen)
    if m == k:
        out = picked
    else:
        out = np.empty(k, dtype=np.int64)
        c = 0
        for r in range(n):
            if not seen[r >> 6] & (np.uint64(1) << np.uint64(r & 63)):
                out[c] = r
                c += 1
    for c in range(m):
        seen[picked[c] >> 6] = 0  # every bit set in the words is one of ``picked``
    return out


@njit
def _draw(seed, bernoulli, l_nw, l_d, l_kept, seen):
    """The kept flat positions of every layer of the sample seeded ``seed`` (a list of arrays):
    a count per layer (Binomial under ``bernoulli``, else ``l_kept``), then the positions
    (:func:`sample_distinct` with the bitmap ``seen``)."""
    np.random.seed(seed)  # noqa: NPY002 - per-thread stream, seeded per sample
    pos = []
    for lay in range(l_nw.shape[0]):
        k = np.random.binomial(l_nw[lay], l_d[lay]) if bernoulli else l_kept[lay]  # noqa: NPY002
        pos.append(sample_distinct(l_nw[lay], k, seen))
    return pos


@njit
def _quotient(x, d, inv):
    """``x // d`` for ``0 <= x < 2**51`` and ``inv = 1 / d``, without an integer division or a
    branch. The two roundings of ``x * inv`` err by less than ``(x / d) * 2**-52 < 1 / (2d)``,
    while ``x / d`` lies a multiple of ``1 / d`` from an integer: the truncated product is the
    quotient, or one below it when ``x / d`` is an integer; the remainder tells which."""
    q = np.int64(x * inv)
    return q + (x - q * d >= d)


@njit
def _edge_ends(pos, k, a, b, s0, d0, src, dst):
    """Source and destination node (``s0 + i``, ``d0 + o``) of the group edge of each kept weight
    at flat positions ``pos`` (``connsim.ops``), into ``src`` and ``dst``; ``b = 0`` marks a layer
    with one group (every output reads all ``a`` inputs). One branch-free pass that vectorises:
    quotients by :func:`_quotient`, ``k = 1`` included."""
    ak = a * k
    inv_ak, inv_k, inv_b = 1.0 / ak, 1.0 / k, 1.0 / max(b, 1)
    for t in range(pos.shape[0]):
        o = _quotient(pos[t], ak, inv_ak)
        i = _quotient(pos[t] - o * ak, k, inv_k)
        if b != 0:
            i += _quotient(o, b, inv_b) * a
        src[t] = s0 + i
        dst[t] = d0 + o


@njit
def count_effective(pos, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src, e_dst, e_layer,
                    e_off, eff_row, active_row):
    """Effective weights of one mask given as kept flat positions per layer (``pos``, a list of
    int arrays); writes per-layer effective counts and active destination nodes, returns whether
    the output is unreachable.

    Layer ``l`` joins group ``l_src`` to group ``l_dst``; the kept weight at flat position ``p`` lies
    on the group edge of :func:`_edge_ends`. Edges ``e_*`` (sorted by destination, so a group's
    inputs come before its outputs) are layers (kind 0) or structural edges (kind 1) joining
    source node ``j`` to node ``e_off + j``. The forward pass works out each layer's edge ends
    (kept for the backward pass), then propagates; the backward pass counts a layer's effective
    weights as it goes, since the co-reachability of the layer's destinations is final by then.
    Node indices are unsigned 32-bit (a lowering has far fewer than ``2**32`` channels), so
    that indexing has no check for negative indices.
    """
    n_layers = l_src.shape[0]
    n_groups = offsets.shape[0] - 1
    fwd = np.zeros(offsets[-1], dtype=np.uint8)
    bwd = np.zeros(offsets[-1], dtype=np.uint8)
    fwd[offsets[0]:offsets[1]] = 1
    bwd[offsets[n_groups - 1]:offsets[n_groups]] = 1
    start = np.zeros(n_layers + 1, dtype=np.int64)
    for lay in range(n_layers):
        start[lay + 1] = start[lay] + pos[lay].shape[0]
    src = np.empty(start[n_layers], dtype=np.uint32)  # global node index of each weight's ends
    dst = np.empty(start[n_layers], dtype=np.uint32)
    for e in range(e_kind.shape[0]):
        a, b = offsets[e_src[e]], offsets[e_dst[e]] + e_off[e]
        if e_kind[e] == 1:
            for j in range(offsets[e_src[e] + 1] - a):
                if fwd[a + j]:
                    fwd[b + j] = 1
            continue
        lay = e_layer[e]
        t0, t1 = start[lay], start[lay + 1]
        _edge_ends(pos[lay], l_k[lay], l_a[lay], l_b[lay], a, b, src[t0:t1], dst[t0:t1])
        if e_src[e] == 0:  # from the input: every source reached
            for t in range(t0, t1):
                fwd[dst[t]] = 1
        else:
            for t in range(t0, t1):
                fwd[dst[t]] |= fwd[src[t]]
    for e in range(e_kind.shape[0] - 1, -1, -1):
        a, b = offsets[e_src[e]], offsets[e_dst[e]] + e_off[e]
        if e_kind[e] == 1:
            for j in range(offsets[e_src[e] + 1] - a):
                if bwd[b + j]:
                    bwd[a + j] = 1
            continue
        lay = e_layer[e]
        c = np.int64(0)  # uint8 states: the sum must not take their type
        if e_src[e] == 0:  # the input's co-reachability is never read
            for t in range(start[lay], start[lay + 1]):
                c += bwd[dst[t]]
        else:  # no branch: a co-reached destination is a coin flip at low density
            for t in range(start[lay], start[lay + 1]):
                x = bwd[dst[t]]
                bwd[src[t]] |= x
                c += x & fwd[src[t]]
        eff_row[lay] = c
    for lay in range(n_layers):
        act = np.int64(0)
        for j in range(offsets[l_dst[lay]], offsets[l_dst[lay] + 1]):
            act += fwd[j] & bwd[j]
        active_row[lay] = act
    for j in range(offsets[n_groups - 1], offsets[n_groups]):
        if fwd[j]:
            return False
    return True


@pnjit
def mc_channel(seeds, bernoulli, offsets, l_src, l_dst, l_a, l_b, l_k, l_nw, l_d, l_kept,
               e_kind, e_src, e_dst, e_layer, e_off, blocks, eff, disc, active):
    """Channel-level Monte Carlo over random masks: sample ``s`` seeds its own stream with
    ``seeds[s]``, draws each layer's kept positions (:func:`_draw`) and counts them with
    :func:`count_effective`. ``blocks`` contiguous runs of samples go to ``prange``, each with one
    bitmap for all its draws; per-sample seeds make the result independent of ``blocks``."""
    n = seeds.shape[0]
    for blk in prange(blocks):
        seen = np.zeros((l_nw.max() + 63) // 64, dtype=np.uint64)
        for s in range(blk * n // blocks, (blk + 1) * n // blocks):
            pos = _draw(seeds[s], bernoulli, l_nw, l_d, l_kept, seen)
            disc[s] = count_effective(pos, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src,
                                      e_dst, e_layer, e_off, eff[s], active[s])


@njit
def mc_count(flat, starts, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src, e_dst, e_layer,
             e_off, eff, active):
    """:func:`count_effective` on one given mask: layer ``l`` keeps the flat positions
    ``flat[starts[l]:starts[l + 1]]``."""
    pos = [flat[starts[lay]:starts[lay + 1]] for lay in range(l_src.shape[0])]
    return count_effective(pos, offsets, l_src, l_dst, l_a, l_b, l_k, e_kind, e_src, e_dst,
                           e_layer, e_off, eff, active)


@njit
def mc_sample(seed, bernoulli, l_nw, l_d, l_kept):
    """The kept flat positions that :func:`mc_channel` draws for a sample seeded ``seed``, as one
    flat array and per-layer starts."""
    pos = _draw(seed, bernoulli, l_nw, l_d, l_kept,
                np.zeros((l_nw.max() + 63) // 64, dtype=np.uint64))
    n_layers = l_nw.shape[0]
    starts = np.zeros(n_layers + 1, dtype=np.int64)
    for lay in range(n_layers):
        starts[lay + 1] = starts[lay] + pos[lay].shape[0]
    flat = np.empty(starts[n_layers], dtype=np.int64)
    for lay in range(n_layers):
        flat[starts[lay]:starts[lay + 1]] = pos[lay]
    return flat, starts
