#!/bin/sh
# /init of the VM lane's initramfs (busybox sh, PID 1). It loads the
# modules, binds the edu device to vfio-pci, runs gmemscope and the unit
# tests, prints every result as a "GMS| " line between the BEGIN and END
# markers on the serial console, and powers off. tests/vm/run.sh reads
# those lines from the console log.
#
# No `set -e`: PID 1 exiting panics the kernel; every failure is printed as
# a FAIL line instead and the lane always reaches poweroff.

/bin/busybox --install -s /bin
# /usr/bin first: its setpriv (util-linux, see run.sh) shadows busybox's,
# which lacks --reuid and --bounding-set.
export PATH=/usr/bin:/bin
export HOME=/root

mkdir -p /proc /sys /dev /tmp /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# /tmp stays on the initramfs itself (already a writable tmpfs): a tmpfs
# mounted there would hide binaries of a checkout under /tmp.
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t securityfs securityfs /sys/kernel/security
mount -t debugfs debugfs /sys/kernel/debug
# Only emerg/alert/crit on the console: other printks would land in the
# middle of result lines.
echo 3 >/proc/sys/kernel/printk

TEST_TIMEOUT_S=$(cat /etc/gms/test-timeout)
CALIBRATION_REF_S=$(cat /etc/gms/calibration-ref)
MAX_FACTOR=$(cat /etc/gms/max-factor)
# The row of tests/vm/kernels.tsv this guest boots, and what that kernel is
# known to answer where kernels differ (read by the tests that depend on it).
GMS_KERNEL_ROW=$(cat /etc/gms/kernel-name)
GMS_KERNEL_FACTS=$(cat /etc/gms/kernel-facts)
export GMS_KERNEL_ROW GMS_KERNEL_FACTS
NPASS=0 NSKIP=0 NFAIL=0

say() { echo "GMS| $*"; }

# result STATUS WHAT [DETAIL]: one line the host counts (PASS, SKIP, FAIL).
result() {
    case $1 in
        PASS) NPASS=$((NPASS + 1)) ;;
        SKIP) NSKIP=$((NSKIP + 1)) ;;
        *) NFAIL=$((NFAIL + 1)) ;;
    esac
    say "$1 $2${3:+ -- $3}"
}

# Prints a file as indented result lines.
show() { sed 's/^/GMS|     /' "$1"; }

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# running WHAT [LIMIT]: what the guest starts now, for the host, which
# names it if the lane stops before its result (and, with a LIMIT in
# seconds, waits that long for the console to speak again).
running() { say "running: $1${2:+ (limit ${2}s)}"; }

# The lane's speed: a fixed CPU loop timed at /init start against what it
# takes in a guest on an idle development machine (CALIBRATION_REF_S,
# tests/vm/run.sh). GMS_TIME_FACTOR (at least 1) multiplies every limit
# inside: each test's (TEST_LIMIT_S) and the waits the tests make
# (gms::test::scaled, tests/unit/helpers.hpp). The host's load changes
# while the lane runs, so run_test measures again when the last
# measurement is RECALIBRATE_S old, and says so when the factor moved.
# Past MAX_FACTOR the lane says that it runs too slowly for its timings to
# mean much (a SLOW line the host repeats), and still runs with those
# limits: a test that then times out says so with the factor.
RECALIBRATE_S=120
calibrate() {
    t0=$(uptime_s)
    awk 'BEGIN { for (i = 0; i < 200000; i++) s += i % 7 }'
    CALIBRATED_AT=$(uptime_s)
    took=$(awk -v t0="$t0" '{ printf "%.2f", $1 - t0 }' /proc/uptime)
    was=${GMS_TIME_FACTOR:-}
    GMS_TIME_FACTOR=$(awk -v t="$took" -v ref="$CALIBRATION_REF_S" \
        'BEGIN { f = t / ref; if (f < 1) f = 1; printf "%.1f", f }')
    export GMS_TIME_FACTOR
    [ "$GMS_TIME_FACTOR" = "$was" ] && return
    TEST_LIMIT_S=$(awk -v f="$GMS_TIME_FACTOR" -v t="$TEST_TIMEOUT_S" 'BEGIN { printf "%d", t * f + 0.999 }')
    say "speed: calibration loop ${took}s (${CALIBRATION_REF_S}s on an idle machine), time factor $GMS_TIME_FACTOR${was:+ (was $was)}; each test ${TEST_LIMIT_S}s at most"
    if awk -v f="$GMS_TIME_FACTOR" -v m="$MAX_FACTOR" 'BEGIN { exit !(f > m) }'; then
        say "SLOW time factor $GMS_TIME_FACTOR is past $MAX_FACTOR (GMS_VM_MAX_FACTOR): the host is too loaded for the lane's timings to mean much"
    fi
}

