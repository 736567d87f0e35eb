"""crop_resize against the per-sample F.interpolate loop it replaces (values, gradients, errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fgzoom.ops import crop_resize, resize_kernels
from fgzoom.ops.crop_resize import MODES
from fgzoom.ops.interpolation import resize_spec
from fgzoom.ops.resize_cost import choose_method
from tests.helpers import forbid_host_reads

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ALIGN_MODES = ("bilinear", "bicubic")


def expected_fn(x, boxes, **kwargs):
    """The slow, obviously-correct reference: one F.interpolate per box."""
    crops = [x[i : i + 1, :, y0:y1, x0:x1] for i, (y0, x0, y1, x1) in enumerate(boxes.tolist())]
    return torch.cat([F.interpolate(c, **kwargs) for c in crops])


def mode_knobs():
    """Every valid (mode, align_corners, antialias) combination."""
    out = []
    for mode in MODES:
        if mode == "lanczos":
            out += [(mode, None, True), (mode, False, True)]
        elif mode in ALIGN_MODES:
            out += [(mode, ac, aa) for ac in (None, False, True) for aa in (False, True)]
        else:
            out.append((mode, None, False))
    return out


def methods_for(mode):
    return ["auto", "dense", "taps", "loop"] + (["gather"] if mode.startswith("nearest") else [])


def make_boxes(batch, height, width, seed=0):
    """Random int64 boxes plus the edge cases: full frame, 1 pixel tall, 1 pixel wide, 1x1 in the corner."""
    g = torch.Generator().manual_seed(seed)
    rows = [
        (0, 0, height, width),
        (min(3, height - 1), min(2, width - 1), min(4, height), width),
        (0, min(5, width - 1), height, min(6, width)),
        (height - 1, width - 1, height, width),
    ]
    while len(rows) < batch:
        y0, y1 = sorted(torch.randint(0, height + 1, (2,), generator=g).tolist())
        x0, x1 = sorted(torch.randint(0, width + 1, (2,), generator=g).tolist())
        if y1 > y0 and x1 > x0:
            rows.append((y0, x0, y1, x1))
    return torch.tensor(rows[:batch], dtype=torch.int64)


def knob_id(p):
    return "-".join(map(str, p))


@pytest.fixture(scope="module")
def frame64():
    g = torch.Generator().manual_seed(1)
    return torch.randn(7, 3, 11, 13, generator=g, dtype=torch.float64), make_boxes(7, 11, 13)


@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
def test_matches_loop_float64_every_method(frame64, knobs):
    mode, align_corners, antialias = knobs
    x, boxes = frame64
    # int size, down/up-sampling tuples, and 1-pixel outputs.
    sizes = [5, (17, 23), (4, 6), (1, 4), (3, 1), 1]
    if antialias:
        sizes = [s for s in sizes if s != 1 and not (isinstance(s, tuple) and s[1] == 1)]  # see AA test below
    for size in sizes:
        kwargs = dict(size=size, mode=mode, align_corners=align_corners, antialias=antialias)
        expected = expected_fn(x, boxes, **kwargs)
        for method in methods_for(mode):
            got = crop_resize(x, boxes, method=method, **kwargs)
            assert got.shape == expected.shape and got.dtype == x.dtype
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=f"{size=} {method=}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
def test_matches_loop_float32(device, knobs):
    mode, align_corners, antialias = knobs
    if mode == "lanczos" and device != "cpu":
        pytest.skip("F.interpolate has no lanczos on CUDA, so there is no reference")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 4, 20, 17, generator=g).to(device)
    boxes = make_boxes(9, 20, 17, seed=3).to(device)
    for size in [(20, 17), 9, (31, 12)]:
        kwargs = dict(size=size, mode=mode, align_corners=align_corners, antialias=antialias)
        expected = expected_fn(x, boxes, **kwargs)
        for method in methods_for(mode):
            got = crop_resize(x, boxes, method=method, **kwargs)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=f"{size=} {method=}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("knobs", [("nearest", None, False), ("bilinear", False, False),
                                   ("bicubic", True, False), ("area", None, False),
                                   ("bilinear", None, True)], ids=knob_id)  # fmt: skip
def test_matches_loop_half(dtype, knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 3, 12, 10, generator=g).to(dtype)
    boxes = make_boxes(6, 12, 10, seed=5)
    kwargs = dict(size=(9, 14), mode=mode, align_corners=align_corners, antialias=antialias)
    methods = methods_for(mode)
    try:
        expected = expected_fn(x, boxes, **kwargs)
    except (RuntimeError, NotImplementedError):  # no half kernel here (CPU antialias): fp32, then round
        expected = expected_fn(x.float(), boxes, **kwargs).to(dtype)
        methods.remove("loop")  # crop_resize does not need that kernel, but the loop does
    for method in methods:
        got = crop_resize(x, boxes, method=method, **kwargs)
        assert got.dtype == dtype
        # Our sums run in fp32 and round once; the loop may round in between: allow a couple of ulps.
        torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2, msg=method)


@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
def test_scale_factor_equal_size_boxes(knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 2, 12, 12, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 7, 5], [2, 3, 9, 8], [5, 7, 12, 12], [1, 1, 8, 6]])
    for scale_factor in [0.5, 1.7, (2.0, 0.75), (0.3, 3.1), 1]:
        for recompute in (None, False, True):
            kwargs = dict(
                scale_factor=scale_factor,
                mode=mode,
                align_corners=align_corners,
                antialias=antialias,
                recompute_scale_factor=recompute,
            )
            expected = expected_fn(x, boxes, **kwargs)
            for method in methods_for(mode):
                got = crop_resize(x, boxes, method=method, **kwargs)
                torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=f"{kwargs} {method=}")


@pytest.mark.parametrize("layout", ["channels_last", "strided", "transposed"])
@pytest.mark.parametrize("knobs", [("nearest", None, False), ("nearest-exact", None, False),
                                   ("bilinear", False, False), ("bicubic", False, True),
                                   ("area", None, False)], ids=knob_id)  # fmt: skip
def test_non_contiguous_input(layout, knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(7)
    base = torch.randn(5, 6, 14, 26, generator=g)
    if layout == "channels_last":
        x = base[:, :, :, :13].contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = base[:, ::2, :, ::2]  # [5, 3, 14, 13], every stride odd
    else:
        x = base[:, :, :, :14].transpose(2, 3)  # [5, 6, 14, 14] with swapped strides
    boxes = make_boxes(5, x.shape[2], x.shape[3], seed=8)
    kwargs = dict(size=(10, 15), mode=mode, align_corners=align_corners, antialias=antialias)
    expected = expected_fn(x, boxes, **kwargs)
    for method in methods_for(mode):
        got = crop_resize(x, boxes, method=method, **kwargs)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5, msg=method)
        if layout == "channels_last":
            assert got.is_contiguous(memory_format=torch.channels_last), method


@pytest.mark.parametrize("knobs", mode_knobs(), ids=knob_id)
def test_gradients_match_loop(knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(9)
    x = torch.randn(5, 2, 9, 11, generator=g, dtype=torch.float64)
    boxes = make_boxes(5, 9, 11, seed=10)
    grad_out = torch.randn(5, 2, 7, 12, generator=g, dtype=torch.float64)
    kwargs = dict(size=(7, 12), mode=mode, align_corners=align_corners, antialias=antialias)
    xr = x.clone().requires_grad_(True)
    expected_fn(xr, boxes, **kwargs).backward(grad_out)
    for method in methods_for(mode):
        xm = x.clone().requires_grad_(True)
        crop_resize(xm, boxes, method=method, **kwargs).backward(grad_out)
        torch.testing.assert_close(xm.grad, xr.grad, rtol=0, atol=1e-12, msg=method)


GRADCHECK_CASES = [
    ("gather", ("nearest", None, False)),
    ("dense", ("nearest-exact", None, False)),
    ("dense", ("bilinear", True, False)),
    ("taps", ("bilinear", True, False)),
    ("dense", ("bicubic", False, True)),
    ("taps", ("bicubic", False, True)),
    ("dense", ("area", None, False)),
]


@pytest.mark.parametrize(
    ("method", "knobs"), GRADCHECK_CASES, ids=[f"{m}-{knob_id(k)}" for m, k in GRADCHECK_CASES]
)
def test_gradcheck(method, knobs):
    mode, align_corners, antialias = knobs
    x = torch.randn(3, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 0, 6, 5], [1, 2, 4, 3], [5, 0, 6, 5]])

    def fn(t):
        return crop_resize(
            t, boxes, size=(4, 7), mode=mode, align_corners=align_corners, antialias=antialias, method=method
        )

    assert torch.autograd.gradcheck(fn, (x,))


def test_antialias_output_width_one_is_correct():
    """PyTorch's CPU antialias kernel repeats the first row when the output width is 1; we do not."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, 3, 12, 9, generator=g, dtype=torch.float64)
    boxes = make_boxes(4, 12, 9, seed=12)
    for mode in ("bilinear", "bicubic", "lanczos"):
        kwargs = dict(size=(5, 1), mode=mode, antialias=True)
        # Same resize done on the transposed crops (output height 1) is unaffected by the bug.
        transposed = expected_fn(x.transpose(2, 3), boxes[:, [1, 0, 3, 2]], **dict(kwargs, size=(1, 5)))
        expected = transposed.transpose(2, 3)
        assert crop_resize(x, boxes, **kwargs).shape == (4, 3, 5, 1)
        for method in ("auto", "dense", "taps"):
            got = crop_resize(x, boxes, method=method, **kwargs)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12, msg=f"{mode} {method}")


