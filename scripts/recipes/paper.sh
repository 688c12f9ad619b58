#!/usr/bin/env bash
# The paper's experiments with its own settings (Appendix B, Tables 3 and 4): one `toolkit
# sweep` per task and model over the sweep files in scripts/sweeps/paper/ (built on
# scripts/configs/*.toml, 4 seeds), each run trained, exported and scored, then the tables per
# sweep in sweeps/paper/NAME/report/. Complete stages are skipped and interrupted training
# resumes, so re-running continues where it stopped.
#
#   SWEEPS="qa-mbert nli-xlmr ..."  default: the main grid (Table 3) of every task and model
#   SWEEPS="qa-mbert-subsets qa-xlmr-subsets nli-mbert-subsets nli-xlmr-subsets"   Table 4
#   BACKEND=slurm                   submit sbatch job arrays instead of running here
#   JOBS=N                          local backend: runs at a time (default 1)
#   DRY_RUN=1                       list every run and its settings (`toolkit sweep plan`) only
#
# Needs what the paper used on disk, relative to the repository root (README, "The paper's full
# setting"). A GPU is advised: the main grid is hundreds of GPU hours.
set -euo pipefail
# shellcheck source=scripts/paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/../paths.sh"

[ -x "$TOOLKIT" ] || scripts/setup.sh

for sweep in ${SWEEPS:-qa-mbert qa-xlmr nli-mbert nli-xlmr copa-mbert copa-xlmr}; do
    file=scripts/sweeps/paper/$sweep.toml
    if [ -n "${DRY_RUN:-}" ]; then
        "$TOOLKIT" sweep plan "$file"
    elif [ "${BACKEND:-local}" = slurm ]; then
        "$TOOLKIT" sweep run "$file" --backend slurm
    else
        "$TOOLKIT" sweep run "$file" --backend local --jobs "${JOBS:-1}"
    fi
done
