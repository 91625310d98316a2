#!/usr/bin/env bash
# The VM lane: boots real Debian kernels under QEMU (TCG), each row of
# tests/vm/kernels.tsv in its own guest (GMS_VM_JOBS at once), with an
# initramfs holding busybox, the static gmemscope and unit tests, and the
# row's KVM/VFIO modules, and reports what ran inside (tests/vm/README.md).
#
#   bash tests/vm/run.sh --list                   the kernels' names, one a line
#   bash tests/vm/run.sh [--kernel NAME] [TEST-SPEC]
#       TEST-SPEC: a Catch2 spec, default all; without --kernel every row runs
#
# Exit: 0 all passed, 1 something failed or a guest did not finish,
# 77 a kernel cannot run on this machine ("SKIPPED: <why>") and none failed.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TABLE=$ROOT/tests/vm/kernels.tsv
# Downloaded and unpacked kernels outlive the clone: keyed by package
# name and version, shared by every checkout on the machine.
CACHE=${GMS_CACHE:-/var/cache/gmemscope}
STATIC=$ROOT/build/vm-static     # the -DGMS_STATIC=ON build
OPTIONAL_MODULES=(udmabuf)       # built in on Debian's config, a module elsewhere
PACKAGES=(qemu-system-x86 busybox-static cpio xz-utils zstd)
# Limits, for a guest on an idle machine; the guest measures how much
# slower it runs (init.sh, calibrate) and scales them by that factor.
VM_TIMEOUT_S=${GMS_VM_TIMEOUT_S:-2400}  # the whole QEMU run, at most (a ceiling)
STALL_S=${GMS_VM_STALL_S:-600}          # the console silent this long stops QEMU
TEST_TIMEOUT_S=${GMS_VM_TEST_TIMEOUT_S:-180}  # per test, for an idle machine (tests/vm/README.md, "Time limits")
MAX_FACTOR=${GMS_VM_MAX_FACTOR:-8}      # slower than this, the guest says so (a SLOW line)
# init.sh's calibration loop in a guest on an idle development machine.
CALIBRATION_REF_S=1.3
BEGIN_MARK="=== GMS-VM-LANE BEGIN ==="   # printed by init.sh
END_MARK="=== GMS-VM-LANE END ==="

# Name the command that stopped the script (once: with -E the trap also
# fires in each calling function).
trap '[[ -n ${ERR_SHOWN:-} ]] || echo "vm-lane: error: line $LINENO: $BASH_COMMAND" >&2; ERR_SHOWN=1' ERR

LOG_TAG=vm-lane   # vm-lane[NAME] once a row is chosen
# shellcheck source=tests/vm/lib.sh
. "$ROOT/tests/vm/lib.sh"

# step NAME START: how long a step took, from START (a $SECONDS value).
step() { log "step $1: $(($SECONDS - $2)) s"; }

