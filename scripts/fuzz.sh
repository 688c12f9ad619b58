#!/usr/bin/env bash
# Long fuzzing of every reader of outside input: the properties of tests/fuzz_inputs.rs, which
# CI runs with a fixed seed and a few hundred cases each, here in rounds of FUZZ_CASES cases
# per property (default 5000), each round with a fresh random seed, until HOURS (default 1)
# have passed or a property fails. Prints the cases run so far after each round; on a failure,
# the property, its shrunk input and how to replay it.
#   scripts/fuzz.sh            # one hour
#   scripts/fuzz.sh 8          # eight hours
#   FUZZ_CASES=500 scripts/fuzz.sh 0.2
set -euo pipefail
cd "$(dirname "$0")/.."
hours=${1:-1}
cases=${FUZZ_CASES:-5000}
threads=${FUZZ_THREADS:-$(nproc)}

built=$(cargo test --test fuzz_inputs --no-run 2>&1 | tee /dev/stderr | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
[ -x "$built" ] || { echo "fuzz: no test binary built" >&2; exit 1; }
# A private copy: rebuilding the tests during a long run must not change what runs.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$built" "$work/fuzz_inputs"

end=$(awk -v h="$hours" -v now="$(date +%s)" 'BEGIN { printf "%d", now + h * 3600 }')
total=0
round=0
while [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    log="$work/round.log"
    # No round of a few thousand cases takes an hour: one that does has hung.
    if PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed timeout 3600 "$work/fuzz_inputs" \
        --test-threads "$threads" --nocapture --skip regressions >"$log" 2>&1; then
        n=$(grep -Eo '^fuzz: [a-z_]+: [0-9]+ cases' "$log" | awk '{ s += $3 } END { print s + 0 }')
        total=$((total + n))
        echo "fuzz: round $round (seed $seed): $n cases; $total in all"
    else
        status=$?
        kept="${TMPDIR:-/tmp}/fuzz-failure-$seed.log"
        cp "$log" "$kept"
        echo "fuzz: round $round (seed $seed) FAILED (exit $status; 124 = hung) after $total cases in earlier rounds"
        grep -E -A40 'Test failed|panicked|overflow|SIGSEGV|SIGABRT|memory allocation' "$kept" | head -80 || tail -40 "$kept"
        echo "fuzz: full log in $kept; replay with"
        echo "  PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed cargo test --test fuzz_inputs -- --nocapture NAME"
        exit 1
    fi
done
echo "fuzz: $total cases in $round rounds, no failure"
