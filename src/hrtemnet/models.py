"""The networks: a fast, faithful MSD-net (Pelt & Sethian, PNAS 2018), a U-net, and model files.

Both map a normalised focal series `(B, 3, H, W)` to logits `(B, NUM_LABELS, H, W)` (background, Mo,
S2, S) and are fully convolutional: train on crops, infer on whole images of any size.

MSD-net speed (measured in benchmarks/RESULTS.md): the textbook form concatenates all earlier maps for every
layer and runs a one-output-channel `conv2d`, which is slow on CPUs (~4 GFLOP/s) and keeps a copy of the
growing stack per layer. `MSDNet.forward` instead keeps every map in one preallocated buffer laid out `(C, B,
H, W)` so that the maps a layer reads are one contiguous block. A layer is then one matrix multiply (its 9
taps x k input channels against the block; 25-55 GFLOP/s) giving 9 planes, summed after shifting each by its
tap offset at the layer's dilation. Layers are processed in groups: the block of maps that exist before the
group is multiplied once for all layers of the group, the few maps made inside the group are added per layer.
The backward pass is a custom autograd function that needs only the stored maps (the ReLU mask is `map > 0`)
and one gradient buffer. `MSDNet.forward_naive` is the textbook form on the same parameters.

Inference on large images (`MSDNet.forward_strips`, used by `forward` whenever no gradient is needed): the
whole-image form streams ~100 maps x H x W (0.4 GB at 1024²) and the 9 tap planes of every layer through
memory, ~4x slower per pixel at 1024² than at 256². The strip form keeps the same buffer, padded once by
reflection (so every layer reads its reflect-padded taps directly), and walks each group of layers down the
image in strips of rows: one matrix multiply per strip for the group's earlier maps, then one compiled call
(`hrtemnet.msd_kernel`, numba) that sums each layer's taps over the tap columns at once (3 planes kept instead
of 9), adds the group's own earlier maps, and makes each layer's rows `sum of dilations so far` rows behind
the strip, where everything it reads exists and is still in cache. Each tap row is computed once (no halo
recomputation); outputs equal the whole-image form to rounding. With several threads, whole groups run on
different threads, each following the previous group down the image (a wavefront), instead of threads
synchronising on every small operation.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hrtemnet.columns import NUM_LABELS
from hrtemnet.errors import UserError
from hrtemnet.io import NUM_IMAGES

MODEL_NAMES = ("msd", "unet")  # the network architectures
# Model files in the package: the seed experiment's two networks (image-only, its focal window), and the U-net
# trained for real acquisitions (carbon, focal series anywhere in -150..+100 Å, low dose; needs the nominal
# defocus: issue 11, docs/realism.md).
SHIPPED_MODEL_NAMES = ("msd", "unet", "unet-wide")
SHIPPED_MODELS_DIR = Path(__file__).parent / "data" / "models"
BUNDLE_FORMAT = "hrtemnet-model-1"


# ---- MSD-net --------------------------------------------------------------------------------------------


def msd_dilation(unit: int) -> int:
    """Dilation of feature map `unit` = i * width + j (layer i, channel j): ((i*w + j) mod 10) + 1."""
    return unit % 10 + 1


def _taps_rows(weight: torch.Tensor) -> torch.Tensor:
    """Conv weight (w, k, 3, 3) -> matrix (w * 9, k): one row per (output channel, tap)."""
    return weight.permute(0, 2, 3, 1).reshape(-1, weight.shape[1])


def _shifted_sum(taps: torch.Tensor, dilation: int) -> torch.Tensor:
    """Sum of 9 planes `taps (9, B, H, W)` each read at its tap offset x dilation, reflect padding."""
    height, width = taps.shape[-2:]
    padded = F.pad(taps, (dilation,) * 4, mode="reflect")
    out = padded[0, :, :height, :width].clone()
    for tap in range(1, 9):
        row, col = divmod(tap, 3)
        out += padded[tap, :, row * dilation : row * dilation + height, col * dilation : col * dilation + width]
    return out


def _reflect_shift_adjoint(grad: torch.Tensor, shift: int, dim: int, out: torch.Tensor) -> None:
    """out = adjoint of `y[i] = t[reflect(i + shift)]` along `dim`, applied to `grad` (a copy + a folded strip)."""
    n, size = grad.shape[dim], abs(shift)
    if shift == 0:
        out.copy_(grad)
    elif shift > 0:
        out.narrow(dim, 0, size).zero_()
        out.narrow(dim, size, n - size).copy_(grad.narrow(dim, 0, n - size))
        out.narrow(dim, n - 1 - size, size).add_(grad.narrow(dim, n - size, size).flip(dim))
    else:
        out.narrow(dim, n - size, size).zero_()
        out.narrow(dim, 0, n - size).copy_(grad.narrow(dim, size, n - size))
        out.narrow(dim, 1, size).add_(grad.narrow(dim, 0, size).flip(dim))


def _shifted_sum_adjoint(grad: torch.Tensor, dilation: int, out: torch.Tensor) -> None:
    """Adjoint of `_shifted_sum`: gradient (B, H, W) of the sum -> `out` (9, B, H, W), gradient of the taps.

    Reflect padding is separable, so rows are done once per tap row and columns per tap.
    """
    by_row = grad.new_empty((3, *grad.shape))
    for row in range(3):
        _reflect_shift_adjoint(grad, (row - 1) * dilation, -2, by_row[row])
    for tap in range(9):
        row, col = divmod(tap, 3)
        _reflect_shift_adjoint(by_row[row], (col - 1) * dilation, -1, out[tap])


class _MSDLayers(torch.autograd.Function):
    """All MSD layers: input (B, c_in, H, W) -> buffer (c_in + D*w, B, H, W) of the input and every map."""

    @staticmethod
    def forward(ctx, x, biases, group_size, width, *weights):
        in_channels, depth = x.shape[1], len(weights)
        batch, height, width_px = x.shape[0], x.shape[2], x.shape[3]
        maps = x.new_empty((in_channels + depth * width, batch, height, width_px))
        maps[:in_channels] = x.transpose(0, 1)
        flat = maps.view(maps.shape[0], -1)
        for first in range(0, depth, group_size):
            last = min(first + group_size, depth)
            before = in_channels + first * width  # maps that exist before this group
            stack = torch.cat([_taps_rows(weights[i][:, :before]) for i in range(first, last)])
            taps_group = (stack @ flat[:before]).view(last - first, width, 9, batch, height, width_px)
            for i in range(first, last):
                taps = taps_group[i - first]
                k = in_channels + i * width
                if k > before:  # maps made earlier in this group
                    taps += (_taps_rows(weights[i][:, before:k]) @ flat[before:k]).view(taps.shape)
                for j in range(width):
                    out = _shifted_sum(taps[j], msd_dilation(i * width + j))
                    maps[k + j] = torch.relu_(out.add_(biases[i, j]))
        ctx.save_for_backward(maps, biases, *weights)
        ctx.group_size, ctx.width, ctx.in_channels = group_size, width, in_channels
        return maps

    @staticmethod
    def backward(ctx, grad_maps):
        saved = ctx.saved_tensors
        maps, biases, weights = saved[0], saved[1], list(saved[2:])
        group_size, width, in_channels = ctx.group_size, ctx.width, ctx.in_channels
        depth, (batch, height, width_px) = len(weights), maps.shape[1:]
        grad = grad_maps.clone()  # the one gradient buffer, accumulated in place
        grad_flat, flat = grad.view(grad.shape[0], -1), maps.view(maps.shape[0], -1)
        grad_weights = [None] * depth
        grad_biases = torch.zeros_like(biases)
        last_group_start = ((depth - 1) // group_size) * group_size
        for first in range(last_group_start, -1, -group_size):
            last = min(first + group_size, depth)
            before = in_channels + first * width
            grad_taps_group = maps.new_empty((last - first, width * 9, batch * height * width_px))
            for i in range(last - 1, first - 1, -1):
                k = in_channels + i * width
                for j in range(width):
                    grad_out = grad[k + j] * (maps[k + j] > 0)  # ReLU mask from the stored output
                    grad_biases[i, j] = grad_out.sum()
                    dilation = msd_dilation(i * width + j)
                    slot = grad_taps_group[i - first, j * 9 : (j + 1) * 9].view(9, batch, height, width_px)
                    _shifted_sum_adjoint(grad_out, dilation, slot)
                if k > before:  # maps made earlier in this group get their gradient before their layer runs
                    grad_taps = grad_taps_group[i - first]
                    grad_weights[i] = grad_taps @ flat[before:k].T
                    grad_flat[before:k] += _taps_rows(weights[i][:, before:k]).T @ grad_taps
            # One multiply each for the gradients from and to the maps that exist before the group.
            grad_taps_all = grad_taps_group.view(-1, grad_taps_group.shape[-1])
            grad_rows_before = (grad_taps_all @ flat[:before].T).view(last - first, width * 9, before)
            stack = torch.cat([_taps_rows(weights[i][:, :before]) for i in range(first, last)])
            grad_flat[:before] += stack.T @ grad_taps_all
            for i in range(first, last):
                k = in_channels + i * width
                rows = grad_rows_before[i - first]
                if grad_weights[i] is not None:
                    rows = torch.cat([rows, grad_weights[i]], dim=1)  # (w * 9, k)
                grad_weights[i] = rows.reshape(width, 3, 3, k).permute(0, 3, 1, 2).contiguous()
        grad_x = grad[:in_channels].transpose(0, 1)
        return (grad_x, grad_biases, None, None, *grad_weights)


MSD_STRIP_ROWS = 16  # rows per strip: fewer rows cost more calls, more rows fall out of cache


@torch.no_grad()
def _msd_forward_strips(net: MSDNet, x: torch.Tensor, strip_rows: int = MSD_STRIP_ROWS,
                        threads: int = 1) -> torch.Tensor:
    """`net(x)` without autograd, computed in strips of rows that stay in cache (module docstring).

    Padded coordinates: the buffer holds every map reflect-padded by `pad` (the largest dilation) on all
    sides; reflection commutes with the per-pixel tap products, so the taps of the padded maps are the
    reflect-padded taps that `_shifted_sum` builds. Per group and strip, one matrix multiply makes the taps of
    the maps that exist before the group; `msd_kernel.group_step` does the rest (the group's own maps, the
    shifted sums, padding). Layer m of a group is `lag[m]` (the sum of the group's dilations up to m) rows
    behind the strip frontier, so the rows it reads are complete.

    `threads` > 1: group g runs on thread g % threads, one group after another down the image, each waiting
    only until the previous group has finished the rows its next strip reads (a wavefront: no thread waits for
    another within a strip, unlike per-operation threading). Torch runs single-threaded in each of them.
    """
    from hrtemnet.msd_kernel import group_step

    c_in, height, width_px = x.shape[1], x.shape[2], x.shape[3]
    w, depth, group = net.width, net.depth, net.group_size
    dilations = [[msd_dilation(i * w + j) for j in range(w)] for i in range(depth)]
    layer_d = [max(d) for d in dilations]
    pad = max(layer_d)
    hp, wp = height + 2 * pad, width_px + 2 * pad
    weights, biases = [t.detach() for t in net.weights], net.biases.detach()
    final_w, final_b = net.final.weight.view(net.out_channels, -1), net.final_bias.view(-1, 1, 1)
    out = x.new_empty((x.shape[0], net.out_channels, height, width_px))
    maps = x.new_empty((c_in + depth * w, hp, wp))  # every element is written before it is read
    flat, maps_np = maps.view(maps.shape[0], -1), maps.numpy()
    groups = [(first, min(first + group, depth)) for first in range(0, depth, group)]
    threads = max(1, min(threads, len(groups)))
    finished = np.zeros(len(groups), dtype=np.int64)  # image rows every map of a group has finished (and padded)
    progress = threading.Condition()
    failed: list[BaseException] = []

    def as_index(values) -> np.ndarray:
        return np.asarray(values, dtype=np.int64)

    def run_groups(worker: int, b: int) -> None:
        slots = min(group, depth) * w
        # ring rows per map: the strip + the layer's lag + its dilation, the rows written but not yet read
        ring = x.new_empty((slots, 3, strip_rows + max(sum(layer_d[f:e]) for f, e in groups) + pad + 1, width_px))
        block_buffer = x.new_empty(slots * 9 * strip_rows * wp)
        for g in range(worker, len(groups), threads):
            first, last = groups[g]
            before = c_in + first * w  # maps that exist before this group
            stack = torch.cat([_taps_rows(weights[i][:, :before]) for i in range(first, last)])
            in_weights = x.new_zeros(((last - first) * w, 9, max(1, (last - first - 1) * w)))
            for m, i in enumerate(range(first + 1, last), start=1):
                in_weights[m * w: (m + 1) * w, :, : m * w] = _taps_rows(weights[i][:, before:]).view(w, 9, -1)
            group_d = layer_d[first:last]
            lag = np.cumsum(group_d)
            done = np.zeros(last - first, dtype=np.int64)  # image rows finished, per layer
            added = as_index(pad - np.asarray(group_d))  # padded row up to which the group's maps are added
            args = (ring.numpy(), as_index([strip_rows + lag[m] + group_d[m] + 1
                                            for m in range(last - first) for _ in range(w)]),
                    in_weights.numpy(), biases[first:last].reshape(-1).contiguous().numpy(),
                    as_index([d for i in range(first, last) for d in dilations[i]]), as_index(lag),
                    as_index(group_d), done, added)
            f1 = 0
            while done[-1] < height:
                f0, f1 = f1, min(hp, f1 + strip_rows)
                if g > 0:  # the previous group's maps on padded rows < f1 (reflected rows included)
                    needed = min(height, max(f1 - pad, pad + 1))
                    with progress:
                        progress.wait_for(lambda: finished[g - 1] >= needed or failed)  # noqa: B023
                    if failed:
                        return
                block = block_buffer[: len(stack) * (f1 - f0) * wp].view(len(stack), f1 - f0, wp)  # contiguous:
                torch.mm(stack, flat[:before, f0 * wp: f1 * wp], out=block.view(len(stack), -1))  # one signature
                previous = int(done[-1])
                group_step(maps_np, block.numpy(), *args, f0, f1, pad, height, width_px, before, w, f1 == hp)
                if done[-1] > previous:
                    with progress:
                        finished[g] = done[-1]
                        progress.notify_all()
                if last == depth and done[-1] > previous:  # final 1x1 layer on the new rows, still in cache
                    start, end = previous, int(done[-1])
                    rows = flat[:, (pad + start) * wp: (pad + end) * wp]
                    logits = torch.mm(final_w, rows).view(-1, end - start, wp)
                    torch.add(logits[:, :, pad: pad + width_px], final_b, out=out[b, :, start:end])

    def worker_thread(worker: int, b: int) -> None:
        torch.set_num_threads(1)
        try:
            with torch.inference_mode(inference), torch.no_grad():  # the caller's modes: they are per thread
                run_groups(worker, b)
        except BaseException as error:  # handed to the calling thread, which raises it
            with progress:
                failed.append(error)
                progress.notify_all()

    torch_threads, inference = torch.get_num_threads(), torch.is_inference_mode_enabled()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        for b in range(x.shape[0]):
            maps[:c_in] = F.pad(x[b], (pad,) * 4, mode="reflect")
            finished[:] = 0
            helpers = [threading.Thread(target=worker_thread, args=(worker, b), daemon=True)
                       for worker in range(1, threads)]
            for helper in helpers:
                helper.start()
            worker_thread(0, b)
            for helper in helpers:
                helper.join()
            if failed:
                raise failed[0]
    finally:
        torch.set_num_threads(torch_threads)
    return out


class MSDNet(nn.Module):
    """Mixed-Scale Dense network: `depth` layers of `width` maps, each a dilated 3x3 conv over all earlier maps.

    No batch norm, reflect padding, Pelt's initialisation N(0, sqrt(2 / (9 (c_in + w (D - 1)) + c_out)))
    with zero biases and a zero final layer (as in Pelt's `msdnet` package).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = NUM_LABELS, depth: int = 100, width: int = 1,
                 group_size: int = 10):
        super().__init__()
        if depth < 1 or width < 1 or group_size < 1:
            raise ValueError("depth, width and group_size must be >= 1")
        self.in_channels, self.out_channels, self.depth, self.width = in_channels, out_channels, depth, width
        self.group_size = group_size  # layers per matrix multiply of the earlier maps (speed only)
        std = math.sqrt(2.0 / (9 * (in_channels + width * (depth - 1)) + out_channels))
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(width, in_channels + i * width, 3, 3) * std) for i in range(depth)
        )
        self.biases = nn.Parameter(torch.zeros(depth, width))
        self.final = nn.Conv2d(in_channels + depth * width, out_channels, kernel_size=1)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final_bias)

    def _final(self, maps: torch.Tensor) -> torch.Tensor:
        """1x1 convolution over all maps of the (C, B, H, W) buffer -> (B, out, H, W)."""
        weight = self.final.weight.view(self.out_channels, -1)
        out = (weight @ maps.view(maps.shape[0], -1)).view(self.out_channels, *maps.shape[1:])
        return (out + self.final_bias.view(-1, 1, 1, 1)).transpose(0, 1)

    @property
    def final_bias(self) -> torch.Tensor:
        bias = self.final.bias
        assert bias is not None  # built with bias=True
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.biases.requires_grad)
        # Inference runs in strips at every size: faster at every size measured (1 thread, 128²: 0.030 vs
        # 0.036 s, 256²: 0.10 vs 0.18 s) and, with 2 threads on shared cores, no thread synchronisation on every
        # small operation (256²: 0.12 s against 12.3 s; benchmarks/RESULTS.md).
        if not needs_grad:
            return self.forward_strips(x)
        maps = _MSDLayers.apply(x, self.biases, self.group_size, self.width, *self.weights)
        return self._final(maps)

    def forward_strips(self, x: torch.Tensor, strip_rows: int = MSD_STRIP_ROWS) -> torch.Tensor:
        """The same outputs without autograd, computed in cache-sized strips of rows (inference on large images)."""
        largest_dilation = max(msd_dilation(unit) for unit in range(self.depth * self.width))
        # Too small to pad once by reflection, or not an array the compiled step takes: the whole-image form.
        if (min(x.shape[-2:]) <= largest_dilation or x.device.type != "cpu"
                or x.dtype not in (torch.float32, torch.float64)):
            with torch.no_grad():
                return self._final(_MSDLayers.apply(x, self.biases, self.group_size, self.width, *self.weights))
        # As many threads as torch is set to, each running whole groups of layers (`_msd_forward_strips`).
        return _msd_forward_strips(self, x, strip_rows, threads=torch.get_num_threads())

    def forward_naive(self, x: torch.Tensor) -> torch.Tensor:
        """The textbook form (torch.cat + conv2d per map) on the same parameters: reference and benchmark."""
        maps = [x]
        for i, weight in enumerate(self.weights):
            stack = torch.cat(maps, dim=1)
            for j in range(self.width):
                dilation = msd_dilation(i * self.width + j)
                padded = F.pad(stack, (dilation,) * 4, mode="reflect")
                out = F.conv2d(padded, weight[j : j + 1], self.biases[i, j : j + 1], dilation=dilation)
                maps.append(torch.relu(out))
        return self.final(torch.cat(maps, dim=1))


