"""``Segmenter``: a field → per-point class logits, readable at any query points."""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree
from torch import nn

from ..nn import Coarsened, DIBatchNorm, DIConv, DISequential, Resample, Residual
from ..nn.base import check_points
from ..points import PointSet, grid, image_to_values, values_to_image
from .base import DIModel, check_counts, check_flag
from .baselines import ConvUNet, GridUNetSegmenter, check_read, read_at
from .blocks import (
    STEM_QUADRATURES,
    check_preset,
    check_stem_quadrature,
    interpolant_grid,
    residual_block,
)
from .blocks import conv_block as _conv_block

__all__ = ["Segmenter", "SEGMENTER_PRESETS"]

SEGMENTER_PRESETS = ("dinet3", "dinet5", "dinet-unet")
LATTICE_NETS = ("conv", "di")
#: How dinet-unet's head reads its logits at a query point (see ``Segmenter``'s ``read``).
READS = ("cell", "kernel")
#: How dinet-unet's stem reads the input points (see ``Segmenter``'s ``stem_quadrature``).
SEGMENT_STEMS = (*STEM_QUADRATURES, "nodes")


def node_spacing(points: PointSet, lattice: PointSet) -> torch.Tensor:
    """Each lattice node's distance to the nearest of ``points``, in units of the lattice's
    step (its first axis), as ``(1, N_lattice, 1)`` float32 — 0 where a point sits on the
    node, so 0 everywhere on the lattice's own grid."""
    step = 2.0 / lattice.shape[0]
    dist, _ = cKDTree(points.coords.double().cpu().numpy()).query(
        lattice.coords.double().cpu().numpy())
    return torch.as_tensor(dist / step, dtype=torch.float32).reshape(1, -1, 1)


def _up(spacing: float) -> Resample:
    """Linear (moving least squares) upsampling from a level of point spacing ``spacing``."""
    return Resample("linear", support=2 * spacing)


class LatticeUNet(nn.Module):
    """A U-Net on a point set that coarsens by prefix (a grid's sub-grids): per level a
    residual block (the first of each coarser level strided, so it integrates the finer
    level's features onto the coarse points), then back up — linear resampling to the finer
    level, concatenation with that level's features, two conv-norm-ReLU blocks.

    Args:
        widths: channels per level, finest first (the input has ``widths[0]``).
        spacing: the finest level's kernel lattice step; it doubles per level.
        kernel: the convolutions' kernel family.

    Shapes:
        - x: ``(B, N, widths[0])``, points: ``PointSet(N)``
        - output: ``(B, N, widths[0])`` on the same points
    """

    def __init__(self, widths: tuple[int, ...], spacing: float, kernel: str = "spline") -> None:
        super().__init__()
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level, width in enumerate(widths):
            h = spacing * 2**level
            c_in = widths[max(level - 1, 0)]
            self.down.append(DISequential(
                residual_block(c_in, width, h, stride=2 if level else 1, kernel=kernel),
                residual_block(width, width, h, kernel=kernel)))
            if level:
                self.up.append(_up(h))
                self.merge.append(DISequential(
                    _conv_block(widths[level - 1] + width, widths[level - 1], h / 2,
                                kernel=kernel),
                    _conv_block(widths[level - 1], widths[level - 1], h / 2, kernel=kernel)))

    def forward(self, x: torch.Tensor, points: PointSet) -> torch.Tensor:
        skips = []
        for down in self.down:
            x, points = down(x, points)
            skips.append((x, points))
        for level in reversed(range(len(self.up))):
            finer, finer_points = skips[level]
            x = self.up[level](x, points, finer_points)
            x, points = self.merge[level](torch.cat([finer, x], dim=-1), finer_points)
        return x


