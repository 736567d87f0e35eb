"""Map a foreign weights file onto a timm model by tensor order and write it as safetensors.

    python scripts/convert_weights.py SRC.pth DST.safetensors --model tf_efficientnet_lite0
    python scripts/train.py model.backbone.name=tf_efficientnet_lite0 model.backbone.pretrained_path=DST.safetensors

The k-th floating-point tensor of SRC becomes the k-th of the model (counts and every shape are checked;
BatchNorm num_batches_tracked counters are skipped on both sides). See fgzoom.checkpoints.weights.
"""

import argparse
import logging
import sys
from pathlib import Path

import project_root  # noqa: F401  (PROJECT_ROOT, src/ on sys.path)

from fgzoom.errors import FGZoomError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", type=Path, help="the foreign weights file (.pth/.pt/.bin/.ckpt/.safetensors)")
    parser.add_argument("destination", type=Path, help="the .safetensors file to write")
    parser.add_argument("--model", required=True, help="the timm model name the tensors belong to")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classes of the source's classifier (default: the model's, 1000 for ImageNet)")
    parser.add_argument("--print-mapping", action="store_true", help="print every source -> model name pair")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from fgzoom.checkpoints.weights import convert_weights

    try:
        report = convert_weights(args.source, args.destination, args.model, num_classes=args.num_classes)
    except FGZoomError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_mapping:
        for index, (src, dst, shape) in enumerate(report.mapped):
            print(f"{index:4d} {src} -> {dst} {list(shape)}")
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