load_modules() {
    for m in $(cat /modules/order); do
        if out=$(insmod "/modules/$m.ko" 2>&1); then
            result PASS "module $m"
        else
            result FAIL "module $m" "$out"
        fi
    done
    [ -c /dev/udmabuf ] && say "udmabuf: built in, /dev/udmabuf present"
    [ -c /dev/kvm ] && say "kvm: /dev/kvm present"
}

# The edu device (1234:11e8) to vfio-pci through driver_override, which
# makes the PCI core match only that driver on the next probe.
bind_edu() {
    for d in /sys/bus/pci/devices/*; do
        [ "$(cat "$d/vendor")" = 0x1234 ] && [ "$(cat "$d/device")" = 0x11e8 ] || continue
        bdf=${d##*/}
        [ -e "$d/driver" ] && echo "$bdf" >"$d/driver/unbind"
        echo vfio-pci >"$d/driver_override"
        echo "$bdf" >/sys/bus/pci/drivers_probe
        driver=$(basename "$(readlink "$d/driver")" 2>/dev/null)
        group=$(basename "$(readlink "$d/iommu_group")" 2>/dev/null)
        say "edu $bdf driver=${driver:-none} iommu_group=${group:-none}"
        if [ "$driver" = vfio-pci ] && [ -c "/dev/vfio/$group" ]; then
            result PASS "vfio edu bound to vfio-pci" "/dev/vfio/$group"
        else
            result FAIL "vfio edu bound to vfio-pci" "driver=${driver:-none} /dev/vfio: $(ls /dev/vfio 2>&1 | tr '\n' ' ')"
        fi
        return
    done
    result FAIL "vfio edu bound to vfio-pci" "no PCI device 1234:11e8"
}

run_hooks() {
    running "stage: hooks"
    /bin/gmemscope hooks --json >/tmp/hooks.json 2>/tmp/hooks.err
    rc=$?
    say "hooks --json:"
    show /tmp/hooks.json
    show /tmp/hooks.err
    [ $rc = 0 ] && result PASS "gmemscope hooks --json" || result FAIL "gmemscope hooks --json" "exit $rc"

    /bin/gmemscope hooks >/tmp/hooks.txt 2>&1
    rc=$?
    say "hooks:"
    show /tmp/hooks.txt
    [ $rc = 0 ] && result PASS "gmemscope hooks" || result FAIL "gmemscope hooks" "exit $rc"
    # The reason this lane exists: the precise tier and LSM load here.
    for kind in fentry fexit lsm; do
        line=$(grep -E "^  $kind +" /tmp/hooks.txt)
        case $line in
            *" loads") result PASS "program type $kind loads" ;;
            *) result FAIL "program type $kind loads" "${line:-not listed}" ;;
        esac
    done
}

# The precise tier's self-test (every hook, the built-in workload as
# trigger), and the dma scenario recorded and explained: the output the
# lane exists to show. The JSON goes to the host for schema validation.
run_selftest() {
    running "stage: hooks --selftest"
    /bin/gmemscope hooks --selftest >/tmp/selftest.txt 2>&1
    rc=$?
    say "hooks --selftest:"
    show /tmp/selftest.txt
    [ $rc = 0 ] && result PASS "gmemscope hooks --selftest" || result FAIL "gmemscope hooks --selftest" "exit $rc"
    /bin/gmemscope --json hooks --selftest >/tmp/selftest.json 2>/tmp/selftest.err
    say "selftest --json:"
    show /tmp/selftest.json
    show /tmp/selftest.err
}