class Segmenter(DIModel):
    """A DI-Net segmenter whose output is a field of logits that can be read anywhere (e.g.
    between pixels): its last layer is a DIConv evaluated at the query points, or for
    ``dinet-unet`` on its lattice, read by cell.

    Presets:

    - ``"dinet3"`` (the paper's DI-Net-3): 16 channels, three convolutions (two conv-norm-ReLU
      blocks, then the query conv).
    - ``"dinet5"`` (DI-Net-5): 16 channels; a stem conv, a coarser level (¼ of the points,
      two convs) upsampled and added back to the stem's output (the skip), a conv, the query
      conv.
    - ``"dinet-unet"`` (default): a stem reads the field's piecewise-linear interpolant over
      whatever points arrive (``stem_quadrature``) onto a fixed lattice — the pixel centres
      of a (2/base_spacing)² grid — and a 3×3 DIConv maps it (with each node's distance to
      the points, ``spacing_input``) to ``widths[0]`` channels; a
      four-level U-Net (``widths`` channels on the lattice, ½, ¼ and ⅛ of its side: a
      receptive field of the whole canvas) runs there; a 3×3 DIConv head at one pixel
      gives the logits, which a query reads from the lattice cell it lies in (``read``).
      Only the stem depends on the input points, so the U-Net on the fixed lattice is by
      default a conv net (``lattice_net="conv"``, :class:`~dinet.models.baselines.ConvUNet`),
      and ``GridUNetSegmenter`` (``--model cnn``) is the same network on pixels — with the
      default stem exactly, on the pixel grid (:meth:`start_from`).

    Args:
        preset: one of :data:`SEGMENTER_PRESETS`.
        in_channels: channels of the input field.
        n_classes: number of classes.
        base_spacing: the finest kernel lattice step in domain units (2/H for H×H images).
        quadrature: ``"weights"`` or ``"none"`` (uniform weights 2^d/N, as in the paper).
        kernel: the convolutions' kernel family, ``"spline"`` (default) or ``"mlp"``.
        widths: ``dinet-unet`` only: channels per U-Net level, finest first; default
            (32, 64, 128, 256) ((16, 32, 64, 128) in format 1).
        stem_quadrature: ``dinet-unet`` only: ``"nodes"`` (default): the points' Delaunay
            interpolant read at the lattice nodes, then a 3×3 DIConv on the lattice — on the
            pixel grid the values as they are, so the model is exactly the pixel U-Net
            (``--model cnn``) there and a trained one starts it (:meth:`start_from`);
            ``"linear"`` (format 3's default): the interpolant read on a grid three times
            finer than the lattice and integrated against a 5×5 learned kernel at half a
            pixel (32 MLP basis functions), as one ``conv2d`` — see
            :class:`~dinet.models.Classifier`; ``"weights"`` (format 1): the sum over the
            input points with their quadrature weights, a 5×5 stem at one pixel with 16
            basis functions.
        spacing_input: ``dinet-unet`` with the ``"nodes"`` stem only (default there: True;
            False in formats 1–3): the stem also reads each lattice node's distance to the
            nearest input point, in pixels (:func:`node_spacing`) — 0 on the pixel grid,
            larger where the points are sparse — so the network knows where the
            interpolant is guessing. Its stem weights start at zero in :meth:`start_from`.
        lattice_net: ``dinet-unet`` only: the U-Net on the lattice. ``"conv"`` (default):
            :class:`~dinet.models.baselines.ConvUNet` run as ``conv2d`` on the lattice's
            image — each of its convolutions on that grid is a DIConv exactly
            (:meth:`DIConv.from_conv <dinet.nn.DIConv.from_conv>`), so nothing is lost but
            the (B, N, C) layout; ``"di"`` (format 1): :class:`LatticeUNet`, the levels built
            of DI layers on the lattice and its prefixes (strided kernels twice as wide,
            linear MLS upsampling), a training step twice as long on the CPU (0.84 vs 0.40 s,
            batch 32 on a 32×32 lattice, one thread: ``benchmarks/seg_train_step.py``).
        read: ``dinet-unet`` only: how the head reads the logits at a query point.
            ``"cell"`` (default): the head is evaluated at the lattice nodes and a query takes
            the logits of the lattice cell it lies in — the piecewise-constant field a pixel
            label map is, so a query between pixel centres gets its pixel's answer;
            ``"kernel"`` (formats 1 and 2): the head DIConv is evaluated at the query point
            itself, a smooth field across cell edges.

    Shapes:
        - x: ``(B, N, in_channels)``, points: ``PointSet(N)`` (2-D)
        - query: ``PointSet(N_query)`` (default: ``points``)
        - output: logits ``(B, N_query, n_classes)``
    """

    # 2: dinet-unet's widths recorded (32..256 by default), its stem integrates the points'
    # piecewise-linear interpolant (stem_quadrature="linear"), its U-Net a conv net (lattice_net)
    # 3: dinet-unet reads its logits by lattice cell (read="cell")
    # 4: dinet-unet's stem may read each node's distance to the points (spacing_input)
    FORMAT_VERSION = 4

    def __init__(self, preset: str = "dinet-unet", in_channels: int = 1, n_classes: int = 11,
                 base_spacing: float = 2 / 32, quadrature: str = "weights",
                 kernel: str = "spline", widths: tuple[int, ...] | None = None,
                 stem_quadrature: str | None = None, lattice_net: str | None = None,
                 read: str | None = None, spacing_input: bool | None = None) -> None:
        check_preset(preset, SEGMENTER_PRESETS, "Segmenter")
        unet = {}
        if preset == "dinet-unet":
            unet = {"widths": check_counts((32, 64, 128, 256) if widths is None else widths,
                                           "widths"),
                    "stem_quadrature": check_stem_quadrature(stem_quadrature or "nodes",
                                                             SEGMENT_STEMS),
                    "lattice_net": lattice_net or "conv",
                    "read": check_read(read or "cell", READS)}
            unet["spacing_input"] = (unet["stem_quadrature"] == "nodes"
                                     if spacing_input is None
                                     else check_flag(spacing_input, "spacing_input"))
            if unet["spacing_input"] and unet["stem_quadrature"] != "nodes":
                raise ValueError("spacing_input is an input of the 'nodes' stem; got "
                                 f"stem_quadrature={unet['stem_quadrature']!r}")
            if unet["lattice_net"] not in LATTICE_NETS:
                raise ValueError(f"unknown lattice_net {lattice_net!r}; valid: "
                                 f"{', '.join(map(repr, LATTICE_NETS))}")
        elif any(o is not None for o in (widths, stem_quadrature, lattice_net, read,
                                         spacing_input)):
            raise ValueError(f"widths, stem_quadrature, lattice_net, read and spacing_input "
                             f"are options of "
                             f"the dinet-unet preset; got preset {preset!r}")
        super().__init__(preset=preset, in_channels=in_channels, n_classes=n_classes,
                         base_spacing=base_spacing, quadrature=quadrature, kernel=kernel,
                         **unet)
        h = float(base_spacing)

        def conv_block(c_in: int, c_out: int, spacing: float) -> DISequential:
            return _conv_block(c_in, c_out, spacing, kernel=kernel)

        if preset == "dinet3":
            self.body = DISequential(conv_block(in_channels, 16, h), conv_block(16, 16, h))
            width = 16
        elif preset == "dinet5":
            coarse = DISequential(conv_block(16, 16, 2 * h), conv_block(16, 16, 2 * h))
            self.body = DISequential(
                conv_block(in_channels, 16, h),
                Residual(Coarsened(coarse, stride=2, upsample=_up(2 * h))),
                conv_block(16, 16, h),
            )
            width = 16
        else:
            side = round(2.0 / h)
            self.lattice = grid((side, side))
            width = unet["widths"][0]
            self.interpolant = None
            if unet["stem_quadrature"] == "nodes":
                extra = int(unet["spacing_input"])
                self.stem = DIConv(in_channels + extra, width, 3, spacing=h, bias=False)
                self.interpolant = Resample("delaunay")
                self.interpolant_grid = self.lattice
            elif unet["stem_quadrature"] == "linear":
                self.stem = DIConv(in_channels, width, 5, spacing=h / 2, bias=False,
                                   kernel="mlp", n_basis=32, grid_fast_path=True)
                self.interpolant = Resample("delaunay")
                self.interpolant_grid = interpolant_grid(side, h, h / 2)
            else:
                self.stem = DIConv(in_channels, width, 5, spacing=h, bias=False, kernel="mlp")
            self.stem_norm = DIBatchNorm(width)
            if unet["lattice_net"] == "conv":
                self.unet = ConvUNet(tuple(unet["widths"]))
            else:
                self.unet = LatticeUNet(tuple(unet["widths"]), h, kernel=kernel)
        self.head = DIConv(width, n_classes, 3, spacing=h, kernel=kernel)

    def start_from(self, source: DIModel) -> None:
        """Copy ``source``'s weights (``dinet train --init``): a ``Segmenter`` built with the
        same arguments, or — for ``dinet-unet`` with ``stem_quadrature="nodes"`` — the pixel
        U-Net (:class:`~dinet.models.baselines.GridUNetSegmenter`, ``--model cnn``) of the
        same widths on a grid of the lattice's size: then the two are the same network, and
        on that grid this model's logits are the U-Net's (its stem reads the grid's values
        as they are, the spacing channel, 0 there, gets zero weights, and every lattice
        convolution is the U-Net's ``conv2d``)."""
        if not isinstance(source, GridUNetSegmenter):
            return super().start_from(source)
        mine, theirs = self.config, source.config
        keys = ("in_channels", "n_classes", "widths", "read")
        problems = [f"{k} {mine.get(k)!r} vs {theirs[k]!r}" for k in keys
                    if mine.get(k) != theirs[k]]
        for key, needed in (("stem_quadrature", "nodes"), ("lattice_net", "conv")):
            if mine.get(key) != needed:
                problems.append(f"{key} {mine.get(key)!r} (needs {needed!r})")
        if mine["kernel"] not in ("spline", "cubic"):
            problems.append(f"kernel {mine['kernel']!r} (needs one exact on the grid: "
                            "'spline' or 'cubic')")
        if mine.get("stem_quadrature") == "nodes" and theirs["size"] != self.lattice.shape[0]:
            problems.append(f"a {self.lattice.shape[0]}² lattice vs a {theirs['size']}² grid")
        if problems:
            raise ValueError("a pixel U-Net converts into dinet-unet only with the same "
                             "network: " + "; ".join(problems))
        state = dict(source.state_dict())
        if mine["spacing_input"]:  # the spacing channel starts unused: exact on the grid
            stem = state["stem.0.weight"]
            state["stem.0.weight"] = torch.cat([stem, stem.new_zeros(stem[:, :1].shape)], 1)
        renamed = {"stem.0.": "stem.", "stem.1.": "stem_norm."}
        self.load_state_dict({next((new + k[len(old):] for old, new in renamed.items()
                                    if k.startswith(old)), k): v for k, v in state.items()})

    @classmethod
    def upgrade_config(cls, config, version):
        # What formats 1-3 did not record: dinet-unet's widths, weighted stem and DI-layer
        # U-Net (format 1), its head read at the query points (formats 1 and 2), that its stem
        # read no spacing channel (formats 1-3).
        if version not in (1, 2, 3):
            return super().upgrade_config(config, version)
        if config.get("preset", "dinet-unet") == "dinet-unet":
            if version == 1:
                config = {**config, "widths": [16, 32, 64, 128], "stem_quadrature": "weights",
                          "lattice_net": "di"}
            if version in (1, 2):
                config = {**config, "read": "kernel"}
            config = {**config, "spacing_input": False}
        return config

    def forward(self, x: torch.Tensor, points: PointSet,
                query: PointSet | None = None) -> torch.Tensor:
        points = self.prepare_points(points)
        query = points if query is None else check_points(query, 2, "query")
        if self.config["preset"] == "dinet-unet":
            if self.interpolant is not None:
                filled = self.interpolant(x, points, self.interpolant_grid)
                if self.config["spacing_input"]:
                    filled = torch.cat([filled, node_spacing(points, self.lattice).to(
                        x).expand(len(x), -1, -1)], dim=-1)
                x, points = filled, self.interpolant_grid
            x = torch.relu(self.stem_norm(self.stem(x, points, self.lattice), self.lattice))
            if self.config["lattice_net"] == "conv":
                x = image_to_values(self.unet(values_to_image(x, self.lattice)), self.lattice)
            else:
                x = self.unet(x, self.lattice)
            if self.config["read"] == "cell":
                logits = values_to_image(self.head(x, self.lattice), self.lattice)
                return read_at(logits, query, "cell")
            return self.head(x, self.lattice, query)
        features, _ = self.body(x, points)
        return self.head(features, points, query)


