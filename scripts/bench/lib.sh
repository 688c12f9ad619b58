# shellcheck shell=bash
# Sourced (after scripts/paths.sh) by the benchmark scripts that time `toolkit` against the
# reference stack. The sourcing script defines say() and die() (messages under its own name).

# Cores kept busy by other processes, sampled over 2 s while the benchmark runs nothing.
busy_cores() {
    local a b
    a=$(head -1 /proc/stat); sleep 2; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = 0
        for (i = 2; i <= 9; i++) t += y[i] - x[i]
        idle = (y[5] - x[5]) + (y[6] - x[6])
        printf "%.2f", (t > 0) ? (t - idle) / t * n : 0 }'
}

# private_toolkit WORK COMMAND: points TOOLKIT at a binary that has `toolkit COMMAND`: the given
# TOOLKIT (checked), else the release build (`cargo build --release`, default features) copied
# to WORK/toolkit at once, since other builds may replace target/release/toolkit meanwhile.
private_toolkit() {
    local work=$1 command=$2 built=0
    mkdir -p "$work"
    if [ -n "$toolkit_given" ]; then
        "$TOOLKIT" "$command" --help >/dev/null 2>&1 || die "$TOOLKIT has no \`$command\` command (built without the train feature?)"
        return
    fi
    for _ in 1 2; do
        say "building the release binary (cargo build --release)"
        cargo build --release --quiet
        cp target/release/toolkit "$work/toolkit.tmp"
        # Another build (other features) may have replaced the binary in between.
        if "$work/toolkit.tmp" "$command" --help >/dev/null 2>&1; then
            mv "$work/toolkit.tmp" "$work/toolkit"; built=1; break
        fi
        say "target/release/toolkit has no \`$command\` (replaced by another build?); building again"
    done
    [ "$built" = 1 ] || die "could not get a toolkit binary with \`$command\`"
    TOOLKIT=$work/toolkit
}
