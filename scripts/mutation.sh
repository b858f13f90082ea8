#!/usr/bin/env bash
# Mutation testing of the security-critical modules, bounded in time.
#
#   scripts/mutation.sh [--max-minutes N] [--jobs|--workers N] [--keep|--recheck] [MODULE...]
#   make mutation                       # the same, all modules, 20 minutes
#
# MODULE is a path under src/modelseal (e.g. license/verify.py); default: all
# of those below. Each module runs mutmut (3.x, from PyPI) in a scratch copy
# of the repository (.mutation/<module>/), against the tests that exercise it
# (mutmut then runs, per mutant, only the tests that reach the mutated
# function). The time budget is shared: each module gets an even share of
# what is left, so time a quick module does not use goes to the next; a
# module that runs out is stopped and its unchecked mutants are counted,
# never hidden (``--keep`` resumes them on the next run, with the tests as
# they are now; ``--recheck`` also re-runs the last run's survivors, "no
# tests" and timeouts first: after adding tests for them). Survivors, with
# their diffs, go to .mutation/report.md (this run's modules) and
# .mutation/<module>/report.md (kept until that module runs again); the
# summary is printed. On a shared machine, run it under ``nice`` with
# ``--workers 1``. Not part
# of the test command: it takes minutes. Run it before security-relevant
# changes land, and update tests/MUTATION.md.
#
# Exit status: 0 when it ran (survivors are reported, not failed on), 2 on a
# usage error, 1 when mutmut itself could not run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# module -> the tests that exercise it (space-separated pytest arguments).
# Deselected: the exhaustive byte-flip sweep (15 s a run; the sampled sweep
# and the focused tamper tests stay) and the multi-process tests (their
# children do not run the mutant, and each costs seconds).
SWEEP="--deselect=tests/sealed/test_tamper.py::test_every_single_byte_flip_is_detected_exhaustively"
PROCS="--deselect=tests/guard_core/test_guard.py::test_quota_is_exact_across_processes"
APPEND="--deselect=tests/guard/test_audit.py::test_two_processes_append_safely"
# The Guard's heartbeat, lease, renewal and revocation-list paths (#9) are
# tested beside the license server: the heartbeat and lease tests with a
# stand-in server in the same process, the revocation-list test with the app
# in-process (its SQLite case; the PostgreSQL case needs a database and runs
# the same Guard code).
HEARTBEAT="tests/controlplane/test_guard_heartbeat.py tests/controlplane/test_guard_leases.py"
CRL="tests/controlplane/test_api.py::test_a_signed_revocation_list_locks_an_air_gapped_guard[sqlite]"
AUDIT="tests/guard/test_audit.py tests/guard/test_audit_cli.py"
AUDIT+=" tests/guard/test_rule_audit_hash_covers_every_member.py tests/guard/test_rule_audit_key_and_report.py"
AUDIT+=" tests/guard/test_rule_audit_log_edges.py"
declare -A TESTS=(
    [license/verify.py]="tests/license"
    [license/keydelivery.py]="tests/license"
    [sealed/reader.py]="tests/sealed $SWEEP"
    [sealed/format.py]="tests/sealed $SWEEP"
    [guard/core.py]="tests/guard_core $PROCS $HEARTBEAT $CRL"
    [guard/audit.py]="$AUDIT $APPEND"
    [guard/unlock.py]="tests/guard/test_unlock.py tests/guard/test_rule_unlock_boundaries.py"
)
# smaller modules first: the time they leave over goes to the big ones at the end
ORDER=(sealed/format.py license/keydelivery.py license/verify.py guard/unlock.py
    sealed/reader.py guard/audit.py guard/core.py)

max_minutes=20
jobs=2
keep=0
recheck=0
modules=()
while (($#)); do
    case "$1" in
    --max-minutes) max_minutes="${2:?}"; shift 2 ;;
    --jobs | --workers) jobs="${2:?}"; shift 2 ;;
    --keep) keep=1; shift ;;
    --recheck) keep=1; recheck=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "mutation: unknown option $1" >&2; exit 2 ;;
    *)
        [[ -n "${TESTS[$1]:-}" ]] || {
            echo "mutation: no test selection for $1 (known: ${ORDER[*]})" >&2
            exit 2
        }
        modules+=("$1"); shift ;;
    esac
