"""A local Triton Inference Server: the ``tritonserver`` shipped in ``nvidia-pytriton``.

It serves a plain model repository (``model_repository/`` of this project) on CPU. Three traps,
all handled here (see ENVIRONMENT.md):

1. the Python-backend stub links the system ``libpython3.11`` and crashes with pyenv's stdlib
   unless ``LD_LIBRARY_PATH`` starts with this interpreter's ``LIBDIR``;
2. the stub drops ``PYTHONPATH``: the venv's site-packages are passed to ``model.py`` in
   ``PHAGOFLOW_TRITON_SITE_PACKAGES`` instead;
3. numpy 2 makes the Python backend return empty tensors: the venv keeps numpy < 2.

Only the Python backend is bundled, so the local model runs ONNX Runtime inside a Python-backend
model; production Triton images serve the same ``model.onnx`` with the onnxruntime or TensorRT
backends. The backend folder Triton wants (``backends/python`` with the stub next to the
backend library) is assembled in a work folder.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sysconfig
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from phagoflow.stack.process import ManagedProcess, StackError, address

__all__ = ["TritonServer", "pytriton_root"]


def pytriton_root() -> Path:
    """``pytriton/tritonserver`` inside the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("Triton needs nvidia-pytriton: pip install 'nvidia-pytriton==0.7.0'")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise StackError(f"nvidia-pytriton is installed but has no tritonserver under {root}")
    return root


