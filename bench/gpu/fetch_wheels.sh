#!/usr/bin/env bash
# The wheels a lent GPU machine needs to run this project (bench/gpu/carried.txt), for its Python 3.12 on
# x86-64 Linux, into .whl/ (ignored by git): run here, where PyPI is reachable; the machine has no network.
# promise has no wheel on PyPI; pip builds one (pure Python) from its source.
set -euo pipefail
cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
rm -rf .whl && mkdir .whl
mapfile -t pins < <(grep -v '^#' bench/gpu/carried.txt | grep -v '^promise==')
"$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "${pins[@]}"
"$PIP" wheel --quiet --no-deps -w .whl "$(grep '^promise==' bench/gpu/carried.txt)"
expected=$(grep -vc '^#' bench/gpu/carried.txt)
found=$(ls .whl/*.whl | wc -l)
if [ "$found" -ne "$expected" ]; then echo "fetch_wheels: $found wheels in .whl for $expected pins" >&2; exit 1; fi
echo "$found wheels in .whl ($(du -sh .whl | cut -f1)): carry [\".whl\"] in the device call"
