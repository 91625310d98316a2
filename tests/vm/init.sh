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

# Each test case in its own process: a crash or a hang costs one test,
# and the status is per test. Catch2 takes the name from a file (-f),
# where `\` escapes the characters its test-spec syntax gives a meaning.
run_unit_tests() {
    spec=$(cat /etc/gms/test-spec)
    # Catch2 v2 exits with the number of tests listed: only the list counts.
    /bin/unit_tests --list-test-names-only ${spec:+"$spec"} >/tmp/tests 2>&1 </dev/null
    if ! grep -q . /tmp/tests; then
        result FAIL "unit tests: spec '$spec' selects no test case"
        return
    fi
    say "unit tests: spec '${spec:-all}', $(grep -c . /tmp/tests) test cases, ${TEST_TIMEOUT_S}s each at most"
    while IFS= read -r name; do
        [ -n "$name" ] || continue
        printf '%s\n' "$name" | sed 's/[][\\,]/\\&/g' >/tmp/one.spec
        start=$(cut -d' ' -f1 /proc/uptime)
        timeout "$TEST_TIMEOUT_S" /bin/unit_tests -f /tmp/one.spec -r compact >/tmp/one.out 2>&1 </dev/null
        rc=$?
        took=$(awk -v t0="$start" '{ printf "%.1fs", $1 - t0 }' /proc/uptime)
        if [ $rc != 0 ] || grep -q "^No tests ran" /tmp/one.out; then
            [ $rc = 143 ] && why="timed out after ${TEST_TIMEOUT_S}s" || why="exit $rc, $took"
            result FAIL "test: $name" "$why"
            grep -v '^$' /tmp/one.out | tail -n 25 | sed 's/^/GMS|     /'
        elif grep -q "SKIPPED: " /tmp/one.out; then
            result SKIP "test: $name" "$(skip_reason /tmp/one.out)"
        else
            result PASS "test: $name" "$took"
            # what a test measured, for the report
            grep '^MEASURED ' /tmp/one.out | sed 's/^/GMS|     /'
        fi
    done </tmp/tests
}

# A kernel warning or oops during the run fails the lane even when every
# test passed.
check_kernel_log() {
    if dmesg | grep -E "WARNING:|BUG:|Oops|Call Trace" >/tmp/splats; then
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
load_modules
bind_edu
run_hooks
run_selftest
run_enforce
run_dma_story
run_private_story
run_unit_tests
check_kernel_log
say "summary: $NPASS passed, $NSKIP skipped, $NFAIL failed; at $(cut -d' ' -f1 /proc/uptime)s uptime"
echo "=== GMS-VM-LANE END ==="
poweroff -f
