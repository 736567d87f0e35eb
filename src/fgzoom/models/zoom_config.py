"""The zoom model's settings (``model.zoom.*``), checked once when the config is built: every value, and the
combinations a level, box rule or sampler does not take, each refused in one line naming the key."""

from __future__ import annotations

from dataclasses import dataclass

from fgzoom.errors import InvalidSettingError
from fgzoom.models.attention import ATTENTION_KINDS
from fgzoom.ops.attention_boxes import RULES as RULE_BOXES
from fgzoom.ops.crop_affine import AFFINE_MODES
from fgzoom.ops.interpolation import check_interpolation

LEVELS = ("feature", "image")
BOX_RULES = (*RULE_BOXES, "glimpse", "learned", "ranked")
SAMPLERS = ("continuous", "slice", "grid_sample")
SAMPLER_ALIASES = {"affine": "grid_sample"}  # the grid_sample sampler's name before the continuous one came
CONTINUOUS_SAMPLERS = ("continuous", "grid_sample")  # float boxes, differentiable in the box
FUSIONS = ("mean_prob", "mean_logit", "raw", "zoom")
NORM_STATS = ("branch", "shared")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ZoomConfig:
    """``model.zoom.*``. Validated on construction; every error names the key and the allowed values.

    Attributes:
        level: ``feature`` crops stage-k feature maps; ``image`` crops the input image.
        stage: index into the backbone's timm ``feature_info`` (negative from the end).
        mode, align_corners, antialias: how the crop is upsampled (``F.interpolate`` semantics).
        size: output size of the zoomed view (int or [h, w]); None = the size of the cropped tensor.
        scale_factor: zoom by a fixed factor instead of to a size (glimpse boxes only).
        recompute_scale_factor: passed to ``F.interpolate`` with ``scale_factor``.
        sampler: ``continuous`` (default: the float box through ``crop_resize``, ``F.interpolate``'s rule
            with the box's real start and length; every mode and knob), ``slice`` (the box rounded outward
            to whole cells, exact ``F.interpolate`` of the slice) or ``grid_sample`` (the float box through
            ``F.affine_grid`` + ``F.grid_sample``; nearest, bilinear, bicubic, no antialias; ``affine`` is its
            old name and still accepted).
        box: ``threshold`` (extent of attention >= theta of its range), ``mass`` (per axis the shortest run
            holding ``mass`` of the attention), ``moments`` (centre +- ``sigmas`` std of the attention above
            theta), ``glimpse`` (fixed-size box at the peak, on the cropped grid), ``learned``
            (``LearnedBox``, needs a sampler differentiable in the box: continuous or grid_sample) or ``ranked``
            (``fgzoom.models.ranked_box``: ``candidates`` boxes at the attention's peaks, the top
            ``num_regions`` by a score head trained to rank them as the zoomed branch does).
        threshold: theta at evaluation (threshold, moments); threshold_range: [lo, hi] theta drawn per sample
            in training (null = always ``threshold``).
        mass: fraction of the attention the ``mass`` box holds per axis.
        sigmas: half side of a ``moments`` box in weighted standard deviations.
        padding: grow rule boxes by this fraction of their side on each side.
        min_size: smallest rule box side, as a fraction of the frame.
        box_warmup: fraction of training over which the rule boxes' smallest side shrinks linearly from the
            whole frame to ``min_size`` (the zoom starts as a second view of the whole frame while the attention
            learns where the parts are); 0 = tight boxes from the first step.
        glimpse_size: glimpse box side as a fraction of the frame.
        min_scale, max_scale: range of a learned box's side, fractions of the frame.
        rank_margin: margin of the ranking loss (``model.loss.rank`` weighs it): of learned boxes, in
            probability; of ranked boxes, in score units.
        num_regions: k regions per sample (greedy suppression for rules, k map groups for learned, the k best
            scores for ranked).
        candidates: C, candidate boxes per sample of ``box=ranked`` (``attention_proposals``).
        candidate_scales: their sides, fractions of the frame side (each peak gets one box per scale).
        candidate_iou: the candidates' non-maximum suppression: kept ones overlap by at most this IoU.
        probes: R, candidates per sample whose zoomed view is classified (no gradient) in training to give the
            ranking loss its targets: the top ``num_regions`` by score, then random others.
        probe_size: side of those views as a fraction of the zoomed view's (the cost of the targets: R *
            probe_size^2 extra views; a backbone that needs a fixed view size probes at that size).
        attention: ``head`` (learned, WS-DAN/BAP) or ``channel_sum`` (MMAL).
        num_maps: M, attention maps of the learned head.
        drop_threshold: attention-drop augmentation masks the region above this (used when
            ``model.loss.drop`` > 0).
        fusion: ``mean_prob`` (default), ``mean_logit``, or one branch (``raw``/``zoom``).
        norm_stats: ``branch`` (default): the zoom pass keeps its own BatchNorm running statistics
            (``fgzoom.models.branch_norm``); ``shared``: both passes update one set, as WS-DAN's code does.
        steps: zoom steps (level=image, rule or ranked boxes, one region): step s > 1 computes the attention of
            step s - 1's view (the same head, with BatchNorm statistics of the zoomed views), takes the rule box
            (ranked: the best-scored candidate) inside it and crops that from the loaded batch (RA-CNN's
            recursion); every step's box is at least
            ``min_size`` of the frame; the zoomed branch is the mean of the steps' probabilities.
        cell_offset: where each feature cell sits in the image, in cells (``fgzoom.ops.cell_geometry``):
            ``measured`` (default: read off the backbone when the model is built and kept in its checkpoint),
            a number, or ``[dy, dx]``; 0 is the plain resize rule (cell i centred at ``(i + 0.5) * H / h``).
        crop: ``true`` (default) runs the zoomed view; ``false`` runs none (``model=bap``, the control that
            separates the attention head from the crop): the attention head, its BAP classifier and their
            losses train the backbone, the prediction is the raw branch's (needs ``fusion=raw``), and the boxes
            are still computed at evaluation for the localization metrics (rule or glimpse boxes, one step).
    """

    level: str = "feature"
    stage: int = -2
    mode: str = "bilinear"
    align_corners: bool | None = None
    antialias: bool = False
    size: int | tuple[int, int] | None = None
    scale_factor: float | None = None
    recompute_scale_factor: bool | None = None
    sampler: str = "continuous"
    box: str = "moments"
    threshold: float = 0.5
    threshold_range: tuple[float, float] | None = (0.4, 0.6)
    mass: float = 0.5
    sigmas: float = 1.0
    padding: float = 0.0
    min_size: float = 0.15
    box_warmup: float = 0.25
    glimpse_size: float = 0.5
    min_scale: float = 0.1
    max_scale: float = 0.9
    rank_margin: float = 0.05
    num_regions: int = 1
    attention: str = "head"
    num_maps: int = 8
    drop_threshold: float = 0.5
    fusion: str = "mean_prob"
    norm_stats: str = "branch"
    steps: int = 1
    candidates: int = 12
    candidate_scales: tuple[float, ...] = (0.15, 0.25, 0.4, 0.6)
    candidate_iou: float = 0.5
    probes: int = 4
    probe_size: float = 0.5
    cell_offset: str | float | tuple[float, float] = "measured"
    crop: bool = True

    def __post_init__(self) -> None:
        for key in ("threshold_range", "size", "cell_offset", "candidate_scales"):  # a config file's lists, as the hashable tuples of the fields
            if isinstance(getattr(self, key), list):
                object.__setattr__(self, key, tuple(getattr(self, key)))
        # checkpoints and configs written before the continuous sampler name grid_sample "affine"
        object.__setattr__(self, "sampler", SAMPLER_ALIASES.get(self.sampler, self.sampler))

        def bad(key: str, value, allowed: str) -> InvalidSettingError:
            return InvalidSettingError(f"model.zoom.{key}={value!r}: {allowed}")

        if self.level not in LEVELS:
            raise bad("level", self.level, f"must be one of {LEVELS}")
        try:
            check_interpolation(self.mode, self.align_corners, self.antialias, prefix="model.zoom.")
        except ValueError as e:
            raise InvalidSettingError(str(e)) from None
        if self.box not in BOX_RULES:
            raise bad("box", self.box, f"must be one of {BOX_RULES}")
        if self.sampler not in SAMPLERS:
            raise bad("sampler", self.sampler, f"must be one of {SAMPLERS}")
        if self.sampler == "grid_sample":
            if self.mode not in AFFINE_MODES:
                raise bad("mode", self.mode, f"sampler=grid_sample takes one of {AFFINE_MODES}; every mode works "
                          "with model.zoom.sampler=continuous (the default)")
            if self.antialias:
                raise bad("antialias", self.antialias, "sampler=grid_sample does not antialias; use "
                          "model.zoom.sampler=continuous (the default) or antialias=false")
        if self.box == "learned":
            if self.sampler not in CONTINUOUS_SAMPLERS or self.mode in ("nearest", "nearest-exact"):
                raise bad("box", self.box, "learned boxes train through the sampler: need model.zoom.sampler="
                          "continuous or grid_sample and a mode other than nearest/nearest-exact")
            if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
                raise bad("min_scale", [self.min_scale, self.max_scale], "need 0 < min_scale <= max_scale <= 1")
            if self.num_regions > (self.num_maps if self.attention == "head" else 1):
                raise bad("num_regions", self.num_regions, "learned boxes take one group of attention maps per "
                          "region: need num_regions <= model.zoom.num_maps (attention=head)")
        if self.num_regions < 1:
            raise bad("num_regions", self.num_regions, "must be >= 1")
        if self.num_regions > 1 and self.box == "glimpse":
            raise bad("num_regions", self.num_regions, "box=glimpse takes one region; use box=threshold, mass, "
                      "moments or learned for several")
        if not 0.0 < self.mass <= 1.0:
            raise bad("mass", self.mass, "must be in (0, 1]")
        if self.sigmas <= 0:
            raise bad("sigmas", self.sigmas, "must be > 0")
        if self.rank_margin < 0:
            raise bad("rank_margin", self.rank_margin, "must be >= 0")
        if not 0.0 <= self.threshold < 1.0:
            raise bad("threshold", self.threshold, "must be in [0, 1)")
        if self.threshold_range is not None:
            lo, hi = self.threshold_range
            if not 0.0 <= lo <= hi < 1.0:
                raise bad("threshold_range", list(self.threshold_range), "need 0 <= lo <= hi < 1, or null")
        if not 0.0 <= self.padding <= 1.0:
            raise bad("padding", self.padding, "must be in [0, 1] (fraction of the box side)")
        if not 0.0 <= self.box_warmup <= 1.0:
            raise bad("box_warmup", self.box_warmup, "must be in [0, 1] (fraction of training)")
        if not 0.0 <= self.min_size <= 1.0:
            raise bad("min_size", self.min_size, "must be in [0, 1] (fraction of the frame side)")
        if not 0.0 < self.glimpse_size <= 1.0:
            raise bad("glimpse_size", self.glimpse_size, "must be in (0, 1]")
        if self.size is not None and self.scale_factor is not None:
            raise bad("scale_factor", self.scale_factor, "set either model.zoom.size or model.zoom.scale_factor, not both")
        if self.scale_factor is not None:
            if self.box != "glimpse" or self.sampler == "grid_sample":
                raise bad("scale_factor", self.scale_factor,
                          "needs model.zoom.box=glimpse and model.zoom.sampler=continuous or slice (other boxes differ "
                          "in size, so the output size would differ per sample); use model.zoom.size instead")
            if self.scale_factor <= 0:
                raise bad("scale_factor", self.scale_factor, "must be > 0")
        if self.size is not None:
            sizes = [self.size] if isinstance(self.size, int) else list(self.size)
            if len(sizes) not in (1, 2) or any(int(s) < 1 for s in sizes):
                raise bad("size", self.size, "must be a positive int or [h, w]")
        if self.attention not in ATTENTION_KINDS:
            raise bad("attention", self.attention, f"must be one of {ATTENTION_KINDS}")
        if self.num_maps < 1:
            raise bad("num_maps", self.num_maps, "must be >= 1")
        if not 0.0 < self.drop_threshold < 1.0:
            raise bad("drop_threshold", self.drop_threshold, "must be in (0, 1)")
        if self.fusion not in FUSIONS:
            raise bad("fusion", self.fusion, f"must be one of {FUSIONS}")
        if not isinstance(self.crop, bool):
            raise bad("crop", self.crop, "must be true (the zoom model) or false (no zoomed view: model=bap)")
        if not self.crop:
            if self.fusion != "raw":
                raise bad("fusion", self.fusion, "model.zoom.crop=false predicts from the raw branch: needs "
                          "fusion=raw (model=bap sets it)")
            if self.box in ("learned", "ranked") or self.steps > 1:
                key, value = ("box", self.box) if self.box in ("learned", "ranked") else ("steps", self.steps)
                raise bad(key, value, "model.zoom.crop=false runs no zoomed view, which learned and ranked boxes "
                          "and a recursive zoom train through: use a rule box or glimpse and steps=1")
        if self.norm_stats not in NORM_STATS:
            raise bad("norm_stats", self.norm_stats, f"must be one of {NORM_STATS}")
        if self.steps < 1:
            raise bad("steps", self.steps, "must be >= 1")
        if not _is_int(self.candidates) or self.candidates < 1:
            raise bad("candidates", self.candidates, "must be an int >= 1")
        scales = self.candidate_scales
        if not isinstance(scales, tuple) or not scales or not all(
                _is_number(s) and 0.0 < s <= 1.0 for s in scales):
            raise bad("candidate_scales", scales, "must be a non-empty list of numbers in (0, 1] (fractions of "
                      "the frame side)")
        if not _is_number(self.candidate_iou) or not 0.0 < self.candidate_iou <= 1.0:
            raise bad("candidate_iou", self.candidate_iou, "must be in (0, 1]")
        # the ranking loss compares pairs of the probed candidates
        upper = self.candidates if self.box == "ranked" else None
        if not _is_int(self.probes) or self.probes < 2 or (upper is not None and self.probes > upper):
            raise bad("probes", self.probes, "must be an int >= 2" if upper is None else
                      f"must be an int in [2, model.zoom.candidates={upper}] (the ranking loss compares pairs)")
        if not _is_number(self.probe_size) or not 0.0 < self.probe_size <= 1.0:
            raise bad("probe_size", self.probe_size, "must be in (0, 1] (fraction of the zoomed view's side)")
        if self.box == "ranked" and self.num_regions > self.candidates:
            raise bad("num_regions", self.num_regions, f"box=ranked zooms the best num_regions of "
                      f"model.zoom.candidates={self.candidates} candidates: need num_regions <= candidates")
        if self.cell_offset != "measured":
            pair = self.cell_offset if isinstance(self.cell_offset, tuple) else (self.cell_offset, self.cell_offset)
            if (len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
                    or not all(abs(v) <= 0.5 for v in pair)):
                raise bad("cell_offset", self.cell_offset, "must be measured, a number in [-0.5, 0.5] or [dy, dx] of "
                          "such numbers (cells; 0 = the plain resize rule)")
        if self.steps > 1 and (self.level != "image" or self.box not in (*RULE_BOXES, "ranked")
                               or self.sampler not in CONTINUOUS_SAMPLERS or self.num_regions != 1
                               or self.attention != "head"):
            raise bad("steps", self.steps, "a recursive zoom needs model.zoom.level=image, a rule box or ranked "
                      f"boxes (model.zoom.box one of {(*RULE_BOXES, 'ranked')}), model.zoom.sampler=continuous or grid_sample, "
                      "model.zoom.num_regions=1 and model.zoom.attention=head")

    @property
    def fixed_cell_offset(self) -> tuple[float, float] | None:
        """``cell_offset`` as ``(dy, dx)`` when given as numbers; None when it is ``measured``."""
        if self.cell_offset == "measured":
            return None
        pair = self.cell_offset if isinstance(self.cell_offset, tuple) else (self.cell_offset, self.cell_offset)
        return float(pair[0]), float(pair[1])

    @property
    def float_boxes(self) -> bool:
        """Whether the sampler takes continuous (float) boxes; ``slice`` takes whole cells (int64)."""
        return self.sampler in CONTINUOUS_SAMPLERS