# Enforcement loads (lsm/file_ioctl); on failure, the verifier's last words.
run_enforce() {
    running "stage: enforce -d 1"
    /bin/gmemscope -v enforce -d 1 >/tmp/enforce.txt 2>&1
    rc=$?
    if [ $rc = 0 ]; then
        result PASS "gmemscope enforce -d 1 (lsm/file_ioctl loads and attaches)"
    else
        result FAIL "gmemscope enforce -d 1 (lsm/file_ioctl loads and attaches)" "exit $rc"
        grep -v "^libbpf: \(elf\|sec\|map\|CO-RE\)" /tmp/enforce.txt | tail -n 40 | sed 's/^/GMS|     /'
    fi
}

run_dma_story() {
    running "stage: dma scenario"
    /bin/gmemscope record -o /tmp/dma.rec -- /bin/gmemscope stress dma pages=16 >/tmp/dma.txt 2>&1
    rc=$?
    /bin/gmemscope explain -i /tmp/dma.rec --gfn 0x40003 >>/tmp/dma.txt 2>&1
    /bin/gmemscope report -i /tmp/dma.rec >>/tmp/dma.txt 2>&1
    say "dma scenario, recorded and explained:"
    show /tmp/dma.txt
    if [ $rc = 0 ] && grep -q "VFIO pinned" /tmp/dma.txt && grep -q "DMA-mapped and pinned" /tmp/dma.txt; then
        result PASS "explain ties the VFIO pins of slot 1's buffer to its gfns"
    else
        result FAIL "explain ties the VFIO pins of slot 1's buffer to its gfns" "record exit $rc"
    fi
}

# Where the kernel has iommufd (of the lane's rows, the conversion kernel,
# which also has private memory): the private scenario recorded,
# explained at its first private gfn, and reported.
run_private_story() {
    [ -e /dev/iommu ] || return 0
    running "stage: private scenario"
    /bin/gmemscope record -o /tmp/private.rec -- \
        /bin/gmemscope stress private pages=32 private_pages=8 punch_pages=2 poison=0 >/tmp/private.txt 2>&1
    rc=$?
    /bin/gmemscope explain -i /tmp/private.rec --gfn 0x40000 >>/tmp/private.txt 2>&1
    /bin/gmemscope report -i /tmp/private.rec >>/tmp/private.txt 2>&1
    /bin/gmemscope stress --steps private pages=32 private_pages=8 poison=0 hold_ms=120000 2>/tmp/held.txt &
    held=$!
    for _ in $(seq 60); do grep -q "holding for" /tmp/held.txt && break; sleep 0.5; done
    t0=$(cut -d' ' -f1 /proc/uptime)
    /bin/gmemscope audit >/tmp/audit.txt 2>&1
    cat /tmp/audit.txt >>/tmp/private.txt
    if grep -q "was refused" /tmp/audit.txt; then   # the end of the refused program's verifier log
        /bin/gmemscope -v audit 2>&1 | grep -B25 -- "-- END PROG LOAD LOG --" | tail -n 26 >>/tmp/private.txt
    fi
    echo "audit took $(awk -v t0="$t0" '{ printf "%.1f s", $1 - t0 }' /proc/uptime)" >>/tmp/private.txt
    kill $held 2>/dev/null; wait $held 2>/dev/null
    say "private scenario, recorded and explained, and audited while held:"
    show /tmp/private.txt
    [ $rc = 0 ] && result PASS "private scenario recorded" || result FAIL "private scenario recorded" "record exit $rc"
}

# The text of the first WARN("SKIPPED: ...") in compact output, which
# quotes it and may run over several lines.
skip_reason() {
    awk -v q="'" '/SKIPPED: / {
        s = $0; sub(/.*SKIPPED: /, "", s); sub(/[ \t]+$/, "", s)
        while (substr(s, length(s)) != q && (getline line) > 0) {
            sub(/[ \t]+$/, "", line); s = s " " line
        }
        sub(" *" q "$", "", s); print s; exit }' "$1"
}

