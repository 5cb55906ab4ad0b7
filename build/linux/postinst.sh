#!/bin/sh
# .deb postinst (electron-builder afterInstall): the desktop command and sandbox, the
# admin group, the service unit, start.
# Never touches /var/lib/branchsan: that is the operator's storage.
set -e

UNIT_SRC=/opt/BranchSAN/resources/linux/branchsan.service
UNIT_DST=/lib/systemd/system/branchsan.service

# Members of branchsan-admin may open the engine socket (mode 0660).
if ! getent group branchsan-admin >/dev/null; then
  groupadd --system branchsan-admin
fi
# The person installing through sudo/pkexec manages the engine from the desktop app.
for uid_user in "${SUDO_USER:-}" "$(getent passwd "${PKEXEC_UID:-x}" 2>/dev/null | cut -d: -f1)"; do
  if [ -n "$uid_user" ] && [ "$uid_user" != root ] && id "$uid_user" >/dev/null 2>&1; then
    usermod -a -G branchsan-admin "$uid_user" || true
    echo "BranchSAN: added $uid_user to branchsan-admin (log out and in again to use it)."
  fi
done

# What electron-builder's own after-install template does (a custom script replaces
# it): the desktop command on PATH, Chromium's sandbox helper, the desktop databases
# and the AppArmor profile. electron-builder fills in the executable's name.
APP_DIR=/opt/BranchSAN
DESKTOP_BIN='${executable}'
if command -v update-alternatives >/dev/null 2>&1; then
  # an older plain symlink stands in the way of the alternative
  if [ -L "/usr/bin/$DESKTOP_BIN" ] && [ "$(readlink "/usr/bin/$DESKTOP_BIN")" != "/etc/alternatives/$DESKTOP_BIN" ]; then
    rm -f "/usr/bin/$DESKTOP_BIN"
  fi
  update-alternatives --install "/usr/bin/$DESKTOP_BIN" "$DESKTOP_BIN" "$APP_DIR/$DESKTOP_BIN" 100 ||
    ln -sf "$APP_DIR/$DESKTOP_BIN" "/usr/bin/$DESKTOP_BIN"
else
  ln -sf "$APP_DIR/$DESKTOP_BIN" "/usr/bin/$DESKTOP_BIN"
fi
# Chromium's renderer sandbox needs unprivileged user namespaces; where the kernel or
# AppArmor refuses them, the setuid helper takes over (without it the window cannot start).
if [ -L /proc/self/ns/user ] && unshare --user true 2>/dev/null; then
  chmod 0755 "$APP_DIR/chrome-sandbox" || true
else
  chmod 4755 "$APP_DIR/chrome-sandbox" || true
fi
if command -v update-mime-database >/dev/null 2>&1; then update-mime-database /usr/share/mime || true; fi
if command -v update-desktop-database >/dev/null 2>&1; then
  update-desktop-database /usr/share/applications || true
fi
# Ubuntu 24.04+ restricts user namespaces to programs with an AppArmor profile.
if apparmor_status --enabled >/dev/null 2>&1; then
  PROFILE_SRC="$APP_DIR/resources/apparmor-profile"
  PROFILE_DST="/etc/apparmor.d/$DESKTOP_BIN"
  if apparmor_parser --skip-kernel-load --debug "$PROFILE_SRC" >/dev/null 2>&1; then
    cp -f "$PROFILE_SRC" "$PROFILE_DST"
    if ! { [ -x /usr/bin/ischroot ] && /usr/bin/ischroot; }; then
      apparmor_parser --replace --write-cache --skip-read-cache "$PROFILE_DST" || true
    fi
  else
    echo "BranchSAN: this AppArmor cannot parse the bundled profile; not installed." >&2
  fi
fi

install -m 0644 "$UNIT_SRC" "$UNIT_DST"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable branchsan.service >/dev/null
  # restart on upgrade, start on first install
  systemctl restart branchsan.service || echo "BranchSAN: the engine did not start; see: journalctl -u branchsan" >&2
fi
exit 0