# ---- U-net ----------------------------------------------------------------------------------------------


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-net (Ronneberger 2015) with batch norm and concatenated skips; `depth` poolings.

    Channels double at each pooling from `base_channels`. Any input size works: the input is padded
    (reflect) to a multiple of 2**depth and the output cropped back.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = NUM_LABELS, depth: int = 4,
                 base_channels: int = 16):
        super().__init__()
        if depth < 1 or base_channels < 1:
            raise ValueError("depth and base_channels must be >= 1")
        self.depth = depth
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(
            _double_conv(c_in, c_out) for c_in, c_out in zip([in_channels, *channels[:-2]], channels[:-1], strict=True)
        )
        self.bottom = _double_conv(channels[-2], channels[-1])
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2) for level in range(depth)
        )
        self.up = nn.ModuleList(_double_conv(2 * channels[level], channels[level]) for level in range(depth))
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_rows, pad_cols = -height % multiple, -width % multiple
        if pad_rows or pad_cols:
            mode = "reflect" if pad_rows < height and pad_cols < width else "replicate"
            x = F.pad(x, (0, pad_cols, 0, pad_rows), mode=mode)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for level in reversed(range(self.depth)):
            x = self.up[level](torch.cat([skips[level], self.upsample[level](x)], dim=1))
        return self.head(x)[..., :height, :width]