@pytest.mark.parametrize("box_dtype", [torch.int32, torch.int16, torch.uint8])
def test_box_dtypes(box_dtype):
    x = torch.randn(4, 2, 10, 10)
    boxes = make_boxes(4, 10, 10, seed=13)
    expected = expected_fn(x, boxes, size=6, mode="bilinear")
    torch.testing.assert_close(crop_resize(x, boxes.to(box_dtype), size=6), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "area"])
def test_empty_batch(mode):
    x = torch.randn(0, 3, 10, 12, requires_grad=True)
    boxes = torch.zeros(0, 4, dtype=torch.int64)
    out = crop_resize(x, boxes, size=(5, 7), mode=mode)
    assert out.shape == (0, 3, 5, 7) and out.dtype == x.dtype
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert crop_resize(x, boxes, scale_factor=2.0, mode=mode).shape == (0, 3, 0, 0)


def test_cache_built_under_inference_mode_supports_autograd():
    x = torch.randn(2, 3, 23, 19)
    boxes = torch.tensor([[1, 2, 20, 17], [0, 0, 23, 19]])
    with torch.inference_mode():
        crop_resize(x, boxes, size=(8, 5), mode="bicubic", align_corners=True)
    xr = x.clone().requires_grad_(True)
    crop_resize(xr, boxes, size=(8, 5), mode="bicubic", align_corners=True).sum().backward()
    assert xr.grad is not None


