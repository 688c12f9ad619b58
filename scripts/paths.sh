# shellcheck shell=bash
# Sourced (not run) by the scripts that need the toolkit binary, the reference Python venv or the
# data: one name for each, read from the environment, else defaulted relative to the repository.
#
#   TOOLKIT           the toolkit binary                            [target/release/toolkit]
#   REF_VENV          the reference Python venv (torch, transformers, adapters:
#                     scripts/fixtures/requirements.txt; scripts/fixtures/make-fixtures.sh
#                     creates .venv-ref); its interpreter is $REF_VENV/bin/python  [.venv-ref]
#   TOOLKIT_DATA_DIR  the data sets and the mBERT vocabulary        [../shared/data]
#
# Sourcing it makes the repository root (ROOT) the working directory, so relative paths, given
# or default, are taken from the repository root.
# The older names TOOLKIT_BIN and REF_PYTHON (= $REF_VENV/bin/python) are still read, with a
# warning, until the next release; so is DATA_DIR where sourced with `--old-data-dir`, by the
# scripts that read it before (a DATA_DIR in the environment is too common a name to follow
# everywhere).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

deprecated_name() {  # OLD NEW: take OLD's value for NEW (unless NEW is set), with a warning
    local old=$1 new=$2
    [ -n "${!old:-}" ] || return 0
    if [ -n "${!new:-}" ]; then
        echo "warning: $old is deprecated and ignored, $new is set" >&2
    else
        echo "warning: $old is deprecated (read until the next release): set $new instead" >&2
        printf -v "$new" '%s' "${!old}"
    fi
}
deprecated_name TOOLKIT_BIN TOOLKIT
[ "${1:-}" != --old-data-dir ] || deprecated_name DATA_DIR TOOLKIT_DATA_DIR
if [ -n "${REF_PYTHON:-}" ] && [ -z "${REF_VENV:-}" ]; then
    REF_VENV=$(dirname "$(dirname "$REF_PYTHON")")
    echo "warning: REF_PYTHON is deprecated (read until the next release): set REF_VENV=$REF_VENV instead" >&2
elif [ -n "${REF_PYTHON:-}" ]; then
    echo "warning: REF_PYTHON is deprecated and ignored, REF_VENV is set" >&2
fi

# Whether the environment chose them: scripts that build the binary or make the venv leave a
# given one alone.
toolkit_given=${TOOLKIT:+1}
# shellcheck disable=SC2034  # read by scripts/fixtures/make-fixtures.sh
ref_venv_given=${REF_VENV:+1}

TOOLKIT=${TOOLKIT:-target/release/toolkit}
REF_VENV=${REF_VENV:-.venv-ref}
TOOLKIT_DATA_DIR=${TOOLKIT_DATA_DIR:-../shared/data}
cd "$ROOT" || exit 1

build_toolkit() {  # [CARGO BUILD ARGS...]: build target/release/toolkit, unless TOOLKIT was given
    [ -n "$toolkit_given" ] || cargo build --release "$@"
}

require_ref_venv() {  # WHO [MODULE...]: stop unless $REF_VENV/bin/python exists and imports MODULEs
    local who=$1
    shift
    if [ ! -x "$REF_VENV/bin/python" ]; then
        echo "$who: no Python at $REF_VENV/bin/python: set REF_VENV to a venv with scripts/fixtures/requirements.txt (scripts/fixtures/make-fixtures.sh creates .venv-ref)" >&2
        exit 1
    fi
    if [ $# -gt 0 ] && ! "$REF_VENV/bin/python" -c "import $(IFS=,; echo "$*")" 2>/dev/null; then
        echo "$who: $REF_VENV/bin/python cannot import all of: $* (set REF_VENV)" >&2
        exit 1
    fi
}
