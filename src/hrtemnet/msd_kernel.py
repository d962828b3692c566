"""The compiled inner step of MSD-net inference in strips (`hrtemnet.models._msd_forward_strips`).

One call does everything of one strip step of one group of layers except the big matrix multiply: numba
loops over contiguous rows instead of ~15 small torch calls per layer and strip, and no copies of tap planes.
Numba comes with abTEM; this module is imported only when a large image is inferred, and the compiled kernel
is cached on disk (the first call ever compiles it: seconds).

Column-summed taps: a layer's output at (r, c) is `bias + sum over tap rows dr of H[dr][r + (dr-1) d, c]`,
where `H[dr][r, c] = sum over tap columns dc of taps[dr, dc][r, c + (dc-1) d]` needs only row r. So the 9
tap planes of a strip are reduced to 3 as soon as the multiply has made them, and only those 3 are kept until
the layer, which follows the strip frontier by its lag, reads them: a small ring of rows per map.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def group_step(maps, block, ring, ring_rows, in_weights, biases, unit_d, layer_lag, layer_d, done, ingroup_done,
               f0, f1, pad, height, width, before, w, final):
    """Advance every layer of a group once the taps of padded rows f0..f1 were multiplied into `block`.

    maps (C, hp, wp): all maps, reflect-padded by `pad`; block (units*9, f1-f0, wp): the taps of the maps that
    exist before the group (its first `before` channels), one row per (unit, tap); ring (units, 3, rows,
    width): column-summed taps, padded row r at r % ring_rows[unit]; in_weights (units, 9, n): the weights on
    the maps made earlier in the group; done (layers,): image rows finished per layer; ingroup_done (layers,):
    padded row up to which those earlier maps were added to the ring. Layer m finishes image rows up to
    `f1 - pad - layer_lag[m]` (all of them on the final step), so every row it reads exists. `w` maps per layer.
    Slices are taken before the inner loops so that those index from 0 and vectorise.
    """
    n_layers = layer_lag.shape[0]
    for m in range(n_layers):
        for j in range(w):  # taps of the maps before the group, summed over the 3 tap columns
            q = m * w + j
            d, rows = unit_d[q], ring_rows[q]
            for r in range(f0, f1):
                for dr in range(3):
                    t = q * 9 + dr * 3
                    x0 = block[t, r - f0, pad - d: pad - d + width]
                    x1 = block[t + 1, r - f0, pad: pad + width]
                    x2 = block[t + 2, r - f0, pad + d: pad + d + width]
                    out = ring[q, dr, r % rows]
                    for c in range(width):
                        out[c] = x0[c] + x1[c] + x2[c]
        start = done[m]
        if final and (m == 0 or done[m - 1] == height):
            end = height
        else:
            end = max(start, min(height, f1 - pad - layer_lag[m]))
        if end <= start:
            continue
        first_row, last_row = ingroup_done[m], pad + end + layer_d[m]
        n_in = m * w
        for j in range(w):
            q = m * w + j
            d, rows, bias = unit_d[q], ring_rows[q], biases[q]
            for r in range(first_row, last_row):  # the maps made earlier in this group, on rows not added yet
                for dr in range(3):
                    out = ring[q, dr, r % rows]
                    for k in range(n_in):  # the 3 tap columns of one map in one pass
                        t = dr * 3
                        w0, w1, w2 = in_weights[q, t, k], in_weights[q, t + 1, k], in_weights[q, t + 2, k]
                        s0 = maps[before + k, r, pad - d: pad - d + width]
                        s1 = maps[before + k, r, pad: pad + width]
                        s2 = maps[before + k, r, pad + d: pad + d + width]
                        for c in range(width):
                            out[c] += w0 * s0[c] + w1 * s1[c] + w2 * s2[c]
            plane = maps[before + n_in + j]
            for r in range(start, end):  # the map: bias + the 3 tap rows, ReLU, then its reflected columns
                h0 = ring[q, 0, (pad + r - d) % rows]
                h1 = ring[q, 1, (pad + r) % rows]
                h2 = ring[q, 2, (pad + r + d) % rows]
                row = plane[pad + r]
                dest = row[pad: pad + width]
                for c in range(width):
                    value = h0[c] + h1[c] + h2[c] + bias
                    dest[c] = value if value > 0 else 0.0
                for c in range(1, pad + 1):
                    row[pad - c] = row[pad + c]
                    row[pad + width - 1 + c] = row[pad + width - 1 - c]
            for r in range(max(start, 1), min(end, pad + 1)):  # reflected rows above and below the image
                plane[pad - r, :] = plane[pad + r, :]
            if end == height:
                for r in range(1, pad + 1):
                    plane[pad + height - 1 + r, :] = plane[pad + height - 1 - r, :]
        done[m] = end
        ingroup_done[m] = last_row
