"""Build of the native data path (loadstone._fastpath.relay), optional by design.

Everything else about the package is in pyproject.toml. This file only adds the
Cython extension, and makes its absence harmless: on a platform without epoll
and splice (anything but Linux), without a C compiler, or with
LOADSTONE_NO_EXTENSIONS=1 set at build time, the package installs without it
and loadstone runs its pure-Python data path. The build says which variant it
made, on stderr (`pip install -v` shows it) and in
`loadstone._fastpath.relay.BUILD`.

LOADSTONE_DEBUG_BUILD=1 builds for profiling: no optimisation, debug symbols,
Cython line tracing (also in nogil code) and an annotated HTML view of the
generated C next to the source (src/_fastpath/relay.html):

    LOADSTONE_DEBUG_BUILD=1 .venv/bin/pip install -e .

LOADSTONE_SANITIZE=address,undefined builds it under AddressSanitizer and
UndefinedBehaviorSanitizer (-O1, frame pointers kept, UBSan reports fatal) for
scripts/sanitize-tests. CPython itself is not instrumented, so importing the
result needs the sanitizer runtime preloaded; that script sets it up:

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 ...
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
FASTPATH = os.path.join("src", "_fastpath")
# The C engine: engine.c includes the other files of the folder (one unit).
ENGINE = os.path.join(FASTPATH, "engine")
# llhttp (MIT), the HTTP parser of the native HTTP engine, built in from source:
# the release httptools bundles, see its README.md.
LLHTTP = os.path.join(FASTPATH, "vendor", "llhttp")


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _sanitizers() -> list[str]:
    """LOADSTONE_SANITIZE, e.g. "address,undefined": the -fsanitize list."""
    wanted = [name.strip() for name in os.environ.get("LOADSTONE_SANITIZE", "").split(",")]
    return [name for name in wanted if name]


def _say(message: str) -> None:
    print(f"loadstone build: {message}", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that falls back to no extension instead of failing the install."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if _sanitizers():
            # its own objects, always rebuilt: never mixed with a release build's
            self.build_temp = os.path.join(self.build_temp, "sanitize")
            self.force = True

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any failure means "no extension"
            self._skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)
        else:
            debug = _flag("LOADSTONE_DEBUG_BUILD")
            variant = "debug (annotated, line tracing)" if debug else "release"
            if _sanitizers():
                variant = "sanitize=" + ",".join(_sanitizers())
            _say(f"built the native data path {ext.name}, {variant} variant")

    @staticmethod
    def _skipped(exc: BaseException) -> None:
        _say(
            f"the native data path was not built ({type(exc).__name__}: {exc}); "
            "installing the pure-Python data path only"
        )
        _drop_stale_inplace_build()


def _drop_stale_inplace_build() -> None:
    """An editable install imports the extension from src/loadstone/_fastpath/: a
    build that makes none must not leave an older one there to be imported, or a
    failed rebuild would silently keep running the previous engine."""
    folder = os.path.join(HERE, "src", "loadstone", "_fastpath")
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith("relay.") and name.endswith(".so"):
            os.remove(os.path.join(folder, name))
            _say(f"removed the earlier build {name} (it would be imported instead)")


def extensions() -> list[Extension]:
    built = _extensions()
    if not built:
        _drop_stale_inplace_build()
    return built


def _extensions() -> list[Extension]:
    if _flag("LOADSTONE_NO_EXTENSIONS"):
        _say("LOADSTONE_NO_EXTENSIONS is set: pure-Python data path only")
        return []
    if not sys.platform.startswith("linux"):
        _say(f"no epoll/splice on {sys.platform}: pure-Python data path only")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not available: pure-Python data path only")
        return []

    debug = _flag("LOADSTONE_DEBUG_BUILD")
    sanitize = _sanitizers()
    variant = "sanitize" if sanitize else "debug" if debug else "release"
    macros = [("LS_BUILD_VARIANT", f'"{variant}"')]
    directives = {"language_level": 3, "embedsignature": True}
    if debug:
        macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
        directives.update(linetrace=True, binding=True, profile=True)
        cflags = ["-O0", "-g3", "-fno-omit-frame-pointer"]
    else:
        cflags = ["-O2", "-g", "-fno-strict-aliasing"]
    ldflags: list[str] = []
    if sanitize:
        # -O1 keeps the reports' stacks readable at a bearable speed; a UBSan
        # finding stops the process like an ASan one, so no report goes unseen.
        fsanitize = "-fsanitize=" + ",".join(sanitize)
        cflags = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-strict-aliasing", fsanitize]
        if "undefined" in sanitize:
            cflags.append("-fno-sanitize-recover=undefined")
        ldflags = [fsanitize]
    # TLS termination in the workers (engine/tls.c): the system's OpenSSL 3
    # (Debian libssl-dev, in scripts/test's PACKAGES).
    libraries = ["ssl", "crypto"]
    # Cythonized under its short name so that Cython pairs relay.pyx with the
    # relay.pxd beside it (under the dotted name it would look for the .pxd in a
    # loadstone/_fastpath/ tree that src/_fastpath is not); built under the full
    # name, which only has to end in the same PyInit_relay.
    ext = Extension(
        "relay",
        sources=[
            os.path.join(FASTPATH, "relay.pyx"),
            os.path.join(ENGINE, "engine.c"),
            *(os.path.join(LLHTTP, "src", name) for name in ("api.c", "http.c", "llhttp.c")),
        ],
        include_dirs=[
            os.path.join(FASTPATH, "includes"),
            ENGINE,
            FASTPATH,
            os.path.join(LLHTTP, "include"),
        ],
        define_macros=macros,
        # hidden: only PyInit_relay is exported, so llhttp's symbols cannot meet
        # another copy of llhttp loaded in the process (httptools' parser)
        extra_compile_args=[*cflags, "-Wall", "-Wno-unused-function", "-fvisibility=hidden"],
        extra_link_args=ldflags,
        libraries=libraries,
        depends=[
            os.path.join(FASTPATH, "includes", name)
            for name in (
                "engine.h",
                "engine_metrics.h",
                "blake2b.h",
                "uring.h",
                "tls.h",
                "sni.h",
                "clienthello.h",
                "engine.pxd",
                "engine_metrics.pxd",
            )
        ]
        + [os.path.join(ENGINE, name) for name in sorted(os.listdir(ENGINE))]
        + [os.path.join(FASTPATH, "relay.pxd"), os.path.join(LLHTTP, "include", "llhttp.h")],
    )
    try:
        _say(f"building the native data path, {variant} variant")
        built = cythonize(
            [ext],
            include_path=[FASTPATH],
            compiler_directives=directives,
            annotate=debug,
            force=debug or bool(sanitize),
            quiet=True,
        )
        for module in built:
            module.name = "loadstone._fastpath." + module.name
        return list(built)
    except Exception as exc:  # a Cython error must not fail the install
        _say(f"Cython failed ({exc}): pure-Python data path only")
        return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
