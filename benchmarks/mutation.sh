#!/usr/bin/env bash
# Mutation testing of src/nextbest/stats/ with mutmut against the fast stats tests (`make mutation`;
# not in CI: about an hour on two cores). Runs in a scratch copy, var/mutation/, so the checkout gets no
# mutants/ directory; prints the summary and writes every survivor to var/mutation/survivors.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work="$root/var/mutation"
rm -rf "$work"
mkdir -p "$work/tests"
cp -r "$root/src" "$work/src"
cp "$root/tests/__init__.py" "$root/tests/conftest.py" "$work/tests/"
cp -r "$root/tests/stats" "$work/tests/stats"
rm -rf "$work/tests/stats/__pycache__" "$work/src/nextbest/stats/__pycache__"
# The project's pytest settings, without the coverage of the whole suite.
sed -n '/^\[tool.pytest.ini_options\]/,/^$/p' "$root/pyproject.toml" > "$work/pyproject.toml"
cat > "$work/setup.cfg" <<'CFG'
[mutmut]
source_paths=src
only_mutate=src/nextbest/stats/*
pytest_add_cli_args_test_selection=tests/stats
pytest_add_cli_args=-m
    not slow
    -p
    no:cacheprovider
    -q
    -x
CFG
cd "$work"
"$root/.venv/bin/mutmut" run --max-children "${MUTATION_JOBS:-2}" || true
"$root/.venv/bin/mutmut" results --all true > results.txt || true
grep -v ": killed$" results.txt > survivors.txt || true
echo "mutants: $(grep -c ':' results.txt)  killed: $(grep -c ': killed$' results.txt)"
echo "not killed (survived, timeout, suspicious, no tests): $(grep -c ':' survivors.txt)"
cat survivors.txt
