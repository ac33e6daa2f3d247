#!/usr/bin/env bash
# Lay out the code of a commit as an importable gais_pipe package, for the benchmarks that measure two trees
# side by side (serve_bench.py --before DIR): OUT/src holds the commit's files, OUT/pkg/gais_pipe the package
# as installed (pipeline/ as gais_pipe, extract/, retrieval/, ... as its subpackages, by symlinks). Reads git,
# changes nothing in it. Prints OUT/pkg, the folder to put first on PYTHONPATH.
#
#   bash benchmarks/unpack_tree.sh 8fa16ff /tmp/before      # -> /tmp/before/pkg
set -euo pipefail
commit=$1
out=$(realpath -m "$2")
cd "$(dirname "$0")/.."
rm -rf "$out"
mkdir -p "$out/src" "$out/pkg/gais_pipe"
git archive "$commit" | tar -x -C "$out/src"
for file in "$out"/src/pipeline/*; do ln -s "$file" "$out/pkg/gais_pipe/"; done
for folder in extract configs retrieval index workdir serve; do ln -s "$out/src/$folder" "$out/pkg/gais_pipe/$folder"; done
echo "$out/pkg"