done
((${#modules[@]})) || modules=("${ORDER[@]}")
[[ "$max_minutes" =~ ^[0-9]+$ && "$max_minutes" -ge 1 ]] || {
    echo "mutation: --max-minutes must be a positive integer" >&2
    exit 2
}
[[ "$jobs" =~ ^[0-9]+$ && "$jobs" -ge 1 ]] || {
    echo "mutation: --jobs/--workers must be a positive integer" >&2
    exit 2
}

PY="${PY:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
PY="$(command -v "$PY")"
"$PY" -c 'import mutmut' 2>/dev/null || {
    echo "mutation: mutmut is not installed for $PY (pip install 'mutmut>=3.8,<4')" >&2
    exit 1
}

deadline=$((SECONDS + max_minutes * 60))
out="$ROOT/.mutation"
mkdir -p "$out"
report="$out/report.md"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain -- src tests 2>/dev/null | head -1)"
{
    echo "# Mutation run"
    echo
    echo "commit $commit${dirty:+ (with uncommitted changes)}, $(date -u +%Y-%m-%dT%H:%MZ),"
    echo "mutmut $("$PY" -c 'import importlib.metadata as m; print(m.version("mutmut"))'),"
    echo "budget ${max_minutes} min shared by ${#modules[@]} module(s), ${jobs} workers"
    echo
} >"$report"

SHOW_DIFFS='
import sys
from mutmut import __main__ as mm
for name in sys.stdin.read().split():
    diff = mm.get_diff_for_mutant(name, path=mm.find_mutant(name).path)
    print(f"`{name}`:\n```diff\n{diff.rstrip()}\n```")
'
summary=()
left=${#modules[@]}
for module in "${modules[@]}"; do
    per_module=$(((deadline - SECONDS) / left))
    left=$((left - 1))
    ((per_module >= 30)) || per_module=30
    name="${module//\//_}"
    work="$out/${name%.py}"
    if ((keep == 1)) && [[ -d "$work" ]]; then
        # resume with the tests as they are now (mutmut collects stats for new ones)
        rm -rf "$work/tests"
        cp -r tests "$work"/
    else
        rm -rf "$work"
        mkdir -p "$work"
        cp -r src tests "$work"/
        cp pyproject.toml "$work"/
        # The selection and pytest options are per module, so the config lives
        # in the scratch copy, never in the repository's pyproject.toml.
        read -r -a sel <<<"${TESTS[$module]}"
        {
            echo
            echo "[tool.mutmut]"
            echo 'source_paths = ["src/modelseal"]'
            echo "only_mutate = [\"src/modelseal/$module\"]"
            printf 'pytest_add_cli_args_test_selection = ['
            printf '"%s", ' "${sel[@]}"
            echo ']'
            # -x: one failing test kills a mutant; a fixed hypothesis seed keeps
            # a survivor a survivor from one run to the next.
            echo 'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0"]'
            echo 'use_git_change_detection = false'
        } >>"$work/pyproject.toml"
    fi
    echo "== $module: ${TESTS[$module]} (budget ${per_module} s)" >&2
    start=$SECONDS
    status=0
    : >"$work/run.log"
    # PYTHONPATH is dropped: the mutated copy, not a checkout's src, must be imported.
    mutmut_run() { # BUDGET_SECONDS [MUTANT...]
        (cd "$work" && env -u PYTHONPATH timeout --signal=INT --kill-after=30 "$1" \
            "$PY" -m mutmut run --max-children "$jobs" "${@:2}" >>"$work/run.log" 2>&1)
    }
    again=()
    if ((recheck == 1)) && [[ -f "$work/mutants/mutmut-stats.json" ]]; then
        mapfile -t again < <(cd "$work" && env -u PYTHONPATH "$PY" -m mutmut results --all true \
            2>/dev/null | grep -E ': (survived|no tests|timeout|suspicious)$' |
            sed -E 's/^ *//; s/: [a-z ]+$//')
    fi
    if ((${#again[@]})); then
        echo "   re-checking ${#again[@]} survivors of the last run" >&2
        mutmut_run "$per_module" "${again[@]}" || status=$?
    fi
    if ((status == 0)) && ((SECONDS - start < per_module - 10)); then
        mutmut_run $((per_module - (SECONDS - start))) || status=$?
    fi
    took=$((SECONDS - start))
    stopped=0
    ((status == 0)) || ((took < per_module)) || stopped=1
    if ((status != 0 && stopped == 0)); then
        echo "mutation: mutmut failed on $module (exit $status); see $work/run.log" >&2
        tail -20 "$work/run.log" >&2
        exit 1
    fi
    results="$(cd "$work" && env -u PYTHONPATH "$PY" -m mutmut results --all true 2>/dev/null)"
    count() { grep -c ": $1\$" <<<"$results" || true; }
    killed=$(count killed)
    survived=$(count survived)
    no_tests=$(count "no tests")
    timeouts=$(count timeout)
    suspicious=$(count suspicious)
    unchecked=$(count "not checked")
    total=$(grep -c ': ' <<<"$results" || true)
    line="$module: $total mutants, $killed killed, $survived survived, $no_tests no tests,"
    line+=" $timeouts timeout, $suspicious suspicious, $unchecked not checked (${took}s)"
    ((stopped == 0)) || line+=" [stopped at the budget]"
    summary+=("$line")
    {
        echo "## $module"
        echo
        echo "$line"
        echo
        grep -E ': (survived|no tests|timeout|suspicious)$' <<<"$results" | sed 's/^ */- /'
        echo
        # one process for all the diffs (``mutmut show`` per mutant costs a second each)
        grep -E ': (survived|no tests)$' <<<"$results" | sed -E 's/^ *//; s/: (survived|no tests)$//' |
            (cd "$work" && env -u PYTHONPATH "$PY" -c "$SHOW_DIFFS")
        echo
    } >"$work/report.md"
    # the module's own copy survives a later run of other modules
    cat "$work/report.md" >>"$report"
done

echo >&2
printf '%s\n' "${summary[@]}"
echo "survivors and their diffs: ${report#"$ROOT"/}" >&2