# ---- shared helpers -------------------------------------------------------------------------------------


# Largest network `build_model` builds (4 bytes each: 0.4 GB of weights, plus Adam's 2 copies in training).
# The shipped ones have 47,766 (MSD-net, depth 100) and 7.8 M (U-net, base 32) parameters.
MAX_PARAMETERS = 100_000_000


def parameter_count(name: str, in_channels: int = 3, out_channels: int = NUM_LABELS, depth: int | None = None,
                    width: int = 1, base_channels: int = 16, **_) -> int:
    """Number of weights `build_model(name, ...)` would allocate (U-net: without its batch-norm scales),
    computed without allocating them."""
    if name == "msd":
        depth = 100 if depth is None else depth
        return (9 * width * (depth * in_channels + width * depth * (depth - 1) // 2) + depth * width
                + (in_channels + depth * width + 1) * out_channels)
    depth = 4 if depth is None else depth
    channels = [base_channels * 2**level for level in range(depth + 1)]
    down = sum(9 * (c_in + c) * c for c_in, c in zip([in_channels] + channels[:-1], channels, strict=True))
    up = sum(4 * channels[level + 1] * channels[level] + 27 * channels[level] ** 2 for level in range(depth))
    return down + up + channels[0] * out_channels


def build_model(name: str, **kwargs) -> nn.Module:
    """`msd` -> MSDNet(**kwargs), `unet` -> UNet(**kwargs); unknown names or arguments, sizes that are not
    whole numbers >= 1 or networks over `MAX_PARAMETERS` -> UserError, before anything is allocated."""
    classes = {"msd": MSDNet, "unet": UNet}
    if not isinstance(name, str) or name not in classes:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"bad settings for model {name!r} ({kwargs}): {key} must be a whole number >= 1")
    try:
        size = parameter_count(name, **kwargs)
    except TypeError as error:
        raise UserError(f"bad settings for model {name!r} ({kwargs}): {error}") from None
    if size > MAX_PARAMETERS:
        raise UserError(f"model {name!r} {kwargs} would have {size:,} parameters, more than the "
                        f"{MAX_PARAMETERS:,} allowed; give a smaller --depth/--base-channels")
    try:
        return classes[name](**kwargs)
    except (TypeError, ValueError) as error:
        raise UserError(f"bad settings for model {name!r} ({kwargs}): {error}") from None


