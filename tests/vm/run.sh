#!/usr/bin/env bash
# The VM lane: boots Debian's 6.12 kernel under QEMU (TCG) with an
# initramfs holding busybox, the static gmemscope and unit tests, and the
# KVM/VFIO modules, and reports what ran inside (tests/vm/README.md).
#
#   bash tests/vm/run.sh [TEST-SPEC]    TEST-SPEC: a Catch2 spec, default all
#
# Exit: 0 all passed, 1 something failed or the guest did not finish,
# 77 the lane cannot run on this machine ("SKIPPED: <why>").
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TEST_SPEC=${1:-}
CACHE=$ROOT/build/vm-cache       # downloads and the unpacked kernel
STATIC=$ROOT/build/vm-static     # the -DGMS_STATIC=ON build
LANE=$STATIC/lane                # this run: initramfs, console log, results
SUITE=bookworm-backports
KERNEL_PKG_RE='^linux-image-6\.12\.[0-9]+\+[^-]+-amd64-unsigned$'
MODULES=(irqbypass ccp kvm kvm-amd vfio vfio_iommu_type1 vfio-pci-core vfio-pci)
OPTIONAL_MODULES=(udmabuf)       # built in on Debian's config, a module elsewhere
PACKAGES=(qemu-system-x86 busybox-static cpio xz-utils zstd)
VM_TIMEOUT_S=${GMS_VM_TIMEOUT_S:-240}   # the boot and everything inside
TEST_TIMEOUT_S=${GMS_VM_TEST_TIMEOUT_S:-90}
BEGIN_MARK="=== GMS-VM-LANE BEGIN ==="   # printed by init.sh
END_MARK="=== GMS-VM-LANE END ==="
LANE_START=$SECONDS

# Name the command that stopped the script (once: with -E the trap also
# fires in each calling function).
trap '[[ -n ${ERR_SHOWN:-} ]] || echo "vm-lane: error: line $LINENO: $BASH_COMMAND" >&2; ERR_SHOWN=1' ERR

log() { echo "vm-lane: $*" >&2; }
skip() { echo "SKIPPED: $*"; exit 77; }
die() { echo "vm-lane: error: $*" >&2; exit 1; }

# Runs a command silently; shows its output only if it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        echo "vm-lane: failed: $*" >&2
        ERR_SHOWN=1
        return 1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    if ! { quiet apt-get update && DEBIAN_FRONTEND=noninteractive \
            quiet apt-get install -y --no-install-recommends "${missing[@]}"; }; then
        command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86 is not installed and cannot be installed"
        skip "cannot install ${missing[*]}"
    fi
}

# The Debian archive URI this system already uses for its release suite,
# from one-line (sources.list, *.list) or deb822 (*.sources) files.
system_mirror() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    {
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk -v s="$codename" '$1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == s) print $i }' || true   # a system may have no one-line sources
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
            awk -v s="$codename" 'BEGIN { RS = "" } {
                uri = ""; deb = 0; suite = 0
                n = split($0, lines, "\n")
                for (j = 1; j <= n; j++) {
                    if (lines[j] ~ /^#/) continue
                    split(lines[j], w, /[ \t]+/)
                    if (w[1] == "Types:" && lines[j] ~ /[ \t]deb([ \t]|$)/) deb = 1
                    if (w[1] == "URIs:") uri = w[2]
                    if (w[1] == "Suites:" && lines[j] ~ ("[ \t]" s "([ \t]|$)")) suite = 1
                }
                if (deb && suite && uri != "") print uri }' || true
    } | head -n 1
}

# apt with its own sources list, lists and cache under $CACHE/apt: the
# system's apt configuration and state are only read, never written.
# Sandbox::User=root: the _apt user may not be able to write into $CACHE.
private_apt() {
    local tool=$1; shift
    "$tool" -o Dir::Etc::sourcelist="$CACHE/apt/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$CACHE/apt/lists" -o Dir::Cache="$CACHE/apt/cache" \
        -o APT::Sandbox::User=root "$@"
}