class TritonServer(ManagedProcess):
    """tritonserver on loopback serving a model repository; :attr:`port` is the gRPC port.

    Parameters
    ----------
    model_repository : Path
        Folder of models (``<name>/config.pbtxt``, ``<name>/<version>/model.py``).
    model_env : mapping, optional
        Extra environment for the models, e.g. ``PHAGOFLOW_MODEL_ONNX``.
    workdir : Path, optional
        Where the backend folder is assembled (a temporary folder by default).
    http_port, metrics_port : int
        Triton's HTTP (readiness) and metrics ports; 0 lets the OS choose.
    models : sequence of str
        Models to load (explicit model control): the repository also holds the GPU configs
        (``autophagy_unet`` with the onnxruntime backend, ``autophagy_unet_trt``) that this CPU
        tritonserver, which has only the Python backend, cannot load.
    **kwargs
        :class:`~phagoflow.stack.process.ManagedProcess` options; ``port`` is the gRPC port.

    Notes
    -----
    Ports left to the OS (0) are bound by tritonserver itself and read back from ``/proc``.
    tritonserver refuses HTTP and gRPC on the same address *and* port, which port 0 on both
    would be; so when any port is 0, its three listeners get three loopback addresses
    (``host``, ``host`` + 1, ``host`` + 2 in the last octet, e.g. 127.0.0.1 gRPC, 127.0.0.2
    HTTP, 127.0.0.3 metrics), and each port is told apart by its address. With fixed ports all
    three listen on ``host``.
    """

    name: ClassVar[str] = "triton"
    #: :attr:`url` is the gRPC address ``127.0.0.1:PORT`` (what ``tritonclient.grpc`` takes).
    url_scheme: ClassVar[str] = ""

    def __init__(
        self,
        model_repository: Path,
        *,
        model_env: dict[str, str] | None = None,
        workdir: Path | None = None,
        http_port: int = 0,
        metrics_port: int = 0,
        models: Sequence[str] = ("autophagy_unet_cpu",),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("startup_timeout_s", 120.0)
        env = dict(kwargs.pop("env", None) or {})
        env.update(_python_backend_env())
        env.update(model_env or {})
        super().__init__(env=env, **kwargs)
        self.model_repository = Path(model_repository).resolve()
        self._workdir = Path(workdir) if workdir is not None else None
        self.http_port = http_port
        self.metrics_port = metrics_port
        self.models = tuple(models)
        fixed = bool(self.bind_port and http_port and metrics_port)
        self.http_host = self.host if fixed else _loopback_plus(self.host, 1)
        self.metrics_host = self.host if fixed else _loopback_plus(self.host, 2)

    @property
    def http_url(self) -> str:
        """``http://HTTP_HOST:HTTP_PORT``."""
        return address(self.http_host, self.http_port, "http")

    @property
    def metrics_target(self) -> str:
        """``host:port`` of the metrics endpoint, as a Prometheus scrape target."""
        return address(self.metrics_host, self.metrics_port)

    @property
    def metrics_url(self) -> str:
        """``http://METRICS_HOST:METRICS_PORT/metrics`` (Prometheus text format)."""
        return f"http://{self.metrics_target}/metrics"

    def claim_ports(self, sockets: list[tuple[str, int]]) -> bool:
        """All three listeners are up; ports left at 0 are taken from their addresses."""
        wanted = {"grpc": self.host, "http": self.http_host, "metrics": self.metrics_host}
        given = {"grpc": self._port, "http": self.http_port, "metrics": self.metrics_port}
        found: dict[str, int] = {}
        for role, host in wanted.items():
            ports = sorted({port for addr, port in sockets if addr == host})
            if given[role]:
                if given[role] not in ports:
                    return False
                found[role] = given[role]
            elif len(ports) == 1:
                found[role] = ports[0]
            elif ports:
                raise StackError(f"triton: several {role} ports {ports} on {host}")
            else:
                return False
        self._port, self.http_port, self.metrics_port = (
            found["grpc"],
            found["http"],
            found["metrics"],
        )
        return True

    def backend_dir(self) -> Path:
        """``<workdir>/backends`` with ``python/`` = backend library + utils + 3.11 stub."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="phagoflow-triton-"))
        root = pytriton_root()
        python = self._workdir / "backends" / "python"
        python.mkdir(parents=True, exist_ok=True)
        sources = [
            *(p for p in (root / "backends" / "python").iterdir() if p.is_file()),
            root / "python_backend_stubs" / "3.11" / "triton_python_backend_stub",
        ]
        for src in sources:
            dst = python / src.name
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                shutil.copy2(src, dst)
        return self._workdir / "backends"

    def command(self) -> list[str]:
        if not self.model_repository.is_dir():
            raise StackError(f"no model repository at {self.model_repository}")
        return [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir()}",
            f"--grpc-port={self.bind_port}",
            f"--grpc-address={self.host}",
            f"--http-port={self.http_port}",
            f"--http-address={self.http_host}",
            f"--metrics-port={self.metrics_port}",
            f"--metrics-address={self.metrics_host}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in self.models),
        ]

    def is_ready(self) -> bool:
        """Triton answers ``/v2/health/ready`` (every model loaded)."""
        try:
            url = f"{self.http_url}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            grpc=self.url if self._port else None,
            http=self.http_url if self.http_port else None,
            metrics_port=self.metrics_port or None,
            metrics_url=self.metrics_url if self.metrics_port else None,
            model_repository=str(self.model_repository),
        )
        return info


def _loopback_plus(host: str, n: int) -> str:
    """``host`` with ``n`` added to its last octet; only for IPv4 loopback (127.0.0.0/8)."""
    parts = host.split(".")
    if len(parts) != 4 or parts[0] != "127" or not all(p.isdigit() for p in parts):
        raise StackError(
            f"triton on port 0 needs an IPv4 loopback host (127.x.y.z), got {host!r}; "
            "give it fixed grpc, http and metrics ports instead"
        )
    last = int(parts[3]) + n
    if not 0 < last < 255:
        raise StackError(f"triton: no loopback address {n} after {host}")
    return ".".join([*parts[:3], str(last)])


def _python_backend_env() -> dict[str, str]:
    """LD_LIBRARY_PATH (trap 1) and the venv's site-packages for model.py (trap 2)."""
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    # the copied stub's RPATH ($ORIGIN/../../../../nvidia_pytriton.libs) no longer resolves
    wheel_libs = str(pytriton_root().parent.parent / "nvidia_pytriton.libs")
    old = os.environ.get("LD_LIBRARY_PATH", "")
    folders = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    folders += site.getsitepackages()
    unique = list(dict.fromkeys(f for f in folders if f))
    return {
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, wheel_libs, old) if p),
        "PHAGOFLOW_TRITON_SITE_PACKAGES": os.pathsep.join(unique),
    }
