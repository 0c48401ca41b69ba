#!/usr/bin/env bash
# Makes the fixtures of tests/fixtures/earlier-release/: checkpoints written by an earlier
# release of kustomer-import (by default d418cef, the release before issue 16), each
# interrupted with SIGKILL in one intermediate state, together with the records the sandbox
# had made at that moment. tests/it/earlier_release.rs resumes each one with the current
# code and asserts that it ends exactly as the earlier release would have ended it.
#
# Usage:
#   scripts/make-earlier-release-checkpoints.sh [--commit REV | --binary PATH] [--out DIR]
#                                               [STATE...]
#
#   --commit REV   the release to build, in a temporary git worktree (default d418cef)
#   --binary PATH  use this kustomer-import binary instead of building one
#   --out DIR      where the fixtures go (default tests/fixtures/earlier-release)
#   STATE...       which fixtures to make (default all): customer_sent conversation_sent
#                  bulk_queued bulk_submitting bulk_lost
#
# Each state is produced for real by the earlier binary, with its sandbox's faults and a
# SIGKILL once the checkpoint and the sandbox's records say the state is reached:
#   customer_sent      single mode; every create is written, then left unanswered, and the
#                      sandbox lets 3 requests through: 4 rows are killed in customer_sent,
#                      3 of their customers made (answers lost), 1 refused with a 429.
#   conversation_sent  the same, after a first run (--limit 4) made 4 rows done: 4 rows
#                      killed in conversation_sent, 3 of their conversations made.
#   bulk_queued        a rehearsal (--sandbox, bulk mode) killed after its customers job was
#                      recorded queued and had run, before it was polled.
#   bulk_submitting    bulk mode; the customers job's submit is taken and never answered:
#                      killed with the job `submitting`, after the job ran.
#   bulk_lost          bulk mode; the customers job's submit answer is dropped: killed while
#                      its rows wait --bulk-lost-wait, the job `lost`, after the job ran.
# The script checks each state with sqlite queries (and tries again, 3 times at most, when
# a kill came too early or too late) and writes it into the fixture's README.md. Ids differ
# from one making to the next; the states do not.
#
# A fixture directory holds checkpoint.sqlite (its WAL checkpointed into it: the same
# content the killed run left, in one file), sandbox.jsonl (the sandbox's records file),
# export.csv (the input) and README.md (how it was made, what it holds). Needs Linux (it
# reads /proc to know a pid is the binary's), git and cargo (unless --binary), sqlite3 (with
# its JSON functions) and curl. Everything runs on 127.0.0.1; every process it starts it
# stops by its pid. A failed making keeps its runs' logs and says where.

set -euo pipefail

readonly ALL_STATES=(customer_sent conversation_sent bulk_queued bulk_submitting bulk_lost)
# The standalone sandbox takes any token; the script checks that no fixture file holds it.
readonly KEY="fixture-key-never-stored"
readonly ATTEMPTS=3

