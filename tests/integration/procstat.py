"""What a process under test holds, read from /proc: its resident memory, descriptors and CPU time, and
a sampler of its peak RSS while an attack or a load runs. Shared by the tests that bound them."""
import os
import threading
import time


def rss_bytes(pid):
    """The process's resident set (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def rss_kib(pid):
    """The process's resident set (VmRSS), in KiB."""
    return rss_bytes(pid) // 1024


def fd_count(pid):
    """Descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    """User and system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssPeak:
    """Samples a process's RSS (bytes) every `period` seconds on a thread while in a `with` block; .peak is
    the most seen. Stops quietly when the process is gone."""

    def __init__(self, pid, period=0.02):
        self.pid, self.period = pid, period
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
