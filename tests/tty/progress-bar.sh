#!/usr/bin/env bash
# Shows, in a real terminal (tmux), that log lines printed while the progress bar is drawn
# leave no stale frame of the bar behind: the bar is cleared before each line and drawn
# again below it, and cleared at the end.
#
#   tests/tty/progress-bar.sh [BINARY]     # default: target/debug/kustomer-import
#
# It runs an import against the sandbox (started here on 127.0.0.1, with faults so that
# rows are left pending with a warning mid-run), captures the screen mid-run and at the
# end, checks both, and prints the captures. Needs tmux. Exit 0 when the checks hold.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/debug/kustomer-import}
work=$(mktemp -d)
session=kimp-progress-$$
port_file=$work/sandbox.out
cleanup() {
    tmux kill-session -t "$session" 2>/dev/null || true
    [ -n "${sandbox_pid:-}" ] && kill "$sandbox_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$binary" sandbox --latency-ms 20 --fail-rate 0.02 --seed 7 >"$port_file" 2>/dev/null &
sandbox_pid=$!
for _ in $(seq 100); do grep -q listening "$port_file" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^sandbox listening on //p' "$port_file" | head -n 1)

{
    echo "customer_external_id,name,email,conversation_id,subject,status"
    for i in $(seq 1 1500); do echo "C$i,Customer $i,c$i@example.com,T$i,Subject $i,open"; done
} >"$work/export.csv"

tmux new-session -d -s "$session" -x 120 -y 30
tmux send-keys -t "$session" "cd $work && KUSTOMER_API_KEY=k KUSTOMER_BASE_URL=$url \
$PWD/$binary import export.csv --mode single --max-retries 0 --rpm 6000; echo EXIT=\$?" Enter

sleep 4
mid=$(tmux capture-pane -p -t "$session" -S -)
for _ in $(seq 600); do
    tmux capture-pane -p -t "$session" | grep -q '^EXIT=' && break
    sleep 0.2
done
end=$(tmux capture-pane -p -t "$session" -S -)

echo "--- mid-run screen (its last 12 lines)"; printf "%s\n" "$mid" | sed "/^$/d" | tail -n 12
echo "--- final screen (its last 24 lines)"; printf "%s\n" "$end" | sed "/^$/d" | tail -n 24

bar='\[[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\]'
failures=0
# Mid-run: log lines were printed, and the bar is drawn once, on the last line written.
warnings=$(printf '%s\n' "$mid" | grep -c 'left pending' || true)
bars=$(printf '%s\n' "$mid" | grep -c "$bar" || true)
last=$(printf '%s\n' "$mid" | sed '/^$/d' | tail -n 1)
[ "$warnings" -ge 1 ] || { echo "FAIL: no log line was printed mid-run"; failures=1; }
[ "$bars" -eq 1 ] || { echo "FAIL: $bars frames of the bar on the mid-run screen"; failures=1; }
printf '%s\n' "$last" | grep -q "$bar" || { echo "FAIL: the bar is not the last line"; failures=1; }
# No log line carries a piece of the bar.
if printf '%s\n' "$mid" | grep 'left pending' | grep -q "$bar"; then
    echo "FAIL: a log line was written over the bar"; failures=1
fi
# The end: no frame left at all.
if printf '%s\n' "$end" | grep -q "$bar"; then
    echo "FAIL: a frame of the bar is left on the final screen"; failures=1
fi
printf '%s\n' "$end" | grep -q '^EXIT=' || { echo "FAIL: the import did not finish"; failures=1; }
[ "$failures" -eq 0 ] && echo "OK: no stale frame"
exit "$failures"