die() {
    echo "make-earlier-release-checkpoints: $*" >&2
    exit 1
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
commit=d418cef
binary=
out="$repo/tests/fixtures/earlier-release"
states=()
while (($#)); do
    case "$1" in
    --commit) commit=${2:?--commit needs a revision}; shift 2 ;;
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) states+=("$1"); shift ;;
    esac
done
((${#states[@]})) || states=("${ALL_STATES[@]}")
for state in "${states[@]}"; do
    [[ " ${ALL_STATES[*]} " == *" $state "* ]] || die "no such state: $state (${ALL_STATES[*]})"
done
for tool in sqlite3 curl; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/earlier-release.XXXXXX")
worktree=
started=()
# Stops every process this script started and has not stopped yet, by its pid.
stop_started() {
    local pid
    for pid in "${started[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    started=()
}
cleanup() {
    local status=$?
    stop_started
    if [[ -n $worktree ]]; then
        git -C "$repo" worktree remove --force "$worktree" || true
    fi
    if ((status)); then
        echo "make-earlier-release-checkpoints: the runs' logs are kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# --- the earlier binary -------------------------------------------------------------------

if [[ -z $binary ]]; then
    worktree="$work/release"
    git -C "$repo" worktree add --quiet --detach "$worktree" "$commit"
    echo "building $commit in $worktree" >&2
    (cd "$worktree" && cargo build --locked --quiet)
    binary="$worktree/target/debug/kustomer-import"
fi
[[ -x $binary ]] || die "no binary at $binary"
binary=$(readlink -f "$binary")
# Run by its name, so that the checkpoint's runs table records `kustomer-import import ...`.
bindir="$work/bin"
mkdir -p "$bindir"
ln -s "$binary" "$bindir/kustomer-import"
version=$("$binary" --version)

# --- processes ----------------------------------------------------------------------------

forget() { # PID: no longer running, not to be killed at exit
    local kept=() pid
    for pid in "${started[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
    started=("${kept[@]+"${kept[@]}"}")
}

# Waits up to SECS for COMMAND to succeed.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || { echo "waited $secs s for $what" >&2; return 1; }
        sleep 0.01
    done
}

# The environment of the earlier binary's runs: nothing of this shell's but PATH (and the
# key: the standalone sandbox takes any). Used as `(cd DIR && exec "${clean_env[@]}" ...) &`,
# so that $! is the binary's own pid.
clean_env=(env -i PATH="$bindir:$PATH" KUSTOMER_API_KEY="$KEY")

# Whether PID is the earlier binary itself (once the subshell has exec'd it), not a shell
# that would outlive a kill.
is_binary() {
    wait_until 10 "process $1 to be the binary" runs_binary "$1"
}

runs_binary() {
    [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$binary" ]]
}

steps=() # the commands that made the fixture, for its README

# Starts `kustomer-import sandbox --records sandbox.jsonl ARGS...` in DIR; sets sandbox_pid
# and sandbox_url.
start_sandbox() {
    local dir=$1
    shift
    steps+=("kustomer-import sandbox --records sandbox.jsonl${*:+ $*}")
    (cd "$dir" && exec "${clean_env[@]}" kustomer-import sandbox --records sandbox.jsonl "$@" \
        >sandbox.out 2>sandbox.log) &
    sandbox_pid=$!
    started+=("$sandbox_pid")
    is_binary "$sandbox_pid" || return 1
    wait_until 20 "the sandbox to listen" grep -q '^sandbox listening on ' "$dir/sandbox.out" ||
        return 1
    sandbox_url=$(sed -n 's/^sandbox listening on //p' "$dir/sandbox.out")
}

stop_sandbox() {
    kill -TERM "$sandbox_pid"
    wait "$sandbox_pid" || true
    forget "$sandbox_pid"
}

# Runs `kustomer-import import ARGS...` in DIR to its end; its exit code must be CODE.
run_import() {
    local dir=$1 code=$2 status=0
    shift 2
    steps+=("kustomer-import import $* (exit $code)")
    (cd "$dir" && exec "${clean_env[@]}" kustomer-import import "$@" >>import.out 2>>import.log) ||
        status=$?
    ((status == code)) || die "import $* exited $status, not $code: see $dir/import.log"
}

# Starts `kustomer-import import ARGS...` in DIR; sets import_pid.
start_import() {
    local dir=$1
    shift
    steps+=("kustomer-import import $*")
    (cd "$dir" && exec "${clean_env[@]}" kustomer-import import "$@" >>import.out 2>>import.log) &
    import_pid=$!
    started+=("$import_pid")
    is_binary "$import_pid" || return 1
}

kill_import() {
    steps+=("  ... killed with SIGKILL once $1")
    kill -KILL "$import_pid"
    wait "$import_pid" 2>/dev/null || true
    forget "$import_pid"
}

# --- what a state is made of --------------------------------------------------------------

# One value from DIR's checkpoint (empty while it cannot be read).
q() {
    sqlite3 -readonly "$1/checkpoint.sqlite" "$2" 2>/dev/null || true
}

# Records of KIND (customer, conversation) in the records file JOURNAL.
records() {
    local count
    count=$(grep -c "^{\"$2\":" "$1" 2>/dev/null) || true
    echo "${count:-0}"
}

# How many requests to ROUTE the standalone sandbox answered with STATUS.
answered() {
    curl -sf "$sandbox_url/__stats" >"$work/stats.json" || { echo 0; return; }
    sqlite3 :memory: "SELECT coalesce(json_extract(readfile('$work/stats.json'),
        '\$.requests.\"$1\".\"$2\"'), 0)"
}

# An export of customers C<c> with conversations T<c>-<k>, one row per "c-k" in the order
# given, then a row that local validation refuses (not an email): one failed row per state.
write_export() {
    local dir=$1 pair
    shift
    {
        echo "customer_external_id,name,email,conversation_id,subject,status"
        for pair in "$@"; do
            echo "C${pair%-*},Customer ${pair%-*},c${pair%-*}@example.com,T$pair,Subject $pair,open"
        done
        echo "C99,Customer 99,not an email,T99-0,Refused here,open"
    } >"$dir/export.csv"
}

# "c-0 c-1" for customers 0 to N-1.
two_each() {
    local c
    for ((c = 0; c < $1; c++)); do printf '%s ' "$c-0" "$c-1"; done
}

# The state of DIR (checkpoint.sqlite and sandbox.jsonl), in words that do not depend on
# ids, ports or times: what the script checks and the README shows.
describe() {
    local dir=$1 journal="$1/sandbox.jsonl"
    # The records file as one JSON array, for the checkpoint's intents to be compared with.
    sed -e '1s/^/[/' -e '$!s/$/,/' -e '$s/$/]/' "$journal" >"$work/records.json"
    [[ -s $work/records.json ]] || echo '[]' >"$work/records.json"
    sqlite3 -readonly "$dir/checkpoint.sqlite" <<SQL
CREATE TEMP TABLE made AS
    SELECT coalesce(json_extract(value, '\$.customer.externalId'),
                    json_extract(value, '\$.conversation.externalId')) AS external_id,
           CASE WHEN json_extract(value, '\$.customer') IS NULL THEN 'conversation'
                ELSE 'customer' END AS kind
    FROM json_each(readfile('$work/records.json'));
SELECT 'target: ' || CASE WHEN value = 'sandbox' THEN 'sandbox (a rehearsal)'
                          ELSE 'a standalone sandbox''s URL' END FROM meta WHERE key = 'target';
SELECT 'runs: ' || count(*) || ', ' || sum(ended_at IS NULL) || ' not ended' FROM runs;
SELECT 'rows: ' || group_concat(state || ' ' || n, ', ')
    FROM (SELECT state, count(*) AS n FROM rows GROUP BY state ORDER BY state);
SELECT 'customers: ' || coalesce(group_concat(state || ' ' || n, ', '), 'none')
    FROM (SELECT state, count(*) AS n FROM customers GROUP BY state ORDER BY state);
SELECT 'customer intents (sent) the sandbox made: ' || count(made.external_id) || ' of '
       || count(*)
    FROM customers LEFT JOIN made ON made.kind = 'customer'
                                 AND made.external_id = customers.external_id
    WHERE customers.state = 'sent';
SELECT 'conversation intents (conversation_sent) the sandbox made: '
       || count(made.external_id) || ' of ' || count(*)
    FROM rows LEFT JOIN made ON made.kind = 'conversation'
                            AND made.external_id = rows.conversation_external_id
    WHERE rows.state = 'conversation_sent';
SELECT 'bulk jobs: ' || coalesce(group_concat(kind || ' ' || state || ' (' || items
       || ' items, ' || CASE WHEN job_id IS NULL THEN 'no job id' ELSE 'its job id' END
       || ')', ', '), 'none')
    FROM (SELECT * FROM bulk_jobs ORDER BY id);
SELECT 'the sandbox holds: ' || sum(kind = 'customer') || ' customers, '
       || sum(kind = 'conversation') || ' conversations' FROM made;
SQL
}

# --- the states ---------------------------------------------------------------------------

# Every create is written, then never answered; the sandbox lets 3 requests in 10 minutes
# through. Four rows start (--concurrency 4, four customers): three creates are made and
# hang, the fourth is refused with a 429 and waits for the window. Killed there.
make_customer_sent() {
    local dir=$1
    write_export "$dir" $(two_each 6)
    start_sandbox "$dir" --hang-after-write-rate 1 --rpm 3 --rate-window 600 || return 1
    start_import "$dir" export.csv --checkpoint checkpoint.sqlite --base-url "$sandbox_url" \
        --no-progress --mode single --concurrency 4 --timeout 600 || return 1
    wait_until 60 "four customer intents, three customers made and a 429" customer_sent_reached "$dir" || return 1
    kill_import "four rows are in customer_sent, three customers made and one create refused with a 429"
    stop_sandbox
}

customer_sent_reached() {
    [[ $(q "$1" "SELECT count(*) FROM rows WHERE state = 'customer_sent'") == 4 &&
        $(q "$1" "SELECT count(*) FROM rows WHERE state = 'failed'") == 1 &&
        $(records "$1/sandbox.jsonl" customer) == 3 &&
        $(answered "POST /v1/customers" 429) == 1 ]]
}

expected_customer_sent="target: a standalone sandbox's URL
runs: 1, 1 not ended
rows: customer_sent 4, failed 1, pending 8
customers: sent 4
customer intents (sent) the sandbox made: 3 of 4
conversation intents (conversation_sent) the sandbox made: 0 of 0
bulk jobs: none
the sandbox holds: 3 customers, 0 conversations"

# A first run (--limit 4) makes four rows done, one per customer C0-C3; the sandbox then
# restarts on the same port and records file with the faults of customer_sent. The second
# run's first four rows are the second conversations of C0-C3, whose customers it knows:
# three conversation creates are made and hang, the fourth gets a 429. Killed there.
make_conversation_sent() {
    local dir=$1
    write_export "$dir" 0-0 1-0 2-0 3-0 0-1 1-1 2-1 3-1 4-0 4-1 5-0 5-1
    start_sandbox "$dir" || return 1
    run_import "$dir" 0 export.csv --checkpoint checkpoint.sqlite --base-url "$sandbox_url" \
        --no-progress --mode single --limit 4
    local port=${sandbox_url##*:}
    stop_sandbox
    start_sandbox "$dir" --port "$port" --hang-after-write-rate 1 --rpm 3 --rate-window 600 || return 1
    start_import "$dir" export.csv --checkpoint checkpoint.sqlite --base-url "$sandbox_url" \
        --no-progress --mode single --concurrency 4 --timeout 600 || return 1
    wait_until 60 "four conversation intents, three made and a 429" conversation_sent_reached "$dir" || return 1
    kill_import "four rows are in conversation_sent, three conversations made and one create refused with a 429"
    stop_sandbox
}

conversation_sent_reached() {
    [[ $(q "$1" "SELECT count(*) FROM rows WHERE state = 'conversation_sent'") == 4 &&
        $(q "$1" "SELECT count(*) FROM rows WHERE state = 'failed'") == 1 &&
        $(records "$1/sandbox.jsonl" conversation) == 7 &&
        $(answered "POST /v1/conversations" 429) == 1 ]]
}

expected_conversation_sent="target: a standalone sandbox's URL
runs: 2, 1 not ended
rows: conversation_sent 4, done 4, failed 1, pending 4
customers: created 4
customer intents (sent) the sandbox made: 0 of 0
conversation intents (conversation_sent) the sandbox made: 3 of 4
bulk jobs: none
the sandbox holds: 4 customers, 7 conversations"

# A rehearsal in bulk mode: its customers job (10 customers) is recorded queued, the
# built-in sandbox runs it half a second after the submit, and the run would poll it a
# second after. Killed in between: the job ran, and the checkpoint still has it queued.
# The built-in sandbox keeps records, not jobs: the job dies with the process.
make_bulk_queued() {
    local dir=$1
    write_export "$dir" $(two_each 10)
    start_import "$dir" export.csv --sandbox --checkpoint checkpoint.sqlite --no-progress \
        --mode bulk || return 1
    wait_until 60 "a queued customers job that has run" bulk_queued_reached "$dir" || return 1
    kill_import "the customers job is queued in the checkpoint and the sandbox has run it"
    mv "$dir/checkpoint.sqlite.sandbox.jsonl" "$dir/sandbox.jsonl"
}

bulk_queued_reached() {
    [[ $(q "$1" "SELECT count(*) FROM bulk_jobs WHERE state = 'queued'") == 1 &&
        $(records "$1/checkpoint.sqlite.sandbox.jsonl" customer) == 10 ]]
}

expected_bulk_queued="target: sandbox (a rehearsal)
runs: 1, 1 not ended
rows: customer_sent 10, failed 1, pending 10
customers: sent 10
customer intents (sent) the sandbox made: 10 of 10
conversation intents (conversation_sent) the sandbox made: 0 of 0
bulk jobs: customers queued (10 items, its job id)
the sandbox holds: 10 customers, 0 conversations"

# Bulk mode; the customers job's submit is taken and its answer never comes. With the
# sandbox holding the connection open (a hang), the run keeps the job `submitting` while it
# waits out --timeout 600; with the connection dropped, it records the job `lost` and waits
# --bulk-lost-wait 600 before it looks its rows up. Killed during either wait, after the job
# ran (0.1 s after the submit).
make_bulk_unanswered() {
    local dir=$1 fault=$2 state=$3
    shift 3
    write_export "$dir" $(two_each 10)
    start_sandbox "$dir" "$fault" 1 --bulk-delay-ms 100 || return 1
    start_import "$dir" export.csv --checkpoint checkpoint.sqlite --base-url "$sandbox_url" \
        --no-progress --mode bulk "$@" || return 1
    wait_until 60 "a $state customers job that has run" bulk_job_reached "$dir" "$state" ||
        return 1
    kill_import "the customers job is $state in the checkpoint and the sandbox has run it"
    stop_sandbox
}

make_bulk_submitting() {
    make_bulk_unanswered "$1" --hang-after-write-rate submitting --timeout 600
}

make_bulk_lost() {
    make_bulk_unanswered "$1" --drop-after-write-rate lost --bulk-lost-wait 600
}

bulk_job_reached() {
    [[ $(q "$1" "SELECT count(*) FROM bulk_jobs WHERE state = '$2'") == 1 &&
        $(records "$1/sandbox.jsonl" customer) == 10 ]]
}

# What the two unanswered submits leave: the same, but for the job's state.
expected_unanswered() {
    echo "target: a standalone sandbox's URL
runs: 1, 1 not ended
rows: customer_sent 10, failed 1, pending 10
customers: sent 10
customer intents (sent) the sandbox made: 10 of 10
conversation intents (conversation_sent) the sandbox made: 0 of 0
bulk jobs: customers $1 (10 items, no job id)
the sandbox holds: 10 customers, 0 conversations"
}
expected_bulk_submitting=$(expected_unanswered submitting)
expected_bulk_lost=$(expected_unanswered lost)

# --- making, checking, writing ------------------------------------------------------------

# Folds the WAL the killed run left into checkpoint.sqlite (what its next open would do),
# so that the fixture is one file.
fold_wal() {
    local dir=$1 result
    result=$(sqlite3 "$dir/checkpoint.sqlite" 'PRAGMA wal_checkpoint(TRUNCATE);')
    [[ $result == 0\|* ]] || die "the WAL of $dir could not be checkpointed: $result"
    [[ ! -s $dir/checkpoint.sqlite-wal ]] || die "$dir still has a WAL"
    rm -f "$dir/checkpoint.sqlite-wal" "$dir/checkpoint.sqlite-shm"
    [[ $(sqlite3 -readonly "$dir/checkpoint.sqlite" 'PRAGMA integrity_check;') == ok ]] ||
        die "$dir/checkpoint.sqlite fails SQLite's integrity check"
}

write_readme() {
    local state=$1 dir=$2 step
    {
        echo "# Fixture \`$state\`: a checkpoint of the earlier release, killed mid-run"
        echo
        echo "Made by \`scripts/make-earlier-release-checkpoints.sh $state\` with"
        echo "\`$version\`. Remake it with the same command; the"
        echo "script checks that the state below is reached again (ids differ, the state does not)."
        echo "Resumed by \`tests/it/earlier_release.rs\`; see ../README.md."
        echo
        echo "## How it was made"
        echo
        echo "In an empty directory, with \`export.csv\` as here:"
        echo
        echo '```sh'
        for step in "${steps[@]}"; do echo "$step"; done
        echo '```'
        echo
        if [[ $sandbox_url_seen == http* ]]; then
            echo "\`\$URL\` stands for the standalone sandbox's address, \`http://127.0.0.1:\$PORT\`"
            echo "(\`\$PORT\`: an ephemeral port, the same in every step)."
        else
            echo "A rehearsal: the built-in sandbox kept its records in"
            echo "\`checkpoint.sqlite.sandbox.jsonl\`, renamed \`sandbox.jsonl\` here."
        fi
        echo
        echo "## What it holds (checked by the script)"
        echo
        echo '```'
        describe "$dir"
        echo '```'
        echo
        echo "- \`checkpoint.sqlite\`: the checkpoint as SIGKILL left it, its WAL folded in"
        echo "  (\`PRAGMA wal_checkpoint(TRUNCATE)\`), so no \`-wal\` file is needed."
        echo "- \`sandbox.jsonl\`: the sandbox's records file at that moment (the records it had"
        echo "  made, answered or not); a sandbox started on it holds them."
        echo "- \`export.csv\`: the input: customers \`C<n>\` with conversations \`T<n>-<k>\`, and"
        echo "  one row local validation refuses (line $(wc -l <"$dir/export.csv"), not an email)."
    } | sed -e "s|$sandbox_url_seen|\$URL|g" -e "s|--port ${sandbox_url_seen##*:}|--port \$PORT|g" \
        >"$dir/README.md"
}

# Makes STATE in a fresh directory until it checks out, then writes it to the fixtures.
make_state() {
    local state=$1 attempt dir expected actual
    expected="expected_$state"
    for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
        dir="$work/$state.$attempt"
        mkdir -p "$dir"
        steps=()
        sandbox_url=
        echo "making $state (attempt $attempt)" >&2
        if ! "make_$state" "$dir"; then
            echo "  $state was not reached: see $dir" >&2
            stop_started
            continue
        fi
        sandbox_url_seen=${sandbox_url:-no-url-was-used}
        fold_wal "$dir"
        actual=$(describe "$dir")
        if [[ $actual == "${!expected}" ]]; then
            install_fixture "$state" "$dir"
            return
        fi
        echo "  the kill came at the wrong moment; the checkpoint holds:" >&2
        sed 's/^/    /' <<<"$actual" >&2
    done
    die "$state: not reached in $ATTEMPTS attempts (logs in $dir)"
}

install_fixture() {
    local state=$1 dir=$2 target="$out/$1"
    write_readme "$state" "$dir"
    if grep -rqF "$KEY" "$dir/checkpoint.sqlite" "$dir/sandbox.jsonl" "$dir/README.md"; then
        die "$state: a fixture file holds the API key"
    fi
    rm -rf "$target"
    mkdir -p "$target"
    cp "$dir/checkpoint.sqlite" "$dir/sandbox.jsonl" "$dir/export.csv" "$dir/README.md" "$target/"
    chmod 0644 "$target"/*
    echo "  wrote $target" >&2
}

mkdir -p "$out"
for state in "${states[@]}"; do
    make_state "$state"
done
