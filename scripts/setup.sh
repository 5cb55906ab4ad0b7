#!/usr/bin/env bash
# Prepares a machine to run and test BranchSAN: Debian packages (as root, only the
# missing ones), the npm dependencies (skipped when package-lock.json is unchanged),
# and the Linux NVMe/TCP host VM used by the conformance tests (when ../shared/linux-host
# exists). Idempotent: a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

# Node.js 20.19 or later (package.json "engines"; Vite needs it). Debian 12's own
# nodejs is 18: npm would only warn, and the build would fail late inside Vite.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "Node.js 20.19 or later with npm is needed and was not found on PATH; install Node.js 20 (e.g. the NodeSource nodejs package), then run this again"
  exit 1
fi
node_version=$(node --version)
IFS=. read -r node_major node_minor _ <<<"${node_version#v}"
if ((node_major < 20 || (node_major == 20 && node_minor < 19))); then
  log "Node.js $node_version is too old: BranchSAN needs 20.19 or later; install Node.js 20 (e.g. the NodeSource nodejs package), then run this again"
  exit 1
fi

# Debian packages: chromium (console e2e tests), qemu (the Linux host VM; qemu-utils'
# qemu-io for the disk-image lock test), iproute2, tshark (Wireshark's NVMe/TCP
# dissector checks captured traffic).
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v make >/dev/null 2>&1 || need+=(make)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need[*]}"
    apt-get update -qq
    # tshark asks whether non-root users may capture; answer no, without a prompt
    echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    log "missing packages: ${need[*]} (install them with apt as root; some tests will skip and say why)"
  fi
fi

# npm dependencies. The Electron binary cannot be downloaded offline; its install
# script is denied in package.json (allowScripts) and this variable keeps it quiet.
export ELECTRON_SKIP_BINARY_DOWNLOAD=1
stamp=node_modules/.branchsan-lock.sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "npm ci"
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

# The real Linux kernel NVMe/TCP host (QEMU) for conformance tests.
lh=../shared/linux-host
if [ -x "$lh/setup.sh" ]; then
  "$lh/setup.sh" >&2 || log "linux-host setup failed: conformance tests will say so"
fi
log "ready"