# The table's rows, as K_NAME[i], K_SOURCE[i], K_SUITE[i], K_MODULES[i],
# K_FACTS[i]; `-` fields become empty.
read_table() {
    K_NAME=() K_SOURCE=() K_SUITE=() K_MODULES=() K_FACTS=()
    local name source suite modules facts rest
    while IFS=$'\t' read -r name source suite modules facts rest; do
        [[ -z $name || $name == \#* ]] && continue
        [[ -n $source && -z $rest ]] || die "$TABLE: row $name: want 5 tab-separated fields"
        K_NAME+=("$name"); K_SOURCE+=("$source")
        K_SUITE+=("${suite/#-/}"); K_MODULES+=("${modules/#-/}"); K_FACTS+=("${facts/#-/}")
    done <"$TABLE"
}

ensure_packages() {
    if ! install_packages "${PACKAGES[@]}"; then
        command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86 is not installed and cannot be installed"
        skip "cannot install the lane's packages: ${PACKAGES[*]}"
    fi
}

# The private apt (tests/vm/lib.sh) of this row's suite, its lists fetched.
update_lists() {
    APT_DIR=$CACHE/apt/$SUITE
    private_apt_suite "$SUITE" || skip "cannot fetch the package lists of $SUITE (see above)"
}

# The ERE of a package template ("linux-binary-%"): the release, grouped,
# where the template has `%`.
template_re() {
    local prefix=${1%%%*} suffix=${1#*%}
    echo "^${prefix//./\\.}(${RELEASE_RE})${suffix//./\\.}\$"
}

# The newest complete unpacked tree of this row's first package, if any.
cached_tree() {
    local re d base
    re=$(template_re "${DEB_PKGS[0]}")
    [[ -d $CACHE/kernel ]] || return 0
    find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name .complete -printf '%h\n' | while read -r d; do
        base=${d##*/}
        if [[ ${base%%_*} =~ $re ]]; then echo "$d"; fi
    done | sort -V | tail -n 1
}

# KTREE: the row's packages unpacked into one tree, under
# $CACHE/kernel/<first package>_<version>; fetched only when no tree of
# the row is cached (or GMS_VM_REFRESH=1 asks for the newest).
fetch_deb_kernel() {
    local t0=$SECONDS rest=${SOURCE#deb:}
    RELEASE_RE=${rest%:*}
    IFS=, read -r -a DEB_PKGS <<<"${rest##*:}"
    if [[ -z ${GMS_VM_REFRESH:-} ]]; then
        KTREE=$(cached_tree)
        if [[ -n $KTREE ]]; then
            log "cache: hit, ${KTREE} (GMS_VM_REFRESH=1 asks the mirror for a newer one)"
            step fetch "$t0"
            return 0
        fi
    fi
    log "cache: miss for ${DEB_PKGS[*]} in $CACHE/kernel"
    update_lists
    local names first_re release="" r p all
    names=$(private_apt apt-cache pkgnames)
    first_re=$(template_re "${DEB_PKGS[0]}")
    for r in $(grep -E "$first_re" <<<"$names" | sed -E "s/$first_re/\\1/" | sort -V -r); do
        all=1
        for p in "${DEB_PKGS[@]}"; do grep -qxF "${p//%/$r}" <<<"$names" || all=""; done
        [[ -n $all ]] && { release=$r; break; }
    done
    [[ -n $release ]] || skip "no release matching $RELEASE_RE with all of ${DEB_PKGS[*]} in $SUITE"
    local pkgs=() version
    for p in "${DEB_PKGS[@]}"; do pkgs+=("${p//%/$release}"); done
    version=$(private_apt apt-cache show --no-all-versions "${pkgs[0]}" | awk '/^Version:/ { print $2; exit }')
    local tree=$CACHE/kernel/${pkgs[0]}_${version//:/%3a}
    if [[ -f $tree/.complete ]]; then
        log "cache: hit after asking the mirror, $tree"
        KTREE=$tree
        step fetch "$t0"
        return 0
    fi
    mkdir -p "$CACHE/debs"
    log "downloading ${pkgs[*]} ($version)"
    (cd "$CACHE/debs" && quiet private_apt apt-get download "${pkgs[@]}") || skip "apt-get download ${pkgs[*]} failed"
    rm -rf "$tree"; mkdir -p "$tree"
    log "unpacking $release"
    for p in "${pkgs[@]}"; do
        local deb
        deb=$(ls "$CACHE/debs/${p}"_*.deb | sort -V | tail -n 1)
        dpkg-deb -x "$deb" "$tree"
        rm -f "$deb"
    done
    local moddir
    moddir=$(find "$tree" -mindepth 3 -maxdepth 4 -type d -path "*/lib/modules/$release" | head -n 1)
    if [[ -n $moddir && ! -s $moddir/modules.dep ]]; then
        # Debian's packages leave modules.dep to depmod at install time.
        log "running depmod (once, about 30 s)"
        quiet busybox depmod -b "${moddir%/lib/modules/*}" "$release"
    fi
    touch "$tree/.complete"
    KTREE=$tree
    step fetch "$t0"
}

# KTREE from tests/vm/build-kernel.sh NAME, which caches what it builds.
build_kernel() {
    local t0=$SECONDS script=$ROOT/tests/vm/build-kernel.sh out
    [[ -f $script ]] || skip "kernel $KNAME is built by tests/vm/build-kernel.sh, which this tree does not have"
    log "building or finding kernel ${SOURCE#build:} with tests/vm/build-kernel.sh"
    out=$(bash "$script" "${SOURCE#build:}" | tail -n 1) || die "tests/vm/build-kernel.sh ${SOURCE#build:} failed"
    [[ -d $out ]] || die "tests/vm/build-kernel.sh printed '$out', not a directory"
    KTREE=$out
    step build-kernel "$t0"
}

# VMLINUZ and MODDIR (empty when the kernel has no modules) inside KTREE.
locate_kernel() {
    VMLINUZ=$(find "$KTREE" -maxdepth 5 \( -name 'vmlinuz*' -o -name bzImage \) -type f | sort | head -n 1)
    [[ -n $VMLINUZ ]] || die "no vmlinuz in $KTREE"
    MODDIR=$(find "$KTREE" -mindepth 3 -maxdepth 4 -type d -path '*/lib/modules/*' | head -n 1)
    RELEASE=${MODDIR##*/}
    [[ -n $RELEASE ]] || RELEASE=${KTREE##*/}   # a built kernel: its cache key
}

# ORDER: the row's modules (and OPTIONAL_MODULES that are modules) with
# their dependencies first, from modules.dep.
resolve_modules() {
    local line path base m
    declare -gA DEP_PATH=() DEP_DEPS=() SEEN=()
    ORDER=()
    if [[ -z $MODDIR ]]; then
        ((${#MODULES[@]} == 0)) || die "the row names modules but $KTREE has no lib/modules"
        return 0
    fi
    while IFS= read -r line; do
        path=${line%%:*}; base=${path##*/}; base=${base%%.ko*}; base=${base//-/_}
        DEP_PATH[$base]=$path; DEP_DEPS[$base]=${line#*:}
    done <"$MODDIR/modules.dep"
    for m in "${MODULES[@]}"; do add_module "$m" || die "module $m is not in modules.dep"; done
    for m in "${OPTIONAL_MODULES[@]}"; do add_module "$m" || log "$m: not a module (built in or absent)"; done
}

add_module() {
    local name=${1//-/_} dep
    [[ -n ${DEP_PATH[$name]:-} ]] || return 1
    [[ -z ${SEEN[$name]:-} ]] || return 0
    SEEN[$name]=1
    for dep in ${DEP_DEPS[$name]}; do
        dep=${dep##*/}; add_module "${dep%%.ko*}"
    done
    ORDER+=("$name")
}

build_static() {
    log "building gmemscope_static and unit_tests_static in ${STATIC#"$ROOT"/}"
    quiet bash "$ROOT/dev.sh" setup
    # -O2 as in the normal build, but no -g: the binaries are stripped for
    # the initramfs anyway, and debug info is a quarter of the compile time.
    # (Not CMake's Release -O3: GCC 12 then fails -Werror=restrict in <string>.)
    quiet cmake -S "$ROOT" -B "$STATIC" -DGMS_STATIC=ON -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_C_FLAGS_RELEASE="-O2 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG"
    quiet cmake --build "$STATIC" -j"$(nproc)" --target gmemscope_static unit_tests_static
}

# A real util-linux setpriv for the tests that drop privileges (busybox's
# lacks --reuid), run through its own copy of ld.so and libraries so the
# initramfs still has no /lib.
add_setpriv() {
    local root=$1 lib
    local setpriv=/usr/bin/setpriv
    [[ -x $setpriv ]] || { log "no $setpriv: tests that drop privileges will fail"; return 0; }
    mkdir -p "$root/opt/util-linux" "$root/usr/bin"
    cp "$setpriv" "$root/opt/util-linux/"
    for lib in $(ldd "$setpriv" | grep -o '/[^ ]*'); do cp -L "$lib" "$root/opt/util-linux/"; done
    local ldso
    ldso=$(basename "$(ldd "$setpriv" | grep -o '/[^ ]*ld-linux[^ ]*')")
    cat >"$root/usr/bin/setpriv" <<EOF
#!/bin/sh
exec /opt/util-linux/$ldso --library-path /opt/util-linux /opt/util-linux/setpriv "\$@"
EOF
    chmod +x "$root/usr/bin/setpriv"
}

# The initramfs as an uncompressed cpio: the guest would spend longer
# decompressing under TCG than the host spends writing the bytes.

build_initramfs() {
    local root=$LANE/root m ko
    rm -rf "$root"; mkdir -p "$root"/{bin,modules,etc/gms}
    cp "$(command -v busybox)" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    install -m 0755 "$ROOT/tests/vm/init.sh" "$root/init"
    for m in "${ORDER[@]}"; do
        ko=$MODDIR/${DEP_PATH[$m]}
        case $ko in
            *.xz) xz -dc "$ko" ;;
            *.zst) zstd -qdc "$ko" ;;
            *) cat "$ko" ;;
        esac >"$root/modules/$m.ko"
    done
    printf '%s\n' ${ORDER[@]+"${ORDER[@]}"} >"$root/modules/order"
    # unit_tests_static runs gmemscope at its build path (GMS_BINARY), so
    # the binary sits at that same path inside the guest.
    mkdir -p "$root$STATIC"
    strip -o "$root$STATIC/gmemscope_static" "$STATIC/gmemscope_static"
    strip -o "$root/bin/unit_tests" "$STATIC/unit_tests_static"
    ln -s "$STATIC/gmemscope_static" "$root/bin/gmemscope"
    # Data the tests read under GMS_SOURCE_DIR, also at its host path.
    local data
    for data in tests/golden schemas; do
        [[ -d $ROOT/$data ]] || continue
        mkdir -p "$(dirname "$root$ROOT/$data")"
        cp -r "$ROOT/$data" "$root$ROOT/$data"
    done
    add_setpriv "$root"
    printf '%s\n' "$TEST_SPEC" >"$root/etc/gms/test-spec"
    printf '%s\n' "$KNAME" >"$root/etc/gms/kernel-name"
    printf '%s\n' "$FACTS" >"$root/etc/gms/kernel-facts"
    echo "$TEST_TIMEOUT_S" >"$root/etc/gms/test-timeout"
    echo "$CALIBRATION_REF_S" >"$root/etc/gms/calibration-ref"
    echo "$MAX_FACTOR" >"$root/etc/gms/max-factor"
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$LANE/initramfs.cpio"
}

# no_timer_check: on a loaded host the TCG guest's timer can miss the
# kernel's early check through the remapped IO-APIC, which panics the boot
# ("timer doesn't work through Interrupt-remapped IO-APIC", seen with 7.3).
boot() {
    local rc=0 qemu
    qemu-system-x86_64 \
        -accel tcg,thread=single -cpu max -smp 2 -m 2G -machine q35 \
        -device intel-iommu,intremap=on,caching-mode=on -device edu -nic none \
        -kernel "$VMLINUZ" -initrd "$LANE/initramfs.cpio" \
        -append "console=ttyS0 intel_iommu=on panic=-1 loglevel=4 no_timer_check" \
        -nographic -no-reboot </dev/null >"$LANE/console.log" 2>&1 &
    qemu=$!
    watch_console "$qemu"
    wait "$qemu" || rc=$?
    # Without the CRs and SeaBIOS's terminal resets and escapes.
    tr -d '\r' <"$LANE/console.log" | sed 's/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' >"$LANE/console.txt"
    if [[ -n $STOPPED ]]; then
        log "QEMU stopped: $STOPPED"
    elif ((rc != 0)); then
        # The guest powering off or panicking (panic=-1, -no-reboot) ends
        # QEMU with 0: anything else is QEMU itself failing to run.
        skip "qemu-system-x86_64 cannot run here (exit $rc): $(grep -m1 . "$LANE/console.txt")"
    fi
}

# watch_console PID: a watchdog on the guest's progress, not one fixed
# timeout. QEMU is stopped (STOPPED says why) when its console stays
# silent past the stall limit, or the run passes its ceiling. The stall
# limit is STALL_S, or longer while the guest says it runs a step with a
# longer limit ("running: WHAT (limit Ns)": the step and the check after
# it); the ceiling is VM_TIMEOUT_S times the largest time factor the guest
# measured (it measures again as the load changes).
watch_console() {
    local qemu=$1 size last_size=-1 last_change=$SECONDS start=$SECONDS
    local stall ceiling factor limit
    STOPPED=""
    while kill -0 "$qemu" 2>/dev/null; do
        sleep 5
        size=$(stat -c %s "$LANE/console.log" 2>/dev/null || echo 0)
        if ((size != last_size)); then last_size=$size last_change=$SECONDS; fi
        factor=$(grep -a -o 'time factor [0-9.]*' "$LANE/console.log" | awk '{ print $3 }' | sort -n | tail -n 1 || true)
        ceiling=$(awk -v t="$VM_TIMEOUT_S" -v f="${factor:-1}" 'BEGIN { printf "%d", t * (f < 1 ? 1 : f) }')
        limit=$(grep -a -o '^GMS| running: .*(limit [0-9]*s)' "$LANE/console.log" | tail -n 1 |
            sed 's/.*(limit \([0-9]*\)s)$/\1/' || true)
        stall=$STALL_S
        if [[ -n $limit ]] && ((2 * limit + 60 > stall)); then stall=$((2 * limit + 60)); fi
        if ((SECONDS - last_change > stall)); then
            STOPPED="the console was silent for $((SECONDS - last_change)) s (limit $stall s)"
        elif ((SECONDS - start > ceiling)); then
            STOPPED="the run passed its ceiling of $ceiling s (GMS_VM_TIMEOUT_S $VM_TIMEOUT_S times the time factor ${factor:-1})"
        fi
        if [[ -n $STOPPED ]]; then
            kill -TERM "$qemu" 2>/dev/null || true
            for _ in 1 2 3 4 5; do kill -0 "$qemu" 2>/dev/null && sleep 1; done
            kill -KILL "$qemu" 2>/dev/null || true
            return 0
        fi
    done
}

# Prints the guest's results; fails unless both markers are there and no
# line says FAIL. The markers are not anchored: SeaBIOS leaves terminal
# escapes at the start of the first line. The hooks documents go to
# hooks.json and selftest.json, checked against schemas/ where the host has
# the validator, and the self-test against tests/vm/expect/NAME.
# A guest that stopped before its END marker (QEMU stopped by the
# watchdog, a panic) still has every result it printed counted, and the
# step it was in named (its last "running:" line).
report() {
    local console=$LANE/console.txt
    if ! grep -q "$BEGIN_MARK" "$console"; then
        echo "FAIL guest printed its results -- the BEGIN marker is missing (boot failure?)${STOPPED:+; $STOPPED}; last 40 console lines:"
        tail -n 40 "$console"
        echo "FAIL guest printed its results" >"$LANE/results.txt"
        return 1
    fi
    sed -n "/$BEGIN_MARK/,/$END_MARK/p" "$console" | grep -a '^GMS| ' | sed 's/^GMS| //' >"$LANE/results.txt"
    sed -n '/^hooks --json:$/{n;s/^ *//;p;q}' "$LANE/results.txt" >"$LANE/hooks.json"
    sed -n '/^selftest --json:$/{n;s/^ *//;p;q}' "$LANE/results.txt" >"$LANE/selftest.json"
    awk -v dir="${LANE#"$ROOT"/}" '
        /^(hooks|selftest) --json:$/ { print $1 " --json: saved to " dir "/" $1 ".json"; skip = 1; next }
        /^running: / { next }
        skip { skip = 0; next } { print }' "$LANE/results.txt"
    if ! grep -q "$END_MARK" "$console"; then
        local last
        last=$(sed -n 's/^running: //p' "$LANE/results.txt" | tail -n 1)
        host_result FAIL "guest finished its run" \
            "${STOPPED:-it stopped before the END marker}; it was in: ${last:-no step yet}; last 40 console lines below"
        tail -n 40 "$console"
        return 1
    fi
    validate_json_doc hooks
    validate_json_doc selftest
    check_expected
    ! grep -q '^FAIL ' "$LANE/results.txt"
}

# host_result STATUS WHAT [DETAIL]: a check made on the host, printed and
# counted with the guest's.
host_result() {
    echo "$1 $2${3:+ -- $3}" | tee -a "$LANE/results.txt"
}

# validate_json_doc KIND: LANE/KIND.json against schemas/KIND.schema.json.
validate_json_doc() {
    local kind=$1 out
    if ! /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
        echo "NOTE $kind.json not validated: no python3-jsonschema on the host"
    elif out=$(/usr/bin/python3 "$ROOT/tests/validate_json.py" --expect "$kind" <"$LANE/$kind.json" 2>&1); then
        host_result PASS "$kind --json from the guest is a $kind document (schemas/$kind.schema.json)"
    else
        host_result FAIL "$kind --json from the guest is a $kind document" "$out"
    fi
}

# The self-test's verdicts against tests/vm/expect/NAME, exactly.
check_expected() {
    local expect=$ROOT/tests/vm/expect/$KNAME out
    if [[ ! -f $expect ]]; then
        host_result FAIL "self-test matches tests/vm/expect/$KNAME" "no such file"
    elif out=$(/usr/bin/python3 "$ROOT/tests/vm/expect.py" "$expect" "$LANE/selftest.json" 2>&1); then
        host_result PASS "self-test matches tests/vm/expect/$KNAME" "$out"
    else
        host_result FAIL "self-test matches tests/vm/expect/$KNAME"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

# counts FILE: "N passed, N failed, N skipped" of a results file.
counts() {
    local p f s
    p=$(grep -c '^PASS ' "$1" || true); f=$(grep -c '^FAIL ' "$1" || true); s=$(grep -c '^SKIP ' "$1" || true)
    echo "$p passed, $f failed, $s skipped"
}

# One row, in its own process (run.sh --kernel NAME): fetch or build the
# kernel, its initramfs, boot, report.
run_kernel() {
    local i
    for i in "${!K_NAME[@]}"; do [[ ${K_NAME[i]} == "$KNAME" ]] && break; done
    [[ ${K_NAME[i]} == "$KNAME" ]] || die "no kernel $KNAME in ${TABLE#"$ROOT"/} (--list names them)"
    SOURCE=${K_SOURCE[i]} SUITE=${K_SUITE[i]} FACTS=${K_FACTS[i]}
    LOG_TAG="vm-lane[$KNAME]"
    IFS=, read -r -a MODULES <<<"${K_MODULES[i]}"
    LANE=$STATIC/lane/$KNAME
    rm -rf "$LANE"; mkdir -p "$LANE"
    echo "SKIP guest printed its results -- did not run" >"$LANE/results.txt"

    # Rows run side by side: one at a time fetches or builds (they share
    # the cache's apt state and download directory).
    exec 9>"$CACHE/.fetch.lock"
    flock 9
    case $SOURCE in
        deb:*) fetch_deb_kernel ;;
        build:*) build_kernel ;;
        *) die "row $KNAME: source $SOURCE is neither deb: nor build:" ;;
    esac
    exec 9>&-
    locate_kernel
    resolve_modules
    log "kernel $RELEASE (${VMLINUZ#"$KTREE"/}); modules in load order: ${ORDER[*]:-none, all built in}"

    if [[ -z ${GMS_VM_NO_BUILD:-} ]]; then
        local t0=$SECONDS
        build_static
        step static-build "$t0"
    fi
    local t0=$SECONDS
    build_initramfs
    log "initramfs: $(du -h "$LANE/initramfs.cpio" | cut -f1)"
    step initramfs "$t0"

    t0=$SECONDS
    boot
    step vm-run "$t0"
    local rc=0
    report || rc=$?
    log "console log: ${LANE#"$ROOT"/}/console.txt"
    grep -h '^speed: \|^SLOW ' "$LANE/results.txt" | sed "s/^/$LOG_TAG: /" >&2 || true
    echo "vm-lane[$KNAME]: $(counts "$LANE/results.txt")"
    log "whole lane: $((SECONDS - LANE_START)) s; $( ((rc == 0)) && echo PASSED || echo FAILED)"
    exit "$rc"
}

main() {
    local list="" args=()
    KNAME=""
    while (($#)); do
        case $1 in
            --list) list=1 ;;
            --kernel) KNAME=${2:?--kernel needs a name}; shift ;;
            --kernel=*) KNAME=${1#--kernel=} ;;
            -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) die "unknown option $1 (--list, --kernel NAME)" ;;
            *) args+=("$1") ;;
        esac
        shift
    done
    ((${#args[@]} <= 1)) || die "one TEST-SPEC at most"
    TEST_SPEC=${args[0]:-}
    read_table
    if [[ -n $list ]]; then
        printf '%s\n' "${K_NAME[@]}"
        exit 0
    fi
    LANE_START=$SECONDS
    mkdir -p "$CACHE" "$STATIC"
    ensure_packages
    command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
    [[ -z $KNAME ]] || run_kernel

    # Every row in its own process, the static build once.  A guest runs
    # on one host CPU (TCG, one thread), so up to JOBS rows run side by
    # side; each row's lines are printed together when it ends.
    local t0=$SECONDS name rc worst=0 p f s tp=0 tf=0 ts=0 line done_pid running=0
    local -A row_of=() line_of=() rc_of=()
    local jobs=${GMS_VM_JOBS:-$(nproc)}
    ((jobs >= 1)) || die "GMS_VM_JOBS=$jobs: want 1 or more"
    build_static
    step static-build "$t0"
    log "${#K_NAME[@]} kernels, $jobs at a time (GMS_VM_JOBS)"
    finish_one() {
        local row rc=0
        wait -n -p done_pid || rc=$?
        row=${row_of[$done_pid]}
        running=$((running - 1))
        echo "=== kernel $row: ended (exit $rc) ==="
        cat "$STATIC/lane/$row.log"
        if [[ -f $STATIC/lane/$row/results.txt ]] && ((rc != 77)); then
            line=$(counts "$STATIC/lane/$row/results.txt")
        else
            line="0 passed, 0 failed, 1 skipped"
        fi
        line_of[$row]=$line rc_of[$row]=$rc
    }
    mkdir -p "$STATIC/lane"
    for name in "${K_NAME[@]}"; do
        ((running < jobs)) || finish_one
        echo "=== kernel $name: started (log: ${STATIC#"$ROOT"/}/lane/$name.log) ==="
        GMS_VM_NO_BUILD=1 bash "$0" --kernel "$name" ${TEST_SPEC:+"$TEST_SPEC"} >"$STATIC/lane/$name.log" 2>&1 &
        row_of[$!]=$name
        running=$((running + 1))
    done
    while ((running > 0)); do finish_one; done
    local summary=()
    for name in "${K_NAME[@]}"; do
        rc=${rc_of[$name]}
        read -r p _ f _ s _ <<<"${line_of[$name]}"
        tp=$((tp + p)) tf=$((tf + f)) ts=$((ts + s))
        summary+=("vm-lane[$name]: ${line_of[$name]} (exit $rc)")
        if ((rc != 0 && rc != 77)); then worst=1
        elif ((rc == 77 && worst == 0)); then worst=77; fi
    done
    printf '%s\n' "${summary[@]}"
    echo "vm-lane: $tp passed, $tf failed, $ts skipped; $((SECONDS - LANE_START)) s"
    exit "$worst"
}

main "$@"