# Downloads linux-image-6.12.*-amd64-unsigned once and unpacks it to
# KERNEL_TREE=$CACHE/kernel/<release>.
fetch_kernel() {
    mkdir -p "$CACHE/kernel"
    KERNEL_TREE=$(find "$CACHE/kernel" -mindepth 2 -maxdepth 2 -name .complete -printf '%h\n' 2>/dev/null |
        sort -V | tail -n 1)
    [[ -z $KERNEL_TREE ]] || return 0

    local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts=""
    mirror=$(system_mirror)
    [[ -n $mirror ]] || skip "no Debian mirror found in /etc/apt/sources.list{,.d}"
    [[ -f $keyring ]] && opts="[signed-by=$keyring] "
    mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debs"
    echo "deb ${opts}${mirror} $SUITE main" >"$CACHE/apt/sources.list"
    log "fetching the package lists of $SUITE from $mirror"
    quiet private_apt apt-get update || skip "apt-get update of $mirror $SUITE failed"

    local pkg
    pkg=$(private_apt apt-cache pkgnames linux-image-6.12 | grep -E "$KERNEL_PKG_RE" | sort -V | tail -n 1)
    [[ -n $pkg ]] || skip "no linux-image-6.12.*-amd64-unsigned in $SUITE"
    log "downloading $pkg"
    (cd "$CACHE/debs" && quiet private_apt apt-get download "$pkg") || skip "apt-get download $pkg failed"

    local deb release tree
    deb=$(ls "$CACHE/debs/${pkg}"_*.deb | tail -n 1)
    release=${pkg#linux-image-}; release=${release%-unsigned}
    tree=$CACHE/kernel/$release
    rm -rf "$tree"; mkdir -p "$tree"
    log "unpacking $release"
    dpkg-deb -x "$deb" "$tree"
    # The package leaves modules.dep to depmod at install time.
    log "running depmod (once, about 30 s)"
    quiet busybox depmod -b "$tree" "$release"
    touch "$tree/.complete"
    rm -f "$deb"
    KERNEL_TREE=$tree
}

# ORDER: the names of MODULES (and of OPTIONAL_MODULES that are modules)
# with their dependencies first, from modules.dep.
resolve_modules() {
    local moddir=$1 line path base
    declare -gA DEP_PATH=() DEP_DEPS=() SEEN=()
    while IFS= read -r line; do
        path=${line%%:*}; base=${path##*/}; base=${base%%.ko*}; base=${base//-/_}
        DEP_PATH[$base]=$path; DEP_DEPS[$base]=${line#*:}
    done <"$moddir/modules.dep"
    ORDER=()
    local m
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
    local moddir=$1 root=$LANE/root m ko
    rm -rf "$root"; mkdir -p "$root"/{bin,modules,etc/gms}
    cp "$(command -v busybox)" "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    install -m 0755 "$ROOT/tests/vm/init.sh" "$root/init"
    for m in "${ORDER[@]}"; do
        ko=$moddir/${DEP_PATH[$m]}
        case $ko in
            *.xz) xz -dc "$ko" ;;
            *.zst) zstd -qdc "$ko" ;;
            *) cat "$ko" ;;
        esac >"$root/modules/$m.ko"
    done
    printf '%s\n' "${ORDER[@]}" >"$root/modules/order"
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
    echo "$TEST_TIMEOUT_S" >"$root/etc/gms/test-timeout"
    (cd "$root" && find . | cpio -o -H newc --quiet) >"$LANE/initramfs.cpio"
}

