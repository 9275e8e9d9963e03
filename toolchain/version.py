"""The edgec version (a module of its own so that any layer can read it without importing the
package's re-exports)."""

__version__ = "0.1.0"


STACK = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "numpy",
         "tokenizers")  # fmt: skip


def stack_versions() -> dict[str, str | None]:
    """The versions of edgec, Python and the libraries a build's figures depend on (None: not
    installed)."""
    import platform

    out: dict[str, str | None] = {"edgec": __version__, "python": platform.python_version()}
    return out | {dist: dist_version(dist) for dist in STACK}


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` from its metadata (nothing is imported),
    or None where it is not installed."""
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