def test_auto_avoids_the_loop_where_the_cpu_antialias_kernel_fails():
    """Output width 1 (wrong result) and half types (no kernel): the loop would be wrong or fail."""
    image = torch.empty(16, 3, 448, 448)
    spec = resize_spec("bilinear", antialias=True, size=(448, 1))
    assert choose_method(image, spec, (448, 1), (300.0, 300.0)) != "loop"
    spec = resize_spec("bicubic", antialias=True, size=(448, 448))
    assert choose_method(image, spec, (448, 448), (300.0, 300.0)) == "loop"  # large image, fp32
    assert choose_method(image.bfloat16(), spec, (448, 448), (300.0, 300.0)) != "loop"
    x = torch.randn(2, 3, 40, 40).bfloat16()
    boxes = torch.tensor([[0, 0, 40, 40], [5, 6, 30, 33]])
    out = crop_resize(x, boxes, size=(20, 20), mode="bicubic", antialias=True)
    expected = expected_fn(x.float(), boxes, size=(20, 20), mode="bicubic", antialias=True)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------------------------------------
# Errors

X = torch.zeros(2, 3, 8, 8)
BOXES = torch.tensor([[0, 0, 4, 4], [2, 2, 8, 8]])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(size=4, mode="linear"), r"^mode='linear': must be one of \(.*'bilinear'"),
        (dict(size=4, mode="nearest", align_corners=False), r"^align_corners=False: mode=nearest does not take"),
        (dict(size=4, mode="area", align_corners=True), r"^align_corners=True: mode=area does not take"),
        (dict(size=4, mode="nearest-exact", align_corners=True), r"mode=nearest-exact does not take align_corners"),
        (
            dict(size=4, mode="lanczos", antialias=True, align_corners=True),
            r"^align_corners=True: mode=lanczos .*; use None or False",
        ),
        (dict(size=4, mode="nearest", antialias=True), r"^antialias=True: mode=nearest does not antialias"),
        (dict(size=4, mode="area", antialias=True), r"^antialias=True: mode=area does not antialias"),
        (dict(size=4, mode="lanczos"), r"^antialias=False: mode=lanczos requires antialias=True"),
        (dict(), r"exactly one of size and scale_factor must be given"),
        (dict(size=4, scale_factor=2.0), r"exactly one of size and scale_factor must be given"),
        (dict(size=0), r"^size=0: must be a positive int or a pair"),
        (dict(size=(4, 4, 4)), r"^size=\(4, 4, 4\): must be"),
        (dict(size=2.5), r"^size=2.5: must be"),
        (dict(scale_factor=-1.0), r"^scale_factor=-1.0: must be a positive float"),
        (dict(scale_factor=float("nan")), r"^scale_factor=nan: must be"),
        (dict(size=4, recompute_scale_factor=True), r"^recompute_scale_factor=True: only meaningful"),
        (dict(size=4, recompute_scale_factor="yes"), r"^recompute_scale_factor='yes': must be None, True or"),
        (dict(size=4, align_corners="yes"), r"^align_corners='yes': must be None, True or False"),
        (dict(size=4, antialias=None), r"^antialias=None: must be True or False"),
        (dict(size=4, method="fast"), r"^method='fast': must be one of \('auto', 'gather'"),
        (dict(size=4, method="gather"), r"^method='gather': needs a nearest mode"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        crop_resize(X, BOXES, **kwargs)


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (torch.tensor([[0, 0, 4, 4]]), r"one box per sample of x: got 1 boxes for a batch of 2"),
        (torch.tensor([0, 0, 4, 4]), r"boxes must have shape \[B, 4\].*got shape \(4,\)"),
        (torch.zeros(2, 5, dtype=torch.int64), r"boxes must have shape \[B, 4\]"),
        (BOXES.bool(), r"boxes must have an integer dtype .* or a floating one .* got torch.bool"),
        # float boxes (continuous): any positive length inside the frame, finite
        (torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.0, 2.0, 8.5, 8.0]]), r"boxes\[1\] = \(2.0, 2.0, 8.5, 8.0\) is not"),
        (torch.tensor([[0.0, 0.0, 4.0, 4.0], [2.5, 2.0, 2.5, 8.0]]), r"boxes\[1\] .* non-empty"),
        (torch.tensor([[0.0, 0.0, 4.0, float("nan")], [2.0, 2.0, 8.0, 8.0]]), r"boxes\[0\] = .*nan"),
        (torch.tensor([[-0.25, 0.0, 4.0, 4.0], [2.0, 2.0, 8.0, 8.0]]), r"boxes\[0\] = \(-0.25, "),
        (
            torch.tensor([[0, 0, 4, 4], [2, 2, 9, 8]]),
            r"boxes\[1\] = \(2, 2, 9, 8\) is not a valid .* 8x8 frame",
        ),
        (torch.tensor([[0, 0, 4, 4], [2, 2, 8, 9]]), r"boxes\[1\] = \(2, 2, 8, 9\) is not a valid"),
        (torch.tensor([[-1, 0, 4, 4], [2, 2, 8, 8]]), r"boxes\[0\] = \(-1, 0, 4, 4\)"),
        (torch.tensor([[0, 0, 4, 4], [3, 2, 3, 8]]), r"boxes\[1\] .* 0 <= y0 < y1 <= 8"),
        (torch.tensor([[0, 5, 4, 4], [2, 2, 8, 8]]), r"boxes\[0\] .* non-empty"),
    ],
)
def test_box_errors(boxes, match):
    with pytest.raises(ValueError, match=match):
        crop_resize(X, boxes, size=4)


