"""sd_notify(3) without a dependency: a few lines on the datagram socket in $NOTIFY_SOCKET.

`Notifier().notify("READY=1", "STATUS=reading INBOX")` tells systemd (Type=notify) how the
service is doing. Without $NOTIFY_SOCKET (not under systemd) every call is a no-op returning
False; a failure to send is logged once at debug level and never raised.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._watchdog = (env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", ""))
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is a socket in the abstract namespace; anything else must be a path.
        self.address = "\0" + path[1:] if path.startswith("@") else path
        if path and not path.startswith(("/", "@")):
            log.debug("NOTIFY_SOCKET=%r is not a socket path; not notifying", path)
            self.address = ""
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *lines: str) -> bool:
        """Sends `lines` ("READY=1", "STATUS=...") as one datagram; True if it was sent."""
        if not self.address:
            return False
        if "RELOADING=1" in lines and not any(x.startswith("MONOTONIC_USEC=") for x in lines):
            # systemd 253+ wants the time of the reload request next to RELOADING=1.
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            lines = (*lines, f"MONOTONIC_USEC={usec}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
        except (OSError, ValueError) as exc:
            if not self._warned:
                self._warned = True
                log.debug("sd_notify to %r failed: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1, in seconds (half of WatchdogSec=), or None if off."""
        try:
            usec = int(self._watchdog[0])
            pid = int(self._watchdog[1] or os.getpid())
        except ValueError:
            return None
        if usec <= 0 or pid != os.getpid():
            return None
        return usec / 2_000_000


def watchdog_interval() -> float | None:
    """`Notifier().watchdog_interval()` for the current environment."""
    return Notifier().watchdog_interval()
