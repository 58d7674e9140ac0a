"""Numba kernels. They see raw arrays only, never validate, and never see SciPy objects.

Graph kernels work on one CSR edge block with rows = source nodes and columns = destination nodes
(``indptr``, ``indices``) and boolean node states. Position kernels work on boolean feature maps
``(C, H, W)`` and on the kept weights of one conv layer listed as parallel int arrays grouped by
output channel (``ptr``/``ci``/``ky``/``kx``) or by input channel (``ptr``/``co``/``ky``/``kx``).
Every parallel loop writes only to slots owned by its loop index, so results do not depend on the
number of threads.
"""


from ._config import njit, pnjit, prange

# ---------------------------------------------------------------- graph (CSR) kernels


@njit
def push_reach(indptr, indices, src, dst):
    """Forward step: ``dst[j] |= src[i]`` for every edge ``i -> j``.

    Stops as soon as every destination is reached, so dense-enough blocks cost far less than a
    full pass over ``indices``.
    """
    n_dst = dst.shape[0]
    count = 0
    for j in range(n_dst):
        if dst[j]:
            count += 1
    if count == n_dst:
        return
    for i in range(src.shape[0]):
        if src[i]:
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if not dst[j]:
                    dst[j] = True
                    count += 1
                    if count == n_dst:
                        return


@pnjit
def pull_reach(indptr, indices, dst, src):
    """Backward step: ``src[i] |= any(dst[j] for edges i -> j)``, stopping at the first hit."""
    for i in prange(src.shape[0]):
        if not src[i]:
            for k in range(indptr[i], indptr[i + 1]):
                if dst[indices[k]]:
                    src[i] = True
                    break


@pnjit
def edge_effective(indptr, indices, src_fwd, dst_bwd, dst_all, out):
    """``out[k] = src_fwd[i] and dst_bwd[j]`` for edge ``k = (i, j)``.

    A flat gather over all edges (it vectorises far better than a loop per row), then a row pass
    that clears rows whose source is unreachable. ``dst_all`` (every destination co-reachable)
    turns the gather into fills.
    """
    if not dst_all:
        for k in prange(indices.shape[0]):
            out[k] = dst_bwd[indices[k]]
    for i in prange(src_fwd.shape[0]):
        if not src_fwd[i]:
            out[indptr[i]:indptr[i + 1]] = False
        elif dst_all:
            out[indptr[i]:indptr[i + 1]] = True


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