def normalize_series(series: np.ndarray) -> np.ndarray:
    """Each image of a series `(..., H, W)` minus its mean, divided by its std -> float32 numpy.

    The one normalisation used in training and prediction: it removes the dose and vacuum level, so the
    network sees contrast only. Takes numpy (convert torch tensors with `.numpy()`).
    """
    series = np.asarray(series, dtype=np.float64)
    mean = series.mean(axis=(-2, -1), keepdims=True)
    std = series.std(axis=(-2, -1), keepdims=True)
    return ((series - mean) / np.maximum(std, 1e-12)).astype(np.float32)


# ---- nominal defocus as an input (issue 11's conditioning experiment) -----------------------------------
# A conditioned network takes the series' D normalised images plus D constant planes holding each frame's
# nominal defocus / DEFOCUS_INPUT_SCALE_A (order 1, as the normalised images): in_channels = 2 D.
DEFOCUS_INPUT_SCALE_A = 100.0
DEFOCUS_INPUT_CHANNELS = 2 * NUM_IMAGES


def takes_defocus(model) -> bool:
    """Whether a model (a `LoadedModel`, anything with the `kwargs` its network was built with) expects the
    nominal defocus planes after the images."""
    kwargs = getattr(model, "kwargs", None) or {}
    return kwargs.get("in_channels", NUM_IMAGES) == DEFOCUS_INPUT_CHANNELS


