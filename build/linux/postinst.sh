#!/bin/sh
# .deb postinst (electron-builder afterInstall): the admin group, the service unit, start.
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

install -m 0644 "$UNIT_SRC" "$UNIT_DST"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable branchsan.service >/dev/null
  # restart on upgrade, start on first install
  systemctl restart branchsan.service || echo "BranchSAN: the engine did not start; see: journalctl -u branchsan" >&2
fi
exit 0
