# Shell shared by the VM lane's scripts (sourced, not run): logging, quiet
# commands, package installs and apt with a private state under a cache.
# The sourcing script sets LOG_TAG (the prefix of its messages).

log() { echo "${LOG_TAG:-vm}: $*" >&2; }
skip() { echo "SKIPPED: $*"; exit 77; }
die() { echo "${LOG_TAG:-vm}: error: $*" >&2; exit 1; }

# Runs a command silently; shows its output only if it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        echo "${LOG_TAG:-vm}: failed: $*" >&2
        ERR_SHOWN=1
        return 1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Installs the named Debian packages that are missing; returns 1 if that fails.
install_packages() {
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    quiet apt-get update && DEBIAN_FRONTEND=noninteractive \
        quiet apt-get install -y --no-install-recommends "${missing[@]}"
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

# apt with its own sources list, lists and cache under $APT_DIR: the
# system's apt configuration and state are only read, never written.
# Sandbox::User=root: the _apt user may not be able to write into $APT_DIR.
private_apt() {
    local tool=$1; shift
    "$tool" -o Dir::Etc::sourcelist="$APT_DIR/sources.list" -o Dir::Etc::sourceparts=- \
        -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache" \
        -o APT::Sandbox::User=root "$@"
}

# Points the private apt at SUITE of the system's mirror and updates its
# lists; returns 1 (with the reason logged) if there is no mirror or the
# update fails.
private_apt_suite() {
    local suite=$1 mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts=""
    mirror=$(system_mirror)
    [[ -n $mirror ]] || { log "no Debian mirror found in /etc/apt/sources.list{,.d}"; return 1; }
    [[ -f $keyring ]] && opts="[signed-by=$keyring] "
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    echo "deb ${opts}${mirror} $suite main" >"$APT_DIR/sources.list"
    log "fetching the package lists of $suite from $mirror"
    quiet private_apt apt-get update || { log "apt-get update of $mirror $suite failed"; return 1; }
}