# run_test NAME: one test case in its own process (a crash or a hang costs
# one test), at most TEST_LIMIT_S. Catch2 takes the name from a file (-f),
# where `\` escapes the characters its test-spec syntax gives a meaning.
# Sets T_STATUS (PASS, SKIP, FAIL) and T_DETAIL; the output is in
# /tmp/one.out.
run_test() {
    printf '%s\n' "$1" | sed 's/[][\\,]/\\&/g' >/tmp/one.spec
    awk -v t="$CALIBRATED_AT" -v r="$RECALIBRATE_S" '{ exit !($1 - t >= r) }' /proc/uptime && calibrate
    start=$(uptime_s)
    timeout "$TEST_LIMIT_S" /bin/unit_tests -f /tmp/one.spec -r compact >/tmp/one.out 2>&1 </dev/null
    rc=$?
    took=$(awk -v t0="$start" '{ printf "%.1fs", $1 - t0 }' /proc/uptime)
    if [ $rc != 0 ] || grep -q "^No tests ran" /tmp/one.out; then
        T_STATUS=FAIL
        [ $rc = 143 ] && T_DETAIL="timed out after ${TEST_LIMIT_S}s (time factor $GMS_TIME_FACTOR)" ||
            T_DETAIL="exit $rc, $took"
    elif grep -q "SKIPPED: " /tmp/one.out; then
        T_STATUS=SKIP T_DETAIL=$(skip_reason /tmp/one.out)
    else
        T_STATUS=PASS T_DETAIL=$took
    fi
}

# check_left: the lane's check between tests (tests/unit/test_lane.cpp):
# finds what of gmemscope is still attached, pinned or running, removes
# it, and fails listing it. Sets LEFT (empty when nothing was there) and
# LEFT_DETAIL; /tmp/left.out holds its output.
check_left() {
    printf '%s\n' "lane: nothing of gmemscope is left attached, pinned or running" | sed 's/[][\\,]/\\&/g' >/tmp/left.spec
    timeout "$TEST_LIMIT_S" /bin/unit_tests -f /tmp/left.spec -r compact >/tmp/left.out 2>&1 </dev/null
    rc=$?
    LEFT="" LEFT_DETAIL=""
    if [ $rc != 0 ] || grep -q "^No tests ran" /tmp/left.out; then
        LEFT=$(sed -n 's/^LEFTOVER //p' /tmp/left.out | tr '\n' ';' | sed 's/;$//; s/;/; /g')
        [ -n "$LEFT" ] || LEFT="the check itself failed (exit $rc)"
        LEFT_DETAIL="left behind (the lane removed it): $LEFT"
        grep -q '^NOT REMOVED ' /tmp/left.out &&
            LEFT_DETAIL="$LEFT_DETAIL; still there after removal: $(sed -n 's/^NOT REMOVED //p' /tmp/left.out | tr '\n' ' ')"
    fi
}

# A test that leaves anything behind fails, whatever it said itself.
blame_left() {
    check_left
    [ -n "$LEFT" ] || return 0
    if [ "$T_STATUS" = FAIL ]; then
        T_DETAIL="$T_DETAIL; $LEFT_DETAIL"
    else
        T_STATUS=FAIL T_DETAIL=$LEFT_DETAIL
    fi
}

report_test() {
    result "$T_STATUS" "test: $1" "$T_DETAIL"
    case $T_STATUS in
        FAIL) grep -v '^$' /tmp/one.out | tail -n 25 | sed 's/^/GMS|     /' ;;
        PASS) grep '^MEASURED ' /tmp/one.out | sed 's/^/GMS|     /' ;;   # what a test measured, for the report
    esac
}

# What the init stages before the tests left, blamed on them.
check_stages_left() {
    check_left
    if [ -n "$LEFT" ]; then
        result FAIL "the lane's stages leave nothing of gmemscope behind" "$LEFT_DETAIL"
    else
        result PASS "the lane's stages leave nothing of gmemscope behind"
    fi
}

