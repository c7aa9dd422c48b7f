#!/usr/bin/env bash
# Compares two builds of the bench binary on one scenario: runs them
# alternately (A, B, A, B, ...) so that drift of the machine hits both
# alike, then prints one JSON object with the median of every numeric
# field of each side's output and the ratio B / A.
#
#   cp target/release/bench /tmp/bench-before    # build, copy, change, build
#   bench/ab.sh /tmp/bench-before target/release/bench 3 -- submit --requests 10000 --clients 64
#
# Progress (one line per run) goes to stderr. A run that fails stops the
# comparison with its exit code.
set -euo pipefail
if [ $# -lt 5 ] || [ "$4" != "--" ]; then
  echo "usage: $0 BENCH_A BENCH_B RUNS -- SCENARIO [ARGS...]" >&2
  exit 2
fi
a="$1" b="$2" runs="$3"
shift 4
case "$runs" in '' | *[!0-9]* | 0)
  echo "RUNS must be a positive number, not '$runs'" >&2
  exit 2
  ;;
esac
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for i in $(seq 1 "$runs"); do
  for side in a b; do
    bin="$a"
    [ "$side" = b ] && bin="$b"
    echo "run $i/$runs, $side: $bin $*" >&2
    "$bin" "$@" >"$out/$side.$i.json" 2>"$out/$side.$i.log" || {
      rc=$?
      echo "$bin failed (exit $rc); its stderr:" >&2
      cat "$out/$side.$i.log" >&2
      exit "$rc"
    }
  done
done
exec python3 - "$out" "$runs" "$a" "$b" "$@" <<'EOF'
import json, statistics, sys

out, runs, a, b, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:]

def numbers(value, prefix=""):
    """Every numeric leaf of a JSON value, keyed by its dotted path."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: value}
    if isinstance(value, dict):
        found = {}
        for k, v in value.items():
            found.update(numbers(v, f"{prefix}.{k}" if prefix else k))
        return found
    return {}

def side(name):
    runs_ = [numbers(json.load(open(f"{out}/{name}.{i}.json"))) for i in range(1, runs + 1)]
    keys = sorted(set().union(*runs_))
    return {k: statistics.median(r[k] for r in runs_ if k in r) for k in keys}

ma, mb = side("a"), side("b")
ratio = {k: round(mb[k] / ma[k], 3) for k in ma if k in mb and ma[k]}
print(json.dumps({"args": args, "runs": runs, "a": {"bench": a, "median": ma},
                  "b": {"bench": b, "median": mb}, "ratio_b_over_a": ratio}, indent=2))
EOF
