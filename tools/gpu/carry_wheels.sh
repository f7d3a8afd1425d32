#!/usr/bin/env bash
# Wheels of the Python packages llama_local needs that a lent GPU machine's image lacks, into
# .whl/ (git-ignored), for tools/gpu/run.sh to install there: that machine reaches no package
# registry. Its python3 is 3.12 with numpy, ml_dtypes, tokenizers, jinja2, rich, torch,
# transformers, pytest, scikit-build-core, pybind11, cmake and ninja already; not gguf or
# prompt_toolkit. Run here, where PyPI is reachable; the versions are this environment's where it
# has them, so the GPU run tests what the suite tests here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
pins=$("$PY" - <<'EOF'
from importlib.metadata import PackageNotFoundError, version
# gguf: the GGUF reader; prompt_toolkit and its wcwidth: imported by llama_local.chat.
for name in ("gguf", "prompt_toolkit", "wcwidth"):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
)
rm -rf .whl
mkdir .whl
# shellcheck disable=SC2086  # one requirement per word
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
ls .whl