@dataclass
class NominalDefocusError:
    """How far the defocus values a user gives are from the truth (networks with defocus inputs only): users
    know the focal step roughly and the absolute defocus poorly. Nominal defocus of frame k = true + offset +
    k * step error, offset ~ N(0, `offset_sigma_A`) shared by the frames, step error ~ N(0, `step_sigma_A`)."""

    offset_sigma_A: float = 20.0
    step_sigma_A: float = 5.0


def nominal_defocus_A(true_defocus_A, error: NominalDefocusError, rng: np.random.Generator) -> np.ndarray:
    """The defocus values a user would give for a series whose frames have `true_defocus_A` (Å)."""
    true_defocus_A = np.asarray(true_defocus_A, dtype=float)
    offset, step = rng.normal(0.0, error.offset_sigma_A), rng.normal(0.0, error.step_sigma_A)
    return true_defocus_A + offset + step * np.arange(len(true_defocus_A))


def series_defocus_A(source, index: int) -> np.ndarray:
    """The true defocus of each frame of series `index` of a store (`defocus_0_A`, `defocus_1_A`, ...)."""
    params = source.read_params(index)
    return np.array([params[f"defocus_{k}_A"] for k in range(NUM_IMAGES)])


def require_defocus(model, defocus_A, where: str = "") -> None:
    """UserError (one line saying how to give them) if the model takes defocus values and none are given."""
    if takes_defocus(model) and defocus_A is None:
        raise UserError(f"{where}this {model.name} model takes the nominal defocus of each frame: give it with "
                        "--defocus D1,D2,D3 (Å, positive = underfocus; python: defocus_A=[...])")


