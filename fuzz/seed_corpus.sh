#!/bin/sh
# Seed the fuzz corpora from the conformance cases. The corpus directories are git-ignored;
# run this once before the first `cargo fuzz run`.
#   corpus/expr_parse:    the "expr" field of every expression case (expr-*.json)
#   corpus/program_check: the "program" of every check and run case (check-*.json, run-*.json),
#                         pretty-printed as nanovm check would read it from a file
#   corpus/program_run:   the same programs
set -eu
cd "$(dirname "$0")"
mkdir -p corpus/expr_parse corpus/program_check
for f in ../tests/conformance/cases/expr-*.json; do
    name=$(basename "$f" .json)
    jq -j '.expr // empty | strings' "$f" > "corpus/expr_parse/$name"
    [ -s "corpus/expr_parse/$name" ] || rm -f "corpus/expr_parse/$name"
done
echo "seeded $(ls corpus/expr_parse | wc -l) inputs into fuzz/corpus/expr_parse"
for f in ../tests/conformance/cases/check-*.json ../tests/conformance/cases/run-*.json; do
    name=$(basename "$f" .json)
    jq '.program // empty' "$f" > "corpus/program_check/$name"
    [ -s "corpus/program_check/$name" ] || rm -f "corpus/program_check/$name"
done
echo "seeded $(ls corpus/program_check | wc -l) inputs into fuzz/corpus/program_check"
mkdir -p corpus/program_run
cp corpus/program_check/* corpus/program_run/
echo "seeded $(ls corpus/program_run | wc -l) inputs into fuzz/corpus/program_run"
