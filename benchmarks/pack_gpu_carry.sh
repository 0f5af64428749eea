#!/usr/bin/env bash
# Packs what the GPU machine's Python lacks into .carry/site (git-ignored, local only), for benchmarks/gpu_suite.py.
# MONAI is pure Python (no compiled parts; needs only torch and numpy, which that machine has): the package folder
# and its dist-info are copied from this project's environment, where uv installed them from its cache at the
# version uv.lock pins, without bytecode. Nothing is downloaded. On the GPU machine put .carry/site on PYTHONPATH
# (docs/benchmarks/gpu.md gives the whole command) and name .carry in the run's carry list.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.carry/' "$exclude" 2>/dev/null || echo '/.carry/' >> "$exclude"
src=$(uv run --frozen python -c 'import monai, os; print(os.path.dirname(monai.__file__))')
rm -rf .carry/site
mkdir -p .carry/site
cp -r "$src" "$(dirname "$src")"/monai-*.dist-info .carry/site/
find .carry/site -name __pycache__ -prune -exec rm -rf {} +
echo "packed $(ls .carry/site | tr '\n' ' ')($(du -sh .carry | cut -f1)) from $src"