def network_input(series: np.ndarray, defocus_A=None) -> np.ndarray:
    """The network's input `(C, H, W)` float32: the normalised series, then (when `defocus_A` is given, one
    value per frame in Å, positive = underfocus) one constant plane per frame with its nominal defocus."""
    x = normalize_series(series)
    if defocus_A is None:
        return x
    defocus = np.asarray(defocus_A, dtype=np.float32).reshape(-1)
    if len(defocus) != len(x):
        raise UserError(f"{len(defocus)} defocus value(s) for a series of {len(x)} images: give one per image")
    planes = np.broadcast_to(defocus[:, None, None] / np.float32(DEFOCUS_INPUT_SCALE_A), x.shape)
    return np.concatenate([x, planes])


def add_defocus_inputs(state_dict: dict, net: nn.Module) -> dict:
    """Weights of an image-only network for the same network with defocus planes: every weight that reads the
    input channels gets zero weights for the new planes (inserted after the images), so the conditioned network
    starts out computing exactly what the image-only one computes."""
    target = net.state_dict()
    expanded = {}
    for key, value in state_dict.items():
        want = target[key].shape
        if value.shape != want:
            if value.dim() < 2 or value.shape[1] + NUM_IMAGES != want[1] or value.shape[0] != want[0]:
                raise UserError(f"cannot add defocus inputs to weight {key} {tuple(value.shape)} -> {tuple(want)}")
            zeros = value.new_zeros((value.shape[0], NUM_IMAGES, *value.shape[2:]))
            value = torch.cat([value[:, :NUM_IMAGES], zeros, value[:, NUM_IMAGES:]], dim=1)
        expanded[key] = value
    return expanded


