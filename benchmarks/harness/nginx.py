"""Running Debian's nginx from a private prefix in the run's temp dir.

Both the backends (nginx serving content) and the nginx peer (nginx as a proxy)
start nginx this way: their own configuration, pid file, logs and temp paths under
one directory, in the foreground, so nothing touches /etc/nginx or /var/lib/nginx.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from benchmarks.harness.procs import ManagedProcess

INSTALL_HINT = "apt-get install -y nginx-light"
STREAM_HINT = "apt-get install -y libnginx-mod-stream"


def find_binary(nginx: str = "nginx") -> str:
    found = shutil.which(nginx)
    if found is None:
        raise FileNotFoundError(f"{nginx} not found ({INSTALL_HINT})")
    return found


@functools.cache
def build_options(binary: str) -> str:
    """`nginx -V`: the configure arguments say which modules are built in or dynamic."""
    done = subprocess.run([binary, "-V"], capture_output=True, text=True, check=False)
    return done.stderr + done.stdout


def version(binary: str) -> str:
    return build_options(binary).splitlines()[0] if build_options(binary) else "unknown"


def stream_module_line(binary: str) -> str:
    """The `load_module` line the stream module needs ('' when it is built in).

    Debian builds nginx with `--with-stream=dynamic` and ships the module in
    libnginx-mod-stream; Debian's own nginx.conf loads it through modules-enabled,
    which a private configuration does not read, so the line is written here.
    Raises FileNotFoundError when this nginx has no stream module at all.
    """
    options = build_options(binary)
    if re.search(r"--with-stream(\s|$)", options):
        return ""
    if "--with-stream=dynamic" not in options:
        raise FileNotFoundError(f"{binary} is built without the stream module")
    found = re.search(r"--modules-path=(\S+)", options)
    module = Path(found.group(1) if found else "/usr/lib/nginx/modules") / "ngx_stream_module.so"
    if not module.exists():
        raise FileNotFoundError(f"{module} not found ({STREAM_HINT})")
    return f"load_module {module};"


def user_line() -> str:
    # nginx drops worker privileges to "nobody" when started as root, and nobody
    # may not be able to read a root-owned temp dir; run the workers as root then.
    return "user root;" if os.geteuid() == 0 else ""


def temp_paths(prefix: Path) -> str:
    """http-block lines: the temp paths default to /var/lib/nginx; keep them inside."""
    return "".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def base_argv(binary: str, prefix: Path, conf: Path) -> list[str]:
    # -e: the error log used before the configuration is read (Debian's default,
    # stderr, would be fine too, but this keeps all nginx output in one place).
    return [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]


def run_argv(binary: str, prefix: Path, conf: Path) -> list[str]:
    return [*base_argv(binary, prefix, conf), "-g", "daemon off;"]


def check_argv(binary: str, prefix: Path, conf: Path) -> list[str]:
    return [*base_argv(binary, prefix, conf), "-t", "-q"]


def start(name: str, binary: str, prefix: Path, conf: Path) -> ManagedProcess:
    """nginx in the foreground from `prefix` (which must hold a tmp/ dir)."""
    return ManagedProcess(name, run_argv(binary, prefix, conf), prefix / "stdout.log")
