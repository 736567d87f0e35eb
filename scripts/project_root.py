"""Start-up of every script here: ``import project_root`` sets ``PROJECT_ROOT`` (the configs' ``paths.root_dir``)
to this checkout and makes ``src/`` importable, so the scripts work from a checkout even before
``pip install -e .``."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