# ---- flips and rotations ---------------------------------------------------------------------------------
NUM_DIHEDRAL = 8  # the flips and 90-degree rotations of a square pixel grid


def dihedral(array, transform: int, inverse: bool = False):
    """One of the 8 flips/rotations (0..7) of the last two axes of a numpy array or torch tensor; 0 is the
    identity. `inverse` undoes transform `transform`: `dihedral(dihedral(a, t), t, inverse=True)` is `a`."""
    rot90, flip = (torch.rot90, torch.flip) if isinstance(array, torch.Tensor) else (np.rot90, np.flip)
    turns = transform % 4
    if inverse:
        return rot90(flip(array, (-1,)) if transform >= 4 else array, -turns, (-2, -1))
    rotated = rot90(array, turns, (-2, -1))
    return flip(rotated, (-1,)) if transform >= 4 else rotated


class FlipAverage(nn.Module):
    """A network averaged over the 8 flips/rotations of its input (test-time augmentation).

    The networks are trained on all 8 views of every crop (`hrtemnet.training`), so each is an equally valid
    look at a series; the mean of the 8 output maps, each turned back, averages out the errors that depend
    on how the lattice happens to lie on the pixel grid. Logits are averaged (a normalised geometric mean of
    the class probabilities). Costs 8 network passes; the defocus planes are constant and so unaffected.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.net(x)  # transform 0 is the identity
        for transform in range(1, NUM_DIHEDRAL):
            total = total + dihedral(self.net(dihedral(x, transform)), transform, inverse=True)
        return total / NUM_DIHEDRAL


# ---- model files ----------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode) with what it needs to be used correctly."""

    net: nn.Module
    name: str
    kwargs: dict
    sampling_A: float  # the sampling it was trained at: resample inputs to this
    peak_params: dict = field(default_factory=dict)  # `hrtemnet.peaks.PeakConfig` fields
    card: dict = field(default_factory=dict)  # provenance: data, steps, validation F1, ...

    @property
    def flip_average(self) -> bool:
        """Whether it predicts with the mean over the 8 flips/rotations of its input (`net` is a `FlipAverage`)."""
        return isinstance(self.net, FlipAverage)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    inner = getattr(model, "module", model)
    return inner if isinstance(inner, nn.Module) else model


BEST_MODEL_FILE = "best.pt"  # in a training folder: the weights with the best validation F1 (what a folder loads)

# Weights as committed for the shipped models and kept experiment checkpoints: each file stays at a few MB
# (MSD-net is small in float32; U-net's 7.8 MB halve to 3.9 MB in float16 at no measurable F1 cost).
COMMITTED_WEIGHTS_DTYPE = {"msd": torch.float32, "unet": torch.float16}


