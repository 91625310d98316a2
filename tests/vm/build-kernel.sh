#!/usr/bin/env bash
# Builds the VM lane's `conversion` kernel once per machine: Debian's
# linux-source-7.3 (trixie-backports) with x86_64_defconfig plus
# tests/vm/conversion.config, everything built in. The result is cached
# outside the clone, keyed by the source package's version and the
# fragment's hash:
#
#   /var/cache/gmemscope/kernels/conversion-<version>-<sha256:12>/
#       bzImage  config  build.log  build-seconds  source-version
#
#   bash tests/vm/build-kernel.sh [conversion]   prints that directory,
#                                                last line of stdout
#
# (The lane's kernel table names it as `build:conversion`; the name is the
# only kernel this script knows.)
# Logs go to stderr; a second run with the same key says "cache hit".
# Exit: 0 built or cached, 1 the build failed, 77 it cannot run here.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LOG_TAG=build-kernel
# shellcheck source=tests/vm/lib.sh
. "$ROOT/tests/vm/lib.sh"
trap '[[ -n ${ERR_SHOWN:-} ]] || echo "build-kernel: error: line $LINENO: $BASH_COMMAND" >&2; ERR_SHOWN=1' ERR

KERNEL_NAME=${1:-conversion}
[[ $KERNEL_NAME == conversion ]] || die "unknown kernel '$KERNEL_NAME': this script builds 'conversion'"
FRAGMENT=$ROOT/tests/vm/$KERNEL_NAME.config
SRC_PKG=linux-source-7.3
SUITE=trixie-backports
CACHE_ROOT=${GMS_CACHE:-/var/cache/gmemscope}
KERNELS=$CACHE_ROOT/kernels
APT_DIR=$KERNELS/apt
JOBS=${GMS_KERNEL_JOBS:-$(nproc)}
PACKAGES=(build-essential flex bison dwarves bc libssl-dev libelf-dev xz-utils cpio python3)

# Every CONFIG_ line of the fragment (set or "is not set") must hold in
# .config; prints the ones that do not.
lost_options() {
    local config=$1 line name want
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            grep -qxF "$line" "$config" || echo "  $line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$config" || echo 'absent'))"
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            name=${BASH_REMATCH[1]}
            want=$(grep -E "^${name}=" "$config" || true)
            [[ -z $want ]] || echo "  $line (got: $want)"
        fi
    done <"$FRAGMENT"
}

mkdir -p "$KERNELS"
install_packages "${PACKAGES[@]}" || skip "cannot install ${PACKAGES[*]}"

# The source package's version: from freshly updated lists, or from the
# lists of an earlier run if the mirror cannot be reached now.
if ! private_apt_suite "$SUITE"; then
    [[ -d $APT_DIR/lists ]] || skip "no package lists of $SUITE"
    log "using the package lists of an earlier run"
fi
VERSION=$(private_apt apt-cache show "$SRC_PKG" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n 1)
[[ -n $VERSION ]] || skip "no $SRC_PKG in $SUITE"
HASH=$(sha256sum "$FRAGMENT" | cut -c1-12)
KEY=conversion-$VERSION-$HASH
OUT=$KERNELS/$KEY

exec 9>"$KERNELS/.lock-$KEY"
flock 9       # one build per key; a second caller waits and then hits

if [[ -f $OUT/.complete ]]; then
    log "cache hit: $OUT (built in $(cat "$OUT/build-seconds") s$([[ ! -f $OUT/copied-from ]] || echo ", copied from $(cat "$OUT/copied-from")")); ${SECONDS} s"
    echo "$OUT"
    exit 0
fi

# A kernel built elsewhere under the same key (SHARED, read-only: a
# machine's seed, or CI's), checked as a build of ours is (every option of
# the fragment in its config), is copied into the cache instead of
# building for half an hour.
SHARED=${GMS_SHARED_KERNELS:-$(dirname "$ROOT")/shared/kernels}
if [[ -f $SHARED/$KEY/bzImage && -f $SHARED/$KEY/config ]]; then
    LOST=$(lost_options "$SHARED/$KEY/config")
    if [[ -n $LOST ]]; then
        log "not using $SHARED/$KEY: options of $(basename "$FRAGMENT") missing from its config:
