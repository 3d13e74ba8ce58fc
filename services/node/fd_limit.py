"""The open-file limit every service process raises at start.

Each TCP connection is a file descriptor. The common soft limit of 1024 (systemd, most shells) let
~1,100 silent connections to the gateway make every new API and console connection fail (accept()
gets EMFILE), and the mesh service holds a socket per tunnelled stream. The hard limit is what the
user or the system allows this process; raising the soft one to it needs no privilege.
"""

from __future__ import annotations

import resource
import sys

# macOS reports an unlimited hard limit but refuses a soft limit above OPEN_MAX; Linux refuses one
# above fs.nr_open (1048576 by default). Where the hard limit is "unlimited" this is asked instead.
UNLIMITED_FALLBACK_OPEN_FILES = 10240 if sys.platform == "darwin" else 1 << 20


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (idempotent); returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft == hard:
        return soft
    wanted = [hard] if hard != resource.RLIM_INFINITY else []
    for target in (*wanted, UNLIMITED_FALLBACK_OPEN_FILES):
        if target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue  # above what the kernel takes: try the next, else keep what we have
        return target
    return soft


def open_files_limit() -> int:
    """The soft RLIMIT_NOFILE now in force (RLIM_INFINITY as a large number)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_FALLBACK_OPEN_FILES if soft == resource.RLIM_INFINITY else soft