def save_model_bundle(path: str | Path, model: nn.Module, model_name: str, model_kwargs: dict,
                      sampling_A: float, peak_params: dict, card: dict,
                      weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write a small model file: weights + what `load_model` needs to rebuild and use them.

    float16 weights halve the file (shipped U-net: 3.9 instead of 7.8 MB); loading casts them back to float32.
    The card records the stored precision (`weights_dtype`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(weights_dtype) if v.is_floating_point() else v).cpu()
             for k, v in unwrap(model).state_dict().items()}
    bundle = {"format": BUNDLE_FORMAT, "model_name": model_name, "model_kwargs": dict(model_kwargs),
              "sampling_A": float(sampling_A), "peak_params": dict(peak_params),
              "card": dict(card) | {"weights_dtype": str(weights_dtype).removeprefix("torch.")}, "state_dict": state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(bundle, tmp)
    tmp.replace(path)  # never leave a half-written model file
    return path


def _resolve_model_path(spec: str | Path) -> Path:
    if str(spec) in SHIPPED_MODEL_NAMES:
        path = SHIPPED_MODELS_DIR / f"{spec}.pt"
        if not path.is_file():
            raise UserError(f"no shipped {spec} model ({path} is missing); reinstall hrtemnet, or train one with "
                            "`hrtemnet train DATASET.zarr --model msd|unet --out DIR` and pass DIR/best.pt")
        return path
    path = Path(spec)
    if path.is_dir():
        path = path / BEST_MODEL_FILE
    if not path.is_file():
        raise UserError(f"model {spec}: no such file; give {', '.join(SHIPPED_MODEL_NAMES)} or a model file (.pt)")
    return path


def load_model(spec: str | Path, flip_average: bool = False) -> LoadedModel:
    """Load a shipped model (`msd`, `unet`, `unet-wide`), a model file, or a training folder (its best.pt).

    `flip_average`: predict with the mean over the 8 flips/rotations of the input (`FlipAverage`; 8x the time).
    """
    path = _resolve_model_path(spec)
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise UserError(f"{path}: not a readable model file ({type(error).__name__})") from None
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{path}: not an hrtemnet model file (write one with `hrtemnet train`)")
    _check_bundle(path, bundle)
    try:
        net = build_model(bundle["model_name"], **bundle["model_kwargs"])
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
    try:
        net.load_state_dict(bundle["state_dict"])
    except (RuntimeError, TypeError, AttributeError, KeyError):
        raise UserError(f"{path}: weights do not fit a {bundle['model_name']} {bundle['model_kwargs']}") from None
    card = bundle.get("card")
    model = LoadedModel(net.eval(), bundle["model_name"], bundle["model_kwargs"], float(bundle["sampling_A"]),
                        dict(bundle["peak_params"]), dict(card) if isinstance(card, dict) else {})
    return with_flip_average(model) if flip_average else model


FLIP_AVERAGE_SUFFIX = " +flips"  # after a model's name in tables and CSV headers when it uses `FlipAverage`


def flip_average_name(name: str, flip_average: bool) -> str:
    """A model's name in tables, CSV headers and resumed score logs: FLIP_AVERAGE_SUFFIX added when it averages."""
    return name + (FLIP_AVERAGE_SUFFIX if flip_average else "")


def with_flip_average(model: LoadedModel) -> LoadedModel:
    """The same model predicting with the mean over the 8 flips/rotations of its input (`FlipAverage`)."""
    return model if model.flip_average else replace(model, net=FlipAverage(model.net).eval())


def _check_bundle(path: Path, bundle: dict) -> None:
    """Everything `load_model` uses from a model file is there and sensible (UserError naming the file)."""
    from hrtemnet.peaks import PeakConfig
    from hrtemnet.validation import validate_config

    missing = [key for key in ("model_name", "model_kwargs", "sampling_A", "peak_params", "state_dict")
               if key not in bundle]
    if missing:
        raise UserError(f"{path}: the model file lacks {', '.join(missing)}; write it with `hrtemnet train`")
    if not isinstance(bundle["model_kwargs"], dict) or not all(isinstance(k, str) for k in bundle["model_kwargs"]):
        raise UserError(f"{path}: model_kwargs {bundle['model_kwargs']!r} is not a set of named settings")
    sampling = bundle["sampling_A"]
    if isinstance(sampling, bool) or not isinstance(sampling, int | float) or not 0.01 <= sampling <= 2.0:
        raise UserError(f"{path}: sampling_A {sampling!r} is not a pixel size in Å (0.01 - 2 Å/px)")
    if not isinstance(bundle["state_dict"], dict):
        raise UserError(f"{path}: state_dict is not a set of weights")
    peak_params = bundle["peak_params"]
    try:
        if not isinstance(peak_params, dict):
            raise TypeError("not a set of named settings")
        validate_config(PeakConfig(**peak_params))
    except (TypeError, ValueError) as error:
        raise UserError(f"{path}: peak_params {peak_params!r} are not peak settings ({error})") from None