boot() {
    local vmlinuz=$1 rc=0
    timeout -k 5 "$VM_TIMEOUT_S" qemu-system-x86_64 \
        -accel tcg,thread=single -cpu max -smp 2 -m 2G -machine q35 \
        -device intel-iommu,intremap=on,caching-mode=on -device edu -nic none \
        -kernel "$vmlinuz" -initrd "$LANE/initramfs.cpio" \
        -append "console=ttyS0 intel_iommu=on panic=-1 loglevel=4" \
        -nographic -no-reboot </dev/null >"$LANE/console.log" 2>&1 || rc=$?
    # Without the CRs and SeaBIOS's terminal resets and escapes.
    tr -d '\r' <"$LANE/console.log" | sed 's/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' >"$LANE/console.txt"
    if ((rc == 124)); then
        log "QEMU timed out after ${VM_TIMEOUT_S}s"
    elif ((rc != 0)); then
        # The guest powering off or panicking (panic=-1, -no-reboot) ends
        # QEMU with 0: anything else is QEMU itself failing to run.
        skip "qemu-system-x86_64 cannot run here (exit $rc): $(grep -m1 . "$LANE/console.txt")"
    fi
}

# Prints the guest's results; fails unless both markers are there and no
# line says FAIL. The markers are not anchored: SeaBIOS leaves terminal
# escapes at the start of the first line. The hooks document goes to
# hooks.json, checked against schemas/ where the host has the validator.
report() {
    local console=$LANE/console.txt
    if ! grep -q "$BEGIN_MARK" "$console" || ! grep -q "$END_MARK" "$console"; then
        echo "vm-lane: FAILED: the result markers are missing (boot failure?); last 40 console lines:"
        tail -n 40 "$console"
        return 1
    fi
    sed -n "/$BEGIN_MARK/,/$END_MARK/p" "$console" | grep '^GMS| ' | sed 's/^GMS| //' >"$LANE/results.txt"
    sed -n '/^hooks --json:$/{n;s/^ *//;p;q}' "$LANE/results.txt" >"$LANE/hooks.json"
    sed -n '/^selftest --json:$/{n;s/^ *//;p;q}' "$LANE/results.txt" >"$LANE/selftest.json"
    awk -v dir="${LANE#"$ROOT"/}" '
        /^(hooks|selftest) --json:$/ { print $1 " --json: saved to " dir "/" $1 ".json"; skip = 1; next }
        skip { skip = 0; next } { print }' "$LANE/results.txt"
    validate_json_doc hooks
    validate_json_doc selftest
    ! grep -q '^FAIL ' "$LANE/results.txt"
}

# validate_json_doc KIND: LANE/KIND.json against schemas/KIND.schema.json.
validate_json_doc() {
    local kind=$1 out
    if ! /usr/bin/python3 -c 'import jsonschema' 2>/dev/null; then
        echo "NOTE $kind.json not validated: no python3-jsonschema on the host"
    elif out=$(/usr/bin/python3 "$ROOT/tests/validate_json.py" --expect "$kind" <"$LANE/$kind.json" 2>&1); then
        echo "PASS $kind --json from the guest is a $kind document (schemas/$kind.schema.json)"
    else
        echo "FAIL $kind --json from the guest is a $kind document -- $out" | tee -a "$LANE/results.txt"
    fi
}

main() {
    mkdir -p "$CACHE" "$LANE"
    ensure_packages
    command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
    fetch_kernel
    local tree=$KERNEL_TREE release=${KERNEL_TREE##*/}
    resolve_modules "$tree/lib/modules/$release"
    log "kernel $release; modules in load order: ${ORDER[*]}"

    local t0=$SECONDS
    build_static
    log "static build: $((SECONDS - t0)) s"
    build_initramfs "$tree/lib/modules/$release"
    log "initramfs: $(du -h "$LANE/initramfs.cpio" | cut -f1)"

    t0=$SECONDS
    boot "$tree/boot/vmlinuz-$release"
    local vm_s=$((SECONDS - t0)) rc=0
    report || rc=$?
    log "VM run (boot, tests, power-off): ${vm_s} s; whole lane: $((SECONDS - LANE_START)) s"
    log "console log: ${LANE#"$ROOT"/}/console.txt"
    ((rc == 0)) && log "PASSED" || log "FAILED"
    exit "$rc"
}

main
