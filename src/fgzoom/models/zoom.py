"""The attention-crop zoom network.

level=feature::

    x -> stem..stage k -> f [B, C, h, w] -> attention A [B, M, h, w] -> boxes [B, 4] on f's grid
      f -> stage k+1..end -> head -> logits_raw
      crop_resize(f, boxes, size=(h, w)) -> stage k+1..end -> head -> logits_zoom

level=image: the image is cropped and resized to H x W, and the whole backbone runs again on the zoomed image.
With ``steps`` = n > 1 (level=image) the zoom recurses, as RA-CNN does: the attention of each zoomed view
picks a box inside that view, which is cropped again from the batch as loaded, so each step magnifies more
and reads the source pixels afresh; every step's view is classified.

Boxes are always computed on the image grid (the mean map resized to H x W, ``rule_boxes``), so they are
continuous and may be narrower than one feature cell; at level=feature they are mapped to the feature grid.
The ``continuous`` sampler (default) crops the float box with ``crop_resize`` (``F.interpolate``'s rule at
the box's real edges, every mode); ``slice`` rounds it outward to whole cells (exact ``F.interpolate`` of the
slice); ``grid_sample`` samples the float box with ``crop_affine``. ``box=learned`` predicts the box
(``LearnedBox``) and trains it through a sampler differentiable in the box (continuous or grid_sample).
``box=ranked`` proposes candidate boxes at the attention's peaks, scores them with a small head and zooms the
best (``fgzoom.models.ranked_box``); in training a few candidates are classified by the zoomed branch without
gradient (``_probe``), whose order the head learns. ``num_regions`` = k > 1 crops k regions per sample as one
batch of B*k views.

With ``input_size`` (``model.input_size``) the backbone's x is the batch resized to input_size x input_size;
level=image then crops from the batch as loaded (full resolution) and resizes the crop to the view's size,
so the zoomed branch sees detail the downsampled view lost. Boxes in ``boxes_image`` are always on the
loaded batch's grid.

The prediction fuses both branches (mean of probabilities by default).

With ``crop=false`` (``model=bap``) no zoomed view runs: the attention head, its BAP classifier and their losses
train the backbone, the prediction is the raw branch, and at evaluation the boxes are computed as the zoom model
computes them (on the grid its level crops) for the localization metrics, nothing cropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor

from fgzoom.models.attention import AttentionHead
from fgzoom.models.backbone import BackboneConfig, create_backbone
from fgzoom.models.backbone_split import check_zoom_size, split_backbone
from fgzoom.models.backbone_split.geometry import measure_cell_offset
from fgzoom.models.branch_norm import BranchStats
from fgzoom.models.input_view import InputView
from fgzoom.models.learned_box import LearnedBox
from fgzoom.models.network import FGVCNet
from fgzoom.models.ranked_box import ProposalScorer, probe_order
from fgzoom.models.zoom_config import ZoomConfig
from fgzoom.models.zoom_crop import crop_views
from fgzoom.ops.attention_boxes import glimpse_boxes, normalize_attention, region_boxes, resize_attention
from fgzoom.ops.boxes import grow_boxes, nest_boxes, round_boxes, scale_boxes
from fgzoom.ops.cell_geometry import cells_to_image, image_to_cells, is_zero_offset
from fgzoom.ops.proposals import attention_proposals


class BoxChoice(NamedTuple):
    """What ``ZoomNet.choose_boxes`` returns: the boxes on the grid cropped and on the image grid
    (Tensor[B, k, 4]), degenerate Tensor[B, k], and for ``box=ranked`` the candidates Tensor[B, C, 4] float on the
    image grid and their scores Tensor[B, C] (with gradient to the score head); None for the other rules."""

    boxes: Tensor
    boxes_image: Tensor
    degenerate: Tensor
    candidates: Tensor | None = None
    scores: Tensor | None = None


@contextmanager
def evaluating(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Within the block every module under ``modules`` is in eval mode (BatchNorm reads, never updates, its
    running statistics; dropout off); afterwards each has its own mode back."""
    modes = [(m, m.training) for root in modules for m in root.modules()]
    for root in modules:
        root.train(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class ZoomedViews(NamedTuple):
    """What one zoom path returns: boxes Tensor[B, k, 4] on the grid cropped and ``boxes_image`` on the grid of
    the batch as loaded, ``degenerate`` Tensor[B, k], the views' logits Tensor[B*k, K] (or Tensor[B, n, K] for n
    steps), the zoomed tensor, and outputs only that path has."""

    boxes: Tensor
    boxes_image: Tensor
    degenerate: Tensor
    logits: Tensor
    zoomed: Tensor
    extra: dict[str, Tensor] = {}


def _pick(boxes: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` Tensor[B, R] of ``boxes`` Tensor[B, C, 4] -> Tensor[B, R, 4]."""
    return boxes.gather(1, index[..., None].expand(-1, -1, 4))


def mean_prob_log(logits: Tensor) -> Tensor:
    """Log of the mean of the views' probabilities, logits Tensor[B, n, K] -> Tensor[B, K] float32, computed
    in log space (log-mean-exp of the log-softmaxes), so classes far below the top keep their order instead of
    tying at a clamp (which top-k accuracy would read)."""
    log_probs = logits.float().log_softmax(-1)
    return torch.logsumexp(log_probs, dim=1) - math.log(logits.shape[1])


def fuse(logits_raw: Tensor, logits_zoom: Tensor, fusion: str) -> Tensor:
    """Combine the branches into log-probabilities Tensor[B, K] (argmax = prediction)."""
    if fusion == "mean_prob":
        return mean_prob_log(torch.stack([logits_raw.float(), logits_zoom.float()], dim=1))
    if fusion == "mean_logit":
        return ((logits_raw.float() + logits_zoom.float()) / 2).log_softmax(-1)
    return (logits_raw if fusion == "raw" else logits_zoom).float().log_softmax(-1)


class ZoomNet(FGVCNet):
    """Backbone + attention head + zoom branch.

    forward(x Tensor[B, 3, H, W]) returns a dict:
        logits (fused log-probs), logits_raw, logits_zoom: Tensor[B, K] (for k > 1 regions or n > 1 steps
            logits_zoom is the log of the mean of the views' probabilities, and logits_views Tensor[B, k or n, K]
            holds each view);
        logits_attention: Tensor[B, K] (BAP auxiliary, learned head only); logits_attention_views:
            Tensor[B, n - 1, K], the same classifier on each zoomed view that picked the next box (n > 1 steps);
        part_features: Tensor[B, M*C] (learned head only);
        attention: Tensor[B, h, w] mean map in [0, 1], detached;
        boxes: on the grid that was cropped, Tensor[B, 4] (k = 1) or Tensor[B, k, 4]; int64 for the slice
            sampler, float for the others; boxes_image: the same regions on the grid of x; with n > 1 steps the
            last step's box, and boxes_steps Tensor[B, n, 4] every step's box on the grid of x;
        degenerate: Tensor[B] (or [B, k]) bool, maps that fell back to the whole frame (ranked: a flat mean map);
        candidates: Tensor[B, C, 4] float on the grid of x, and candidate_scores: Tensor[B, C] float32, detached
            (``box=ranked`` only; with n > 1 steps those of step 1); the boxes are the top k by score;
        rank_scores: Tensor[B, n, R] and rank_logits: Tensor[B, n, R, K] (``box=ranked``, training only): the
            scores of R probed candidates per step and the zoomed branch's logits on them (no gradient), the
            ranking loss's input;
        logits_drop: Tensor[B, K] (training with ``attention_drop`` set only);
        zoomed: the zoomed tensor, Tensor[B*k, ...] (only with ``return_zoomed=True``).

    With ``crop=false`` (``model=bap``): ``logits`` is the raw branch's log-softmax and there is no ``logits_zoom``,
    ``logits_views`` or ``zoomed``; ``boxes``, ``boxes_image`` and ``degenerate`` are returned at evaluation only
    (``eval()``), where the localization metrics and predictions read them.

    ``threshold`` overrides theta of the threshold and moments rules for one call (the threshold views of
    test-time augmentation); None = ``model.zoom.threshold`` (a random theta in ``threshold_range`` in training).
    """

    branches = {"acc_raw": "logits_raw", "acc_zoom": "logits_zoom"}

    def __init__(self, backbone: BackboneConfig, zoom: ZoomConfig, num_classes: int,
                 input_size: int | None = None) -> None:
        super().__init__()
        self.config = zoom
        if not zoom.crop:  # no zoomed branch to score: acc is acc_raw
            self.branches = {"acc_raw": "logits_raw"}
        self.view = InputView(input_size)
        model = create_backbone(backbone, num_classes, input_size=input_size)
        # the split for the backbone's family (CNN, Swin, ViT); an unsupported family is one ConfigError here
        self.split = split_backbone(model, zoom.stage, need_after=zoom.level == "feature", name=backbone.name)
        check_zoom_size(self.split, zoom.level, zoom.size, zoom.scale_factor, zoom.glimpse_size)
        if zoom.attention == "cls":
            self.split.require_class_attention()
        self.attention = AttentionHead(zoom.attention, self.split.channels, zoom.num_maps, num_classes)
        if zoom.attention == "head":
            self.part_features_dim = zoom.num_maps * self.split.channels
        if zoom.box == "learned":
            self.rank_margin = zoom.rank_margin
        if zoom.box == "ranked":
            self.proposal_margin = zoom.rank_margin
        # box=ranked's score head: a module only then, so the other rules' checkpoints keep their keys
        self.proposal_scorer = ProposalScorer(self.split.channels) if zoom.box == "ranked" else None
        self.learned_box = (
            LearnedBox(self.split.channels, zoom.num_regions, zoom.min_scale, zoom.max_scale)
            if zoom.box == "learned" else None
        )
        # the layers the zoomed views pass: the tail of the split (feature level) or the whole backbone (image)
        tail = self.split.tail_modules() if zoom.level == "feature" else [self.split]
        if zoom.steps > 1:  # the attention head also reads the zoomed views: statistics of their own there
            tail.append(self.attention)
        self.branch_stats = BranchStats(tail) if zoom.norm_stats == "branch" and zoom.crop else None
        # where the split's cells sit in the image (fgzoom.ops.cell_geometry): measured on the backbone as built
        # (with its pretrained weights), then kept in the checkpoint, so a resumed or evaluated model boxes the same
        # measured once per architecture, weights source and stage in a process (dropout rates do not move it)
        key = (backbone.name, backbone.pretrained, backbone.pretrained_path, repr(backbone.kwargs), backbone.img_size,
               input_size, zoom.stage)
        offset = zoom.fixed_cell_offset or measure_cell_offset(self.split, cache_key=key)
        self.register_buffer("cell_offset", torch.tensor(offset, dtype=torch.float32))
        self._mirror_offset()

    def _mirror_offset(self) -> None:
        """``self.offset``: the buffer as Python floats (read on every step without a device sync), rounded as
        the buffer holds them."""
        self.offset = tuple(float(v) for v in self.cell_offset.tolist())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "cell_offset"
        if key not in state_dict:  # a checkpoint from before the measured cell offset: the plain resize rule
            state_dict[key] = torch.zeros(2)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._mirror_offset()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint the backbone on both sides of the split (``BackboneSplit.set_grad_checkpointing``)."""
        self.split.set_grad_checkpointing(enable)

    def compile_backbone(self, **options) -> None:
        """``torch.compile`` the backbone on both sides of the split (``BackboneSplit.compile_stages``); the
        attention head, boxes, crop and fusion stay eager. ``state_dict`` keys do not change."""
        self.split.compile_stages(**options)

    def _size(self, grid: tuple[int, int]) -> tuple[int, int] | None:
        if self.config.scale_factor is not None:
            return None
        if self.config.size is None:
            return grid
        s = self.config.size
        return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))

    def thresholds(self, batch: int, device: torch.device, threshold: float | None = None) -> Tensor | float:
        """theta of the threshold and moments rules: ``threshold`` when given, else one draw per sample from
        ``threshold_range`` (Tensor[B]) in training and ``model.zoom.threshold`` at evaluation."""
        cfg = self.config
        if threshold is not None:
            return threshold
        if self.training and cfg.threshold_range is not None:
            lo, hi = cfg.threshold_range
            return torch.empty(batch, device=device).uniform_(lo, hi)
        return cfg.threshold

    def min_size(self) -> float:
        """The rule boxes' smallest side now: ``min_size``, or more during ``box_warmup`` (``self.progress``)."""
        cfg = self.config
        if cfg.box_warmup <= 0 or self.progress >= cfg.box_warmup:
            return cfg.min_size
        return cfg.min_size + (1.0 - cfg.min_size) * (1.0 - self.progress / cfg.box_warmup)

    def boxes(self, attention: Tensor, grid: tuple[int, int], crop_grid: tuple[int, int] | None = None,
              features: Tensor | None = None, maps: Tensor | None = None,
              threshold: float | None = None, min_size: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Boxes for the mean attention Tensor[B, h, w].

        Rule boxes are computed on ``grid`` (the image grid: the map resized to it) and mapped to
        ``crop_grid`` (the grid of the tensor cropped; default ``grid``); learned and ranked boxes come from
        ``features`` and ``maps``; glimpses are taken on ``crop_grid``. ``threshold``: see ``thresholds``;
        ``min_size``: the rule boxes' smallest side, a fraction of ``grid`` (None: ``self.min_size()``).

        Returns:
            (boxes on crop_grid, boxes on grid, degenerate), boxes Tensor[B, k, 4] (int64 for the slice sampler,
            float for the others) and degenerate Tensor[B, k] bool.
        """
        return self.choose_boxes(attention, grid, crop_grid, features, maps, threshold, min_size)[:3]

    def choose_boxes(self, attention: Tensor, grid: tuple[int, int], crop_grid: tuple[int, int] | None = None,
                     features: Tensor | None = None, maps: Tensor | None = None,
                     threshold: float | None = None, min_size: float | None = None) -> BoxChoice:
        """``boxes`` with, for ``box=ranked``, the candidates and their scores (``BoxChoice``)."""
        cfg = self.config
        crop_grid = crop_grid or grid
        b = attention.shape[0]
        offset = self.offset  # the attention's cells in the image grid
        if cfg.box == "glimpse":
            side = (max(1, round(cfg.glimpse_size * crop_grid[0])), max(1, round(cfg.glimpse_size * crop_grid[1])))
            boxes, degenerate = glimpse_boxes(resize_attention(attention, crop_grid, offset), side)
            boxes, degenerate = boxes[:, None], degenerate[:, None]
            boxes = boxes.float() if cfg.float_boxes else boxes
            # level=image takes the glimpse on the image grid itself
            on_image = boxes if crop_grid == grid else self._boxes_on_image(boxes, crop_grid, grid)
            return BoxChoice(boxes, on_image, degenerate)
        candidates = scores = None
        if cfg.box == "learned":
            boxes = self.learned_box(features, maps, grid, offset)  # [B, k, 4] on grid
            degenerate = torch.zeros(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
        elif cfg.box == "ranked":
            boxes, degenerate, candidates, scores = self._ranked_boxes(features, maps, grid)
        else:
            boxes, degenerate = region_boxes(
                resize_attention(attention, grid, offset), cfg.num_regions, rule=cfg.box,
                threshold=self.thresholds(b, attention.device, threshold), mass=cfg.mass, sigmas=cfg.sigmas,
                padding=cfg.padding, min_size=self.min_size() if min_size is None else min_size,
            )
        on_crop, on_image = self._on_crop(boxes, grid, crop_grid)
        return BoxChoice(on_crop, on_image, degenerate, candidates, scores)

    def _on_crop(self, boxes: Tensor, grid: tuple[int, int], crop_grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Float boxes Tensor[B, n, 4] on the image ``grid`` -> (what the sampler crops on ``crop_grid``: float, or
        whole cells for slice; the same region on ``grid``)."""
        on_crop = image_to_cells(boxes, grid, crop_grid, self.offset) if crop_grid != grid else boxes
        if self.config.float_boxes:
            return on_crop, boxes
        cells = round_boxes(on_crop.flatten(0, 1), crop_grid).view(boxes.shape[0], -1, 4)  # whole cells
        return cells, cells if crop_grid == grid else self._boxes_on_image(cells, crop_grid, grid)

    def _ranked_boxes(self, features: Tensor | None, maps: Tensor | None,
                      grid: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``box=ranked``: the candidates of ``maps`` Tensor[B, M, h, w] on ``grid`` (``attention_proposals``), their
        scores from ``features`` Tensor[B, C, h, w] (detached: the ranking loss trains the score head only) and
        the top k by score, best first. Returns (boxes Tensor[B, k, 4], degenerate Tensor[B, k], candidates
        Tensor[B, C, 4], scores Tensor[B, C])."""
        cfg = self.config
        if features is None or maps is None:
            raise ValueError("box=ranked scores its candidates on the stage features: pass features and maps")
        candidates, flat = attention_proposals(maps, grid, cfg.candidate_scales, cfg.candidates, cfg.candidate_iou,
                                               self.offset)  # [B, C, 4] on grid
        cells = tuple(features.shape[-2:])
        on_cells = candidates if cells == grid else image_to_cells(candidates, grid, cells, self.offset)
        scores = self.proposal_scorer(features.detach(), on_cells)  # [B, C]
        top = scores.detach().topk(cfg.num_regions, dim=1).indices  # [B, k], best first
        boxes = candidates.gather(1, top[..., None].expand(-1, -1, 4))
        return boxes, flat[:, None].expand(-1, cfg.num_regions).clone(), candidates, scores

    def _probe(self, x: Tensor, boxes: Tensor, grid: tuple[int, int], context: Tensor | None = None) -> Tensor:
        """The zoomed branch's logits Tensor[B, R, K] on ``boxes`` Tensor[B, R, 4] (on the grid of ``x``, as the
        sampler takes them) cropped out of ``x`` (``f`` at level=feature, the batch as loaded at level=image) at
        ``probe_size`` of the view size for ``grid``: no gradient, the zoom pass's layers in eval mode (their running
        zoom statistics read, not updated). The targets of the ranking loss."""
        cfg = self.config
        b, r = boxes.shape[:2]
        size = self.split.zoom_grid(cfg.level) or tuple(max(1, round(cfg.probe_size * s)) for s in self._size(grid))
        layers = self.split.tail_modules() if cfg.level == "feature" else [self.split]
        with torch.no_grad(), self.zoom_pass(), evaluating(layers):
            views = crop_views(x.detach().repeat_interleave(r, dim=0), boxes.flatten(0, 1), cfg, size,
                               check_boxes=False)
            if cfg.level == "feature":
                logits = self.split.forward_head(self.split.forward_from(views, context))
            else:
                logits = self.split(views)
        return logits.view(b, r, -1)

    def _probed(self, choice: BoxChoice) -> tuple[Tensor, Tensor]:
        """The R candidates of ``choice`` probed this step (``probe_order``): (indices Tensor[B, R], their scores
        Tensor[B, R] with gradient)."""
        index = probe_order(choice.scores, self.config.num_regions, self.config.probes)
        return index, choice.scores.gather(1, index)

    def _boxes_on_image(self, boxes: Tensor, cells: tuple[int, int], grid: tuple[int, int]) -> Tensor:
        """Boxes Tensor[B, k, 4] on the feature grid ``cells`` -> the image region on ``grid`` they cover: exact
        integers (``scale_boxes``) for integer boxes with offset 0, else float (``cell_geometry.cells_to_image``)."""
        if boxes.is_floating_point() or not is_zero_offset(self.offset):
            return cells_to_image(boxes, cells, grid, self.offset)
        return scale_boxes(boxes.flatten(0, 1), cells, grid).view_as(boxes)

    def zoom(self, x: Tensor, boxes: Tensor, grid: tuple[int, int]) -> Tensor:
        """Crop ``boxes`` Tensor[B, k, 4] (from ``self.boxes``, valid by construction) out of ``x`` Tensor[B, ...]
        and resize them to ``grid`` (or ``model.zoom.size`` / ``scale_factor``). Returns Tensor[B*k, ...],
        sample-major (the k views of sample 0 first).

        The boxes are not checked again, so with ``size`` nothing is read back to the host (no CUDA sync);
        with ``scale_factor`` crop_resize reads the common box size once (the output size depends on it).
        """
        k = boxes.shape[1]
        if k > 1:
            x = x.repeat_interleave(k, dim=0)
        return crop_views(x, boxes.flatten(0, 1), self.config, self._size(grid), check_boxes=False)

    def zoom_pass(self):
        """Context of the zoomed views' pass: their own BatchNorm statistics (``model.zoom.norm_stats``)."""
        return self.branch_stats.zoom() if self.branch_stats is not None else nullcontext()

    def _drop(self, maps: Tensor, grid: tuple[int, int]) -> Tensor:
        """Keep-mask Tensor[B, 1, *grid]: zero where one random map per sample is above drop_threshold."""
        b, m = maps.shape[:2]
        pick = torch.randint(m, (b,), device=maps.device)
        chosen = maps.detach()[torch.arange(b, device=maps.device), pick]  # [B, h, w]
        norm, _ = normalize_attention(resize_attention(chosen, grid, self.offset))
        return (norm < self.config.drop_threshold).to(maps.dtype)[:, None]

    def _zoom_feature(self, source: Tensor, f: Tensor, context: Tensor | None, mean_map: Tensor, maps: Tensor,
                      threshold: float | None) -> ZoomedViews:
        """level=feature: crop the boxes out of ``f`` Tensor[B, C, h, w], resize them to h x w and run the tail of
        the split on them."""
        grid, source_grid = tuple(f.shape[-2:]), tuple(source.shape[-2:])
        choice = self.choose_boxes(mean_map, source_grid, grid, f, maps, threshold)
        zoomed = self.zoom(f, choice.boxes, grid)
        with self.zoom_pass():
            logits = self.split.forward_head(self.split.forward_from(zoomed, context))
        extra = self._ranked_outputs(choice, source_grid, grid, f, grid, context)
        return ZoomedViews(choice.boxes, choice.boxes_image, choice.degenerate, logits, zoomed, extra)

    def _zoom_image(self, source: Tensor, x: Tensor, f: Tensor, mean_map: Tensor, maps: Tensor,
                    threshold: float | None) -> ZoomedViews:
        """level=image: crop the boxes out of the batch as loaded (``source`` Tensor[B, 3, H, W]), resize them to
        the backbone's view ``x`` and run the whole backbone on them."""
        grid, view_grid = tuple(source.shape[-2:]), tuple(x.shape[-2:])
        choice = self.choose_boxes(mean_map, grid, grid, f, maps, threshold)
        zoomed = self.zoom(source, choice.boxes, view_grid)
        with self.zoom_pass():
            logits = self.split(zoomed)
        extra = self._ranked_outputs(choice, grid, grid, source, view_grid)
        return ZoomedViews(choice.boxes, choice.boxes_image, choice.degenerate, logits, zoomed, extra)

    def _ranked_outputs(self, choice: BoxChoice, source_grid: tuple[int, int], crop_grid: tuple[int, int],
                        probe_input: Tensor, view_grid: tuple[int, int],
                        context: Tensor | None = None) -> dict[str, Tensor]:
        """box=ranked, one zoom step: the candidates and scores, and in training the probed candidates' scores
        ``rank_scores`` Tensor[B, 1, R] with the zoomed branch's logits on them ``rank_logits`` Tensor[B, 1, R, K]
        (cropped out of ``probe_input`` on ``crop_grid``); {} for the other rules."""
        if choice.scores is None:
            return {}
        extra = self._candidate_outputs(choice)
        if self.training:
            index, scores = self._probed(choice)
            on_crop, _ = self._on_crop(_pick(choice.candidates, index), source_grid, crop_grid)
            logits = self._probe(probe_input, on_crop, view_grid, context)
            extra.update(rank_scores=scores[:, None], rank_logits=logits[:, None])
        return extra

    @staticmethod
    def _candidate_outputs(choice: BoxChoice) -> dict[str, Tensor]:
        return {"candidates": choice.candidates, "candidate_scores": choice.scores.detach()}

    def _zoom_recursive(self, source: Tensor, x: Tensor, f: Tensor, mean_map: Tensor, maps: Tensor,
                        threshold: float | None) -> ZoomedViews:
        """The recursive zoom (``steps`` = n > 1, level=image): crop the first box from ``source`` Tensor[B, 3, H,
        W], classify the view and (but at the last step) box the view's attention (the same head, with the rule,
        theta and padding of the first step), nest that box in the one cropped, grow it to ``min_size`` of the
        source frame, crop again; n views in all.

        Returns the last boxes Tensor[B, 1, 4] on the source grid, degenerate Tensor[B, 1] (any step's map was
        flat), logits Tensor[B, n, K] per step, the last view, and ``{boxes_steps Tensor[B, n, 4],
        logits_attention_views Tensor[B, n - 1, K]}``.
        """
        cfg = self.config
        source_grid, view_grid = tuple(source.shape[-2:]), tuple(x.shape[-2:])
        choice = self.choose_boxes(mean_map, source_grid, source_grid, f, maps, threshold)
        boxes, degenerate = choice.boxes, choice.degenerate
        steps_boxes, logits, logits_attention = [boxes[:, 0]], [], []
        ranked = choice.scores is not None
        rank_scores, rank_logits = [], []
        if ranked and self.training:
            index, scores = self._probed(choice)
            rank_scores.append(scores)
            rank_logits.append(self._probe(source, _pick(choice.candidates, index), view_grid))
        for step in range(cfg.steps):
            zoomed = self.zoom(source, boxes, view_grid)
            with self.zoom_pass():
                if step == cfg.steps - 1:
                    logits.append(self.split(zoomed))
                    break
                f, context = self.split.forward_to(zoomed)
                logits.append(self.split.forward_head(self.split.forward_from(f, context)))
                maps, view_logits_attention, _ = self.attention(f)
            logits_attention.append(view_logits_attention)
            # min_size applies on the source frame below, not to the view (a fraction of each view would compound)
            inner = self.choose_boxes(maps.detach().float().mean(dim=1), view_grid, features=f, maps=maps,
                                      threshold=threshold, min_size=0.0)
            if ranked and self.training:  # the view's candidates, nested in the source as they would be cropped
                index, scores = self._probed(inner)
                nested = self._nest(boxes, _pick(inner.candidates, index), view_grid, source_grid)
                rank_scores.append(scores)
                rank_logits.append(self._probe(source, nested, view_grid))
            boxes = self._nest(boxes, inner.boxes, view_grid, source_grid)
            steps_boxes.append(boxes[:, 0])
            degenerate = degenerate | inner.degenerate
        extra = {"boxes_steps": torch.stack(steps_boxes, dim=1),
                 "logits_attention_views": torch.stack(logits_attention, dim=1)}
        if ranked:
            extra.update(self._candidate_outputs(choice))
            if rank_scores:
                extra.update(rank_scores=torch.stack(rank_scores, dim=1), rank_logits=torch.stack(rank_logits, dim=1))
        return ZoomedViews(boxes, boxes, degenerate, torch.stack(logits, dim=1), zoomed, extra)

    def _nest(self, outer: Tensor, inner: Tensor, view_grid: tuple[int, int], source_grid: tuple[int, int]) -> Tensor:
        """Boxes Tensor[B, n, 4] on the view of ``outer`` Tensor[B, 1, 4] (``view_grid``) -> on the source grid,
        grown to ``min_size`` of the source frame (the recursive zoom's next boxes)."""
        b, n = inner.shape[:2]
        nested = nest_boxes(outer.expand(-1, n, -1).flatten(0, 1), inner.flatten(0, 1), view_grid)
        return grow_boxes(nested, source_grid, 0.0, self.min_size()).view(b, n, 4)

    def _drop_logits(self, x: Tensor, f: Tensor, context: Tensor | None, maps: Tensor) -> Tensor:
        """Attention dropping (training): the logits Tensor[B, K] of the input with one random map's peak
        erased, from ``f`` (level=feature) or from the backbone's view ``x`` (level=image)."""
        if self.config.level == "feature":
            keep = self._drop(maps, tuple(f.shape[-2:]))
            return self.split.forward_head(self.split.forward_from(f * keep, context))
        return self.split(x * self._drop(maps, tuple(x.shape[-2:])))

    def forward(self, x: Tensor, threshold: float | None = None, return_zoomed: bool = False) -> dict[str, Tensor]:
        cfg = self.config
        source, x = x, self.view(x)  # the batch as loaded, the backbone's view of it
        f, context = self.split.forward_to(x)  # [B, C, h, w]; context: a ViT's prefix tokens (None for CNNs)
        if cfg.attention == "cls":  # the last block's class-token attention, read in the full-image pass
            features, maps = self.split.forward_from_attention(f, context)
            logits_attention = part_features = None
        else:
            features = self.split.forward_from(f, context)
            maps, logits_attention, part_features = self.attention(f)
        logits_raw = self.split.forward_head(features)
        mean_map = maps.detach().float().mean(dim=1)  # [B, h, w]
        out: dict[str, Tensor] = {"logits_raw": logits_raw}
        if cfg.crop:
            out.update(self._zoom_outputs(source, x, f, context, mean_map, maps, logits_raw, threshold, return_zoomed))
        else:  # model=bap: no zoomed view; the boxes only where something reads them (metrics, predictions)
            out["logits"] = logits_raw.float().log_softmax(-1)  # as fusion=raw gives it
            if not self.training:
                grid = tuple(source.shape[-2:])
                crop_grid = tuple(f.shape[-2:]) if cfg.level == "feature" else grid  # the zoom's grid at this level
                boxes, boxes_image, degenerate = self.boxes(mean_map, grid, crop_grid, f, maps, threshold)
                out.update(self._box_outputs(boxes, boxes_image, degenerate))
        if self.training and self.attention_drop:
            out["logits_drop"] = self._drop_logits(x, f, context, maps)
        out["attention"] = normalize_attention(mean_map)[0]
        if logits_attention is not None:
            out["logits_attention"] = logits_attention
            out["part_features"] = part_features
        return out

    @staticmethod
    def _box_outputs(boxes: Tensor, boxes_image: Tensor, degenerate: Tensor) -> dict[str, Tensor]:
        """``boxes``, ``boxes_image`` Tensor[B, k, 4] and ``degenerate`` Tensor[B, k] as outputs: Tensor[B, 4] and
        Tensor[B] for k = 1."""
        if boxes.shape[1] == 1:
            boxes, boxes_image, degenerate = boxes[:, 0], boxes_image[:, 0], degenerate[:, 0]
        return {"boxes": boxes, "boxes_image": boxes_image, "degenerate": degenerate}

    def _zoom_outputs(self, source: Tensor, x: Tensor, f: Tensor, context: Tensor | None, mean_map: Tensor,
                      maps: Tensor, logits_raw: Tensor, threshold: float | None,
                      return_zoomed: bool) -> dict[str, Tensor]:
        """The zoomed views' outputs (``crop=true``): boxes, the zoomed branch's logits and the fused ``logits``."""
        cfg = self.config
        if cfg.level == "feature":
            views = self._zoom_feature(source, f, context, mean_map, maps, threshold)
        elif cfg.steps > 1:
            views = self._zoom_recursive(source, x, f, mean_map, maps, threshold)
        else:
            views = self._zoom_image(source, x, f, mean_map, maps, threshold)
        out = {**views.extra, **self._box_outputs(views.boxes, views.boxes_image, views.degenerate)}
        logits_views = views.logits
        k = views.boxes.shape[1]
        if k > 1:
            logits_views = logits_views.view(-1, k, logits_views.shape[-1])  # [B, k, K]
        if logits_views.dim() == 3:  # several views per sample: k regions or n steps
            out["logits_views"] = logits_views
            logits_zoom = mean_prob_log(logits_views)
        else:
            logits_zoom = logits_views
        out.update(logits=fuse(logits_raw, logits_zoom, cfg.fusion), logits_zoom=logits_zoom)
        if return_zoomed:
            out["zoomed"] = views.zoomed
        return out
