#!/bin/sh
# Seed fuzz/corpus/expr_parse with the "expr" field of every expression conformance case.
# The corpus directory is git-ignored; run this once before the first `cargo fuzz run`.
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/expr_parse
for f in ../tests/conformance/cases/expr-*.json; do
    name=$(basename "$f" .json)
    jq -j '.expr // empty | strings' "$f" > "corpus/expr_parse/$name"
    [ -s "corpus/expr_parse/$name" ] || rm -f "corpus/expr_parse/$name"
done
echo "seeded $(ls corpus/expr_parse | wc -l) inputs into fuzz/corpus/expr_parse"