# The check between tests, shown to work: a hidden test fails on purpose
# with `enforce --persist` running and pinned; the check must blame it
# for the loader process, the pinned link and the BPF link, remove them,
# and find nothing on its next look; the persisted-enforcement test after
# it must pass (it starts from "nothing active").
LEAK_TEST="lane: a test that fails on purpose in the middle of a persisted enforcement"
NEXT_TEST="enforce --persist: SIGKILL of the loader leaves the veto in force, --stop removes it, --status tells only what is attached"
check_lane_cleanup() {
    what="lane: a test failing inside a persisted enforcement is blamed for what it left, which is removed before the next test"
    running "$LEAK_TEST" "$TEST_LIMIT_S"
    run_test "$LEAK_TEST"
    if [ "$T_STATUS" = SKIP ]; then
        result SKIP "$what" "$T_DETAIL"
        return
    fi
    leak_status=$T_STATUS
    cp /tmp/one.out /tmp/leak.out
    grep -v '^$' /tmp/leak.out | tail -n 8 | sed 's/^/GMS|     leak test: /'
    blame_left
    cp /tmp/left.out /tmp/leak-left.out
    say "    leak test: $T_STATUS -- $T_DETAIL"
    left=$LEFT
    check_left
    again=$LEFT
    running "$NEXT_TEST" "$TEST_LIMIT_S"
    run_test "$NEXT_TEST"
    blame_left
    report_test "$NEXT_TEST (after the leak)"
    why=""
    { [ "$leak_status" = FAIL ] && grep -q "on purpose" /tmp/leak.out; } ||
        why="$why the leak test did not fail on purpose ($leak_status);"
    for want in "process " "pinned $PIN_DIR/link_lsm_file_ioctl" "BPF link "; do
        case $left in
            *"$want"*) ;;
            *) why="$why the check did not find '$want' (found: ${left:-nothing});" ;;
        esac
    done
    grep -q '^NOT REMOVED ' /tmp/leak-left.out && why="$why the check could not remove all of it;"
    [ -z "$again" ] || why="$why a second look still found: $again;"
    [ "$T_STATUS" = PASS ] || why="$why the next test did not pass ($T_STATUS);"
    if [ -z "$why" ]; then
        result PASS "$what" "found and removed: $left"
    else
        result FAIL "$what" "$why"
    fi
}
PIN_DIR=/sys/fs/bpf/gmemscope

# Each selected test case, with the check between tests after it.
run_unit_tests() {
    spec=$(cat /etc/gms/test-spec)
    # Catch2 v2 exits with the number of tests listed: only the list counts.
    /bin/unit_tests --list-test-names-only ${spec:+"$spec"} >/tmp/tests 2>&1 </dev/null
    if ! grep -q . /tmp/tests; then
        result FAIL "unit tests: spec '$spec' selects no test case"
        return
    fi
    say "unit tests: spec '${spec:-all}', $(grep -c . /tmp/tests) test cases, ${TEST_LIMIT_S}s each at most"
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        running "$name" "$TEST_LIMIT_S"
        run_test "$name"
        blame_left
        report_test "$name"
    done </tmp/tests
}

# A kernel warning or oops during the run fails the lane even when every
# test passed.
check_kernel_log() {
    dmesg >/tmp/dmesg
    splat="WARNING:|BUG:|Oops|Call Trace"
    # An RCU CPU stall report means the host starved the emulated CPUs (TCG
    # on a loaded machine; seen at boot at time factor 6): said as a SLOW
    # line, and its stack dumps (Call Trace) are not splats. WARNING, BUG
    # and Oops fail the lane whatever else the log holds.
    stalls=$(grep -c -E "rcu: INFO: .*detected stall|self-detected stall" /tmp/dmesg)
    if [ "$stalls" != 0 ]; then
        say "SLOW the guest's kernel reported $stalls RCU CPU stall(s): the host starved its emulated CPUs"
        splat="WARNING:|BUG:|Oops"
    fi
    if grep -E "$splat" /tmp/dmesg >/tmp/splats; then
        result FAIL "kernel log has no WARNING/BUG/Oops"
        head -n 20 /tmp/splats | sed 's/^/GMS|     /'
    else
        result PASS "kernel log has no WARNING/BUG/Oops"
    fi
}

echo
echo "=== GMS-VM-LANE BEGIN ==="
say "kernel $(uname -r) (row $GMS_KERNEL_ROW, facts: ${GMS_KERNEL_FACTS:-none}), /init at $(cut -d' ' -f1 /proc/uptime)s uptime"
say "lsm: $(cat /sys/kernel/security/lsm)"
calibrate
load_modules
bind_edu
run_hooks
run_selftest
run_enforce
run_dma_story
run_private_story
check_stages_left
check_lane_cleanup
run_unit_tests
check_kernel_log
say "summary: $NPASS passed, $NSKIP skipped, $NFAIL failed; at $(cut -d' ' -f1 /proc/uptime)s uptime"
echo "=== GMS-VM-LANE END ==="
poweroff -f
