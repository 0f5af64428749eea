#!/usr/bin/env bash
# Packs what the GPU machine's Python lacks into .carry/site (git-ignored, local only), for benchmarks/gpu_suite.py.
# MONAI is pure Python (no compiled parts; needs only torch and numpy, which that machine has): the package folder
# and its dist-info are copied from this project's environment, where uv installed them from its cache at the
# version uv.lock pins, without bytecode. Nothing is downloaded. On the GPU machine put .carry/site on PYTHONPATH
# (docs/benchmarks/gpu.md gives the whole command) and name .carry in the run's carry list.
#
#   bash benchmarks/pack_gpu_carry.sh [PLANETOID_DIR]
#
# PLANETOID_DIR (optional, e.g. ../shared/data/planetoid/raw): its raw Cora files (ind.cora.*) are copied to
# .carry/planetoid for the suite's --planetoid-folder .carry/planetoid.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.carry/' "$exclude" 2>/dev/null || echo '/.carry/' >> "$exclude"
src=$(uv run --frozen python -c 'import monai, os; print(os.path.dirname(monai.__file__))')
rm -rf .carry/site
mkdir -p .carry/site
cp -r "$src" "$(dirname "$src")"/monai-*.dist-info .carry/site/
find .carry/site -name __pycache__ -prune -exec rm -rf {} +
if [ $# -ge 1 ]; then
  ls "$1"/ind.cora.x > /dev/null || { echo "error: $1: no ind.cora.x (raw Planetoid Cora files) there" >&2; exit 2; }
  rm -rf .carry/planetoid && mkdir -p .carry/planetoid && cp "$1"/ind.cora.* .carry/planetoid/
  echo "packed Cora's raw files from $1 into .carry/planetoid"
fi
echo "packed $(ls .carry/site | tr '\n' ' ')($(du -sh .carry | cut -f1)) from $src"
