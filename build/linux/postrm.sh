#!/bin/sh
# .deb postrm (electron-builder afterRemove): stop and remove the unit. The data in
# /var/lib/branchsan and the branchsan-admin group stay, even on purge: they hold
# the operator's volumes and access; removing them is a deliberate manual step.
set -e
case "$1" in
  remove|purge)
    if [ -d /run/systemd/system ]; then
      systemctl disable --now branchsan.service >/dev/null 2>&1 || true
    fi
    rm -f /lib/systemd/system/branchsan.service
    # electron-builder's after-remove template (a custom script replaces it)
    if command -v update-alternatives >/dev/null 2>&1; then
      update-alternatives --remove '${executable}' '/opt/BranchSAN/${executable}' || true
    fi
    if [ -L '/usr/bin/${executable}' ] && [ ! -e '/usr/bin/${executable}' ]; then
      rm -f '/usr/bin/${executable}'
    fi
    rm -f '/etc/apparmor.d/${executable}'
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    ;;
esac
exit 0