def test_scale_factor_needs_equal_boxes():
    with pytest.raises(
        ValueError, match=r"same height and width.*heights 4\.\.6.*pass size=\(h, w\).*glimpse"
    ):
        crop_resize(X, BOXES, scale_factor=2.0)


def test_scale_factor_too_small():
    with pytest.raises(ValueError, match=r"scale_factor=\(0.1, 0.1\) gives an empty output"):
        crop_resize(X, torch.tensor([[0, 0, 4, 4], [1, 1, 5, 5]]), scale_factor=0.1)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(3, 8, 8), r"x must be a 4-D Tensor\[B, C, H, W\], got shape \(3, 8, 8\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), r"x must have a floating dtype .* got torch.int64"),
    ],
)
def test_input_errors(x, match):
    with pytest.raises(ValueError, match=match):
        crop_resize(x, BOXES, size=4)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_dense_channel_blocks(monkeypatch, requires_grad):
    """Large inputs run the dense method in channel blocks when autograd does not record (with it, in one
    block); force tiny blocks here."""
    monkeypatch.setattr(resize_kernels, "DENSE_BLOCK_ELEMS", 200)
    g = torch.Generator().manual_seed(14)
    x = torch.randn(3, 7, 6, 5, generator=g, dtype=torch.float64)
    boxes = make_boxes(3, 6, 5, seed=15)
    for size in [(4, 3), (8, 9), (2, 9)]:  # (2, 9) contracts the height first
        kwargs = dict(size=size, mode="bicubic", align_corners=False)
        xr = x.clone().requires_grad_(requires_grad)
        xm = x.clone().requires_grad_(requires_grad)
        expected = expected_fn(xr, boxes, **kwargs)
        got = crop_resize(xm, boxes, method="dense", **kwargs)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        if requires_grad:
            grad_out = torch.randn(expected.shape, generator=g, dtype=torch.float64)
            expected.backward(grad_out)
            got.backward(grad_out)
            torch.testing.assert_close(xm.grad, xr.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("knobs", [("bilinear", None, False), ("bicubic", True, False), ("area", None, False),
                                   ("nearest", None, False)], ids=knob_id)
def test_unchecked_boxes_give_the_same_result_without_reading_the_host(monkeypatch, knobs):
    mode, align_corners, antialias = knobs
    g = torch.Generator().manual_seed(21)
    x = torch.randn(5, 6, 9, 8, generator=g, requires_grad=True)
    boxes = make_boxes(5, 9, 8, seed=22)
    kwargs = dict(size=(7, 10), mode=mode, align_corners=align_corners, antialias=antialias)
    expected = crop_resize(x, boxes, **kwargs)
    grad_out = torch.randn(expected.shape, generator=g)
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out)

    with forbid_host_reads(monkeypatch):
        got = crop_resize(x, boxes, check_boxes=False, **kwargs)
        (grad,) = torch.autograd.grad(got, x, grad_out)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)


def test_unchecked_boxes_with_scale_factor_are_still_checked():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="same height and width"):
        crop_resize(x, torch.tensor([[0, 0, 4, 4], [0, 0, 5, 4]]), scale_factor=2.0, check_boxes=False)