$LOST"
    else
        rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp"
        cp "$SHARED/$KEY/bzImage" "$SHARED/$KEY/config" "$OUT.tmp/"
        for f in build-seconds source-version build.log; do
            [[ ! -f $SHARED/$KEY/$f ]] || cp "$SHARED/$KEY/$f" "$OUT.tmp/"
        done
        [[ -f $OUT.tmp/source-version ]] || echo "$VERSION" >"$OUT.tmp/source-version"
        echo "$SHARED/$KEY" >"$OUT.tmp/copied-from"
        chmod -R u+w "$OUT.tmp"
        touch "$OUT.tmp/.complete"
        rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
        log "cache seeded from $SHARED/$KEY (its config holds every option of the fragment): $OUT; ${SECONDS} s, no build"
        echo "$OUT"
        exit 0
    fi
else
    log "no prebuilt kernel for $KEY in $SHARED: building"
fi

START=$SECONDS
WORK=$KERNELS/work-$KEY
# An interrupted build resumes: the unpacked tree stays (marked .unpacked)
# and make rebuilds only what is missing or out of date.
SRC=""
[[ -d $WORK ]] && SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)
if [[ -n $SRC && -f $WORK/.unpacked ]]; then
    log "resuming the build in $WORK ($(cat "$WORK/.seconds" 2>/dev/null || echo 0) s spent before)"
else
    rm -rf "$WORK"; mkdir -p "$WORK"
    log "downloading $SRC_PKG $VERSION"
    (cd "$WORK" && quiet private_apt apt-get download "$SRC_PKG=$VERSION") || die "apt-get download $SRC_PKG=$VERSION failed"
    log "unpacking"
    dpkg-deb --fsys-tarfile "$WORK"/"${SRC_PKG}"_*.deb | tar -xO --wildcards '*usr/src/linux-source-*.tar.xz' |
        tar -xJ -C "$WORK"
    rm -f "$WORK"/*.deb
    SRC=$(find "$WORK" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n 1)
    [[ -n $SRC ]] || die "no linux-source-* directory in $SRC_PKG"
    touch "$WORK/.unpacked"
fi
# The build time counts every run that worked on this tree: an
# interrupted run adds its share when it exits.
add_seconds() {
    local before
    before=$(cat "$WORK/.seconds" 2>/dev/null || echo 0)
    echo $((before + SECONDS - START)) >"$WORK/.seconds"
    START=$SECONDS
}
trap 'add_seconds' EXIT

BUILD_LOG=$WORK/build.log
log "configuring: x86_64_defconfig + $(basename "$FRAGMENT")"
(cd "$SRC" && make x86_64_defconfig && scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" &&
    make olddefconfig) >"$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "configuring failed"; }
LOST=$(lost_options "$SRC/.config")
[[ -z $LOST ]] || die "options of $(basename "$FRAGMENT") lost in .config (a dependency is missing):
$LOST"

log "building bzImage with $JOBS jobs (about 30 min on 2 cores); log: $BUILD_LOG"
(cd "$SRC" && nice -n 5 make -j"$JOBS" bzImage) >>"$BUILD_LOG" 2>&1 ||
    { tail -n 40 "$BUILD_LOG" >&2; die "make bzImage failed; log: $BUILD_LOG"; }

rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp"
cp "$SRC/arch/x86/boot/bzImage" "$SRC/.config" "$OUT.tmp/"
mv "$OUT.tmp/.config" "$OUT.tmp/config"
cp "$BUILD_LOG" "$OUT.tmp/build.log"
echo "$VERSION" >"$OUT.tmp/source-version"
add_seconds
trap - EXIT
cp "$WORK/.seconds" "$OUT.tmp/build-seconds"
touch "$OUT.tmp/.complete"
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
rm -rf "$WORK"
log "built $OUT in $(cat "$OUT/build-seconds") s"
echo "$OUT"
