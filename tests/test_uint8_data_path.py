"""The uint8 data path (issue 39): every file kind a user has decodes as PIL decoded it, the uint8 transforms
give today's float pipeline's images within a measured tolerance (and its boxes exactly), batches cross as
uint8 in channels-last memory and are normalized by the datamodule's on_after_batch_transfer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from fgzoom.data.batches import collate_uint8, normalize_images
from fgzoom.data.datamodule import FGVCDataModule
from fgzoom.data.decode import BadImageError, decode_errors, load_rgb, read_image
from fgzoom.data.index import Sample
from fgzoom.data.seeding import seeded_rng
from fgzoom.data.transforms import build_transforms

# PIL's and torchvision's antialiased bilinear resize on uint8 differ by at most this many grey levels (measured:
# 1, on about 0.05 % of the pixels of 500x375 and 1024x683 photo-like JPEGs resized to 512 and cropped to 448)
RESIZE_TOLERANCE = 1
# torchvision's tensor colour-jitter kernels against its PIL ones (measured: at most 4, mean 0.2 grey levels)
JITTER_TOLERANCE = 5
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo(width: int = 120, height: int = 80, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8))
    scene = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(scene + rng.integers(-8, 9, scene.shape), 0, 255).astype(np.uint8))


def _pil_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(load_rgb(path))).permute(2, 0, 1)


def _write_kinds(folder: Path) -> dict[str, Path]:
    """One file of each kind, written with PIL."""
    base = _photo()
    paths = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = folder / name
        image.save(paths[name], **options)

    save("baseline.jpg", base, quality=90)
    save("progressive.jpg", base, quality=90, progressive=True)
    save("cmyk.jpg", base.convert("CMYK"), quality=90)
    save("gray.jpg", base.convert("L"), quality=90)
    rgba = np.array(base.convert("RGBA"))
    rgba[..., 3] = np.linspace(0, 255, rgba.shape[1], dtype=np.uint8)[None]
    save("alpha.png", Image.fromarray(rgba))
    save("palette.gif", base.convert("P", palette=Image.ADAPTIVE, colors=32))
    save("image.webp", base, quality=90)
    save("image.bmp", base)
    exif = base.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": PIL's open (and so today's loader) ignores it
    save("exif_rotated.jpg", base, quality=90, exif=exif)
    return paths


@pytest.mark.parametrize("name", ["baseline.jpg", "progressive.jpg", "cmyk.jpg", "gray.jpg", "alpha.png",
                                  "palette.gif", "image.webp", "image.bmp", "exif_rotated.jpg"])
def test_every_file_kind_decodes_to_what_pil_gave(name: str, tmp_path: Path) -> None:
    path = _write_kinds(tmp_path)[name]
    image = read_image(path)
    assert image.dtype == torch.uint8 and image.shape == (3, 80, 120)  # RGB, stored orientation (EXIF not applied)
    assert torch.equal(image, _pil_rgb(path))  # pixel for pixel


def test_a_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    """PIL clipped 16-bit grayscale to 255 (a white image); the decoder keeps the high byte."""
    values = (np.arange(80 * 120, dtype=np.uint32).reshape(80, 120) * 7 % 65536).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    expected = torch.from_numpy((values >> 8).astype(np.uint8)).expand(3, -1, -1)
    image = read_image(tmp_path / "deep.png")
    assert image.dtype == torch.uint8 and torch.equal(image, expected)


@pytest.mark.parametrize("kind", ["truncated.jpg", "truncated.png", "not_an_image.jpg", "missing.jpg"])
def test_unreadable_files_stop_with_one_line_naming_the_file(kind: str, tmp_path: Path) -> None:
    _photo().save(tmp_path / "good.jpg", quality=90)
    _photo().save(tmp_path / "good.png")
    path = tmp_path / kind
    if kind.startswith("truncated"):
        data = (tmp_path / f"good{path.suffix}").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image.jpg":
        path.write_text("this is a text file\n")
    with pytest.raises(BadImageError, match=re.escape(f"cannot read image {path} (")) as error:
        read_image(path)
    message = str(error.value)
    assert "\n" not in message and "data.on_bad_image=skip" in message and ".cpp" not in message
    assert decode_errors([Sample(path, 0), Sample(tmp_path / "good.jpg", 0)]) == [message, None]


def _image_folder(root: Path, per_class: int = 3) -> Path:
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                _photo(seed=i).save(folder / f"{i}.jpg", quality=90)
    return root


def test_on_bad_image_skip_drops_unreadable_files_at_setup(tmp_path: Path) -> None:
    _image_folder(tmp_path)
    data = (tmp_path / "train" / "a" / "0.jpg").read_bytes()
    (tmp_path / "train" / "a" / "0.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "test" / "b" / "1.jpg").write_text("not an image")
    dm = FGVCDataModule("imagefolder", str(tmp_path), image_size=32, batch_size=2, num_workers=0,
                        val_fraction=0.5, on_bad_image="skip")
    dm.setup()
    assert dm.skipped["train"] + dm.skipped["val"] == 1 and dm.skipped["test"] == 1


def _today(train: bool, image_size: int, crop_pct: float = 0.875, resize_mode: str = "square", hflip: float = 0.5,
           translate: float = 0.0, color_jitter: float = 0.0) -> v2.Compose:
    """The float pipeline on PIL images before the uint8 path (fgzoom 3284af7's build_transforms, ImageNet
    normalization), written out."""
    side = int(round(image_size / crop_pct))
    steps: list = [v2.Resize((side, side) if resize_mode == "square" else side, antialias=True)]
    if train:
        padding = int(round(translate * image_size))
        if padding > 0 or side > image_size or resize_mode == "shorter":
            steps.append(v2.RandomCrop(image_size, padding=padding or None))
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(p=hflip))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    else:
        steps.append(v2.CenterCrop(image_size))
    steps += [v2.ClampBoundingBoxes(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    return v2.Compose(steps)


SETTINGS = {
    "eval": (dict(train=False, image_size=56), RESIZE_TOLERANCE),
    "train crop_pct": (dict(train=True, image_size=56), RESIZE_TOLERANCE),
    "train translate shorter": (dict(train=True, image_size=48, crop_pct=1.0, resize_mode="shorter",
                                     translate=0.125), RESIZE_TOLERANCE),
    "train translate square": (dict(train=True, image_size=48, crop_pct=1.0, translate=0.0625), RESIZE_TOLERANCE),
    "train colour jitter": (dict(train=True, image_size=56, color_jitter=0.4), JITTER_TOLERANCE),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_uint8_pipeline_gives_todays_images_and_exactly_todays_boxes(setting: str, tmp_path: Path) -> None:
    """Same files, same seeds: the uint8 transforms, normalized as on the device, against the float pipeline on
    PIL images: pixels within the tolerance (in grey levels), the same crops and flips, identical boxes."""
    options, tolerance = SETTINGS[setting]
    new = build_transforms(**options)
    old = _today(**options)
    scale = torch.tensor(STD)[:, None, None] * 255  # normalized units -> grey levels
    for seed, (width, height) in enumerate([(120, 80), (64, 96), (75, 50), (200, 150)]):
        path = tmp_path / f"{seed}.jpg"
        _photo(width, height, seed).save(path, quality=90)
        box = [0.1 * width, 0.2 * height, 0.8 * width, 0.9 * height]
        with seeded_rng(seed):
            expected, expected_box = old(load_rgb(path), tv_tensors.BoundingBoxes([box], format="XYXY",
                                                                                 canvas_size=(height, width)))
        with seeded_rng(seed):
            image, boxes = new(read_image(path), tv_tensors.BoundingBoxes([box], format="XYXY",
                                                                           canvas_size=(height, width)))
        assert image.dtype == torch.uint8
        got = normalize_images(image[None], MEAN, STD)[0]
        assert float(((got - expected) * scale).abs().max()) <= tolerance + 1e-3, setting
        assert torch.equal(boxes.as_subclass(torch.Tensor), expected_box.as_subclass(torch.Tensor))


def test_normalization_on_the_device_is_todays_arithmetic() -> None:
    """uint8 -> float on the device computes exactly what ToDtype(scale=True) + Normalize computed per image."""
    images = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels-last, as collated
    today = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    got = normalize_images(images, MEAN, STD)
    assert got.is_contiguous() and torch.equal(got, torch.stack([today(x) for x in images]))
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(got, MEAN, STD)


def test_batches_cross_as_uint8_and_reach_the_model_normalized(tmp_path: Path) -> None:
    dm = FGVCDataModule("imagefolder", str(_image_folder(tmp_path, 4)), image_size=32, batch_size=4, num_workers=0,
                        seed=0, mean=MEAN, std=STD, translate=0.125)
    batch = next(iter(dm.train_dataloader()))
    images = batch["image"]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    assert images.is_contiguous(memory_format=torch.channels_last)  # stacked without a transpose
    moved = dm.on_after_batch_transfer(batch, 0)
    assert moved["image"].dtype == torch.float32
    assert torch.equal(moved["image"], normalize_images(images, MEAN, STD))
    items = [dm.dataset("train")[(i, 7)] for i in range(2)]
    assert torch.equal(collate_uint8(items)["image"], torch.stack([item["image"] for item in items]))


def test_a_sample_without_a_box_gets_the_same_pixels_without_the_box_work():
    """The dataset skips the box transforms for samples without a box: the same random draws give the same
    pixels as the pipeline with a box (train: crop, translate padding, flip, colour jitter; and eval)."""
    from torchvision import tv_tensors

    from fgzoom.data.transforms import build_transforms

    image = torch.randint(0, 256, (3, 75, 100), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    box = tv_tensors.BoundingBoxes([[10.0, 5.0, 60.0, 50.0]], format="XYXY", canvas_size=(75, 100))
    for train in (True, False):
        t = build_transforms(train=train, image_size=48, crop_pct=0.875, translate=0.0625, color_jitter=0.2)
        torch.manual_seed(3)
        with_box, _ = t(image, box)
        torch.manual_seed(3)
        alone = t(image)
        assert torch.equal(alone, with_box)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(("resize_mode", "crop_pct", "translate"), [("square", 0.875, 0.0625), ("square", 1.0, 0.0),
                                                                     ("shorter", 0.875, 0.0), ("shorter", 1.0, 0.2)])
def test_boxes_moved_by_arithmetic_equal_the_bounding_boxes_path(train, resize_mode, crop_pct, translate):
    """The dataset moves a box through the image's recorded geometry (BoxFollowingCompose.move_box): the same
    pixels and, to float rounding, the same box as running BoundingBoxes through every v2 step, for boxes
    inside, across the border of and outside the crop, flipped or not."""
    from torchvision import tv_tensors

    from fgzoom.data.transforms import build_transforms

    g = torch.Generator().manual_seed(5)
    t = build_transforms(train=train, image_size=40, crop_pct=crop_pct, resize_mode=resize_mode, translate=translate)
    for trial in range(24):
        h, w = (int(v) for v in torch.randint(30, 90, (2,), generator=g))
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        x0, x1 = sorted(float(v) for v in torch.rand(2, generator=g) * w)
        y0, y1 = sorted(float(v) for v in torch.rand(2, generator=g) * h)
        boxes = tv_tensors.BoundingBoxes([[x0, y0, x1, y1]], format="XYXY", canvas_size=(h, w), dtype=torch.float32)
        torch.manual_seed(trial)
        with_box, moved = t(image, boxes)
        torch.manual_seed(trial)
        alone = t(image)
        assert torch.equal(alone, with_box)
        got = torch.tensor(t.move_box((x0, y0, x1, y1)), dtype=torch.float32)
        torch.testing.assert_close(got, moved[0], rtol=0, atol=1e-3)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(("resize_mode", "crop_pct", "translate"), [("square", 0.875, 0.0625), ("square", 1.0, 0.0),
                                                                     ("shorter", 0.875, 0.0), ("shorter", 1.0, 0.2)])
def test_the_recorded_frame_maps_boxes_on_the_output_back_to_the_image(train, resize_mode, crop_pct, translate):
    """BoxFollowingCompose.frame() is the image's geometry as one map per axis: a box anywhere on the output,
    mapped back (ops.boxes_to_source) and moved forward again (move_box), is that box; without padding
    (eval: resize and centre crop) it lands inside the image, on any aspect ratio."""
    from fgzoom.data.transforms import build_transforms
    from fgzoom.ops.boxes import boxes_to_source

    g = torch.Generator().manual_seed(7)
    t = build_transforms(train=train, image_size=40, crop_pct=crop_pct, resize_mode=resize_mode, translate=translate)
    for trial in range(16):
        h, w = (int(v) for v in torch.randint(20, 120, (2,), generator=g))
        torch.manual_seed(trial)
        t(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        y0, y1 = sorted(float(v) for v in torch.rand(2, generator=g) * 40)
        x0, x1 = sorted(float(v) for v in torch.rand(2, generator=g) * 40)
        frame = torch.tensor([t.frame()], dtype=torch.float64)
        back = boxes_to_source(torch.tensor([[y0, x0, y1, x1]]), frame)[0].tolist()
        again = t.move_box((back[1], back[0], back[3], back[2]))
        assert again == pytest.approx((x0, y0, x1, y1), abs=1e-3)
        if not train:
            assert 0 <= back[0] <= back[2] <= h + 1e-3 and 0 <= back[1] <= back[3] <= w + 1e-3
