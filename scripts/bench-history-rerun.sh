#!/usr/bin/env bash
# A nightly re-run over done threads, nothing edited (issue 18's thread fingerprints): for
# each release binary given, imports CONVERSATIONS conversations of 6 messages (the shape of
# benches/suite.rs's history export) into a sandbox of its own, then times 3 re-runs of the
# same export (every row done, every thread compared) and 3 under --on-change skip (no
# thread compared), and prints the medians. The seconds move with the host: compare the
# binaries within one run of this script.
#   scripts/bench-history-rerun.sh before.bin after.bin
set -euo pipefail
conversations=${CONVERSATIONS:-10000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/threads.jsonl" "$conversations" <<'PY'
import json, sys
path, conversations = sys.argv[1], int(sys.argv[2])
with open(path, "w") as out:
    for row in range(conversations):
        customer = row // 3
        thread = [{"externalId": f"m-{row}-{m}", "channel": "email",
                   "direction": "in" if m % 2 == 0 else "out",
                   "preview": f"Message {m} about order {row}: where is it, and when will it come?",
                   "sentAt": f"2024-01-01T00:00:{m:02}Z"} for m in range(6)]
        out.write(json.dumps({
            "customer": {"externalId": f"C-{customer}", "name": f"Customer {customer}"},
            "conversation": {"externalId": f"T-{row}", "name": f"Order {row}"},
            "messages": thread}) + "\n")
PY
median() { sort -n | sed -n 2p; }
export KUSTOMER_API_KEY=bench-key
port=47$((RANDOM % 900 + 100))
for binary in "$@"; do
  "$binary" sandbox --port "$port" --token bench-key >"$work/sandbox.log" 2>&1 &
  sandbox=$!
  sleep 1
  checkpoint="$work/$(basename "$binary").sqlite"
  run() { "$binary" import "$work/threads.jsonl" --base-url "http://127.0.0.1:$port" \
            --checkpoint "$checkpoint" --rpm 100000000 --no-progress --json "$@"; }
  run --mode bulk >/dev/null
  timed() {
    for _ in 1 2 3; do
      start=$(date +%s.%N)
      requests=$(run "$@" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
      end=$(date +%s.%N)
      [ "$requests" = 0 ] || { echo "a re-run sent $requests requests" >&2; exit 1; }
      echo "$end - $start" | bc
    done | median
  }
  compared=$(timed)
  skipped=$(timed --on-change skip)
  echo "$(basename "$binary"): re-run of $conversations done threads: ${compared} s; under --on-change skip: ${skipped} s; ratio $(echo "scale=2; $compared / $skipped" | bc)"
  kill "$sandbox"; wait "$sandbox" 2>/dev/null || true
done
