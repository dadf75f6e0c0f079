"""Load and run each runtime inside the probe process.

This file is copied to remote devices (a Jetson over SSH) and run there without edgedistill
installed: it imports only the standard library and numpy at module level, and each runtime
inside the functions that need it, so the probe can time the import itself.

A Session runs ONE inference per call; the harness owns the only timing loop. Every Session
checks the input against what the model declares before running, because some runtimes accept
a wrong shape silently (OpenVINO runs a 28x28 image through a 32x32 model with adaptive pooling).

A Session records `load_parts["read_ms"]`, the time spent reading the model file, so the probe
can split loading into read and compile. `cache` asks for the runtime's own compiled-model cache:
{"mode": "miss" | "hit", "dir": folder}; backends without one refuse it.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

# backend -> module whose import the probe times (ExecuTorch's Python runtime imports torch).
RUNTIME_MODULE: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "executorch": "executorch.runtime",
    "tensorrt": "tensorrt",
    "litert": "ai_edge_litert.interpreter",  # the runtime alone: no torch, no TensorFlow, no jax
    "ort-mobile": "onnxruntime",  # an .ort file: ONNX Runtime's own format, its usual session
}

# Distribution names each runtime ships under, most common first.
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                    "onnxruntime-directml"),
    "openvino": ("openvino",),
    "executorch": ("executorch",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
}
_DISTRIBUTIONS["ort-mobile"] = _DISTRIBUTIONS["onnxruntime"]


def _check_backend(backend: str) -> None:
    if backend not in RUNTIME_MODULE:
        raise ValueError(f"unknown backend {backend!r}; "
                         f"expected one of {', '.join(RUNTIME_MODULE)}")


def import_runtime(backend: str) -> Any:
    """Import and return the runtime's module (the caller times this)."""
    _check_backend(backend)
    return importlib.import_module(RUNTIME_MODULE[backend])


def runtime_version(backend: str) -> str | None:
    """The runtime's version from package metadata, else from the imported module (JetPack's
    TensorRT comes from a system package with no Python metadata)."""
    _check_backend(backend)
    for dist in _DISTRIBUTIONS[backend]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    module = sys.modules.get(RUNTIME_MODULE[backend].split(".")[0])
    return getattr(module, "__version__", None)


# Backends with a compiled-model cache the probe can drive, and what that cache is.
CACHE_MECHANISMS: dict[str, str] = {
    "onnxruntime": "ONNX Runtime optimized model (saved on a miss, reloaded with graph "
                   "optimizations off on a hit)",
    "openvino": "OpenVINO model cache (CACHE_DIR)",
}


def load(backend: str, path: str, *, threads: int, device: str = "CPU",
         options: dict | None = None, cache: dict | None = None, precision: str | None = None,
         shapes: dict | None = None) -> Session:
    """Open the model at `path` with `threads` applied explicitly, ready for run().

    `shapes` ({input name: [int, ...]}) gives static shapes for dynamic dimensions, as
    benchmark_app's -shape does: OpenVINO reshapes the model to them before compiling (its CPU
    plugin compiles for the shapes it is given); ONNX Runtime and ExecuTorch take the shape from
    the data, so for them it only has to fit what the model declares.
    """
    _check_backend(backend)
    if cache and backend not in CACHE_MECHANISMS:
        raise ValueError(f"{backend} has no model cache the probe can measure")
    session_class = {
        "onnxruntime": OnnxRuntimeSession,
        "openvino": OpenVinoSession,
        "executorch": ExecuTorchSession,
        "tensorrt": TensorRTSession,
        "litert": LiteRTSession,
        "ort-mobile": OnnxRuntimeSession,  # InferenceSession reads .ort files as they are
    }[backend]
    options = dict(options or {})
    if backend == "openvino" and precision != "fp16":
        # OpenVINO's CPU plugin computes in bf16 by default where the CPU has it (AVX512_BF16,
        # AMX), which changed an fp32 student's logits by 0.14 here; an fp32 artifact (and the
        # non-quantized layers of an int8 one) must run in fp32 to be what was verified. Only an
        # fp16 artifact leaves the choice to the device.
        options.setdefault("INFERENCE_PRECISION_HINT", "f32")
    session = session_class(str(path), threads=threads, device=device, options=options, cache=cache,
                            shapes=dict(shapes or {}))
    _check_shapes(session, shapes or {})
    return session


def _check_shapes(session: Session, shapes: dict) -> None:
    """Every shape given names an input of the model and fits what it declares (a runtime that
    takes the shape from the data ignores it otherwise, so a typo would pass unseen)."""
    declared = {spec["name"]: spec["shape"] for spec in session.inputs}
    for name, dims in shapes.items():
        if name not in declared:
            raise ValueError(f"shapes given for {name!r}, which the model does not have; "
                             f"its inputs are {sorted(declared)}")
        model = declared[name]
        if len(dims) != len(model) or any(m is not None and m != int(d) for m, d in zip(model, dims)):
            shown = ["?" if m is None else m for m in model]
            raise ValueError(f"input {name!r}: shape {list(dims)} does not fit the model's {shown}")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


def _no_options(backend: str, options: dict) -> None:
    if options:
        raise ValueError(f"{backend} takes no runtime options; got {sorted(options)}")


class Session(abc.ABC):
    """One loaded model. Subclasses set `inputs`, `outputs` and `load_parts`, and implement _run().

    `inputs` and `outputs` describe the model's tensors in its own order, each as
    {"name", "shape": [int | None] (None for a dynamic dimension), "dtype": numpy dtype name}.
    """

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    load_parts: dict[str, float]  # read_ms at least; more where the runtime splits its load

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """ONE inference on `feeds` (one array per input name); returns the FIRST output as a
        numpy array the caller owns (what accuracy, agreement and the integrity checks read)."""
        self._check_input(feeds)
        return self._run(feeds)

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the runtime really used: device, providers, threads, load parts."""

    @abc.abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The runtime's own call, on feeds already checked."""

    def _check_input(self, feeds: dict[str, np.ndarray]) -> None:
        """Every input present, none unknown, each with the declared rank, static dims and dtype."""
        if not isinstance(feeds, dict):
            raise TypeError(f"expected a dict of input name -> numpy array, got {type(feeds).__name__}")
        names = [i["name"] for i in self.inputs]
        if len(feeds) != len(names) or any(n not in feeds for n in names):
            missing = [n for n in names if n not in feeds]
            unexpected = [n for n in feeds if n not in names]
            raise ValueError(f"the model's inputs are {names}; missing {missing}, unexpected {unexpected}")
        for spec in self.inputs:
            x = feeds[spec["name"]]
            if not isinstance(x, np.ndarray):
                raise TypeError(f"input {spec['name']!r}: expected a numpy array, got {type(x).__name__}")
            expected = spec["shape"]
            shape_ok = len(x.shape) == len(expected) and all(
                e is None or e == a for e, a in zip(expected, x.shape)
            )
            if not shape_ok or x.dtype != np.dtype(spec["dtype"]):
                shown = ["?" if d is None else d for d in expected]
                raise ValueError(
                    f"input {spec['name']!r}: expected shape {shown} dtype {spec['dtype']}, "
                    f"got shape {list(x.shape)} dtype {x.dtype}"
                )


def _tensor(name: str, shape: Any, dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "dtype": dtype}


# ---------------------------------------------------------------- ONNX Runtime

_ORT_PROVIDERS = {
    "CPU": ["CPUExecutionProvider"],
    # CPU stays listed so that nodes CUDA cannot run still work; describe() shows what ran.
    "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
    "tensor(int64)": "int64", "tensor(bool)": "bool",
}


def _ort_tensor(t: Any) -> dict[str, Any]:
    # A symbolic dimension ("batch", "s0") or an unknown one (None, -1) is dynamic.
    shape = [d if isinstance(d, int) and d >= 0 else None for d in t.shape]
    return _tensor(t.name, shape, _ORT_TYPES.get(t.type, t.type))


def _strip_suffix(text: str, suffix: str) -> str:  # str.removesuffix is Python >= 3.9
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text


class OnnxRuntimeSession(Session):
    def __init__(self, path: str, *, threads: int, device: str, options: dict, cache: dict | None,
                 shapes: dict):
        import onnxruntime as ort

        if device.upper() not in _ORT_PROVIDERS:
            raise ValueError(f"onnxruntime device {device!r}: "
                             f"expected one of {', '.join(_ORT_PROVIDERS)}")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1  # sequential execution never uses the inter-op pool
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        for key, value in options.items():  # e.g. "session.intra_op.allow_spinning": "0"
            so.add_session_config_entry(key, str(value))
        self._requested = device.upper()
        self._threads = threads
        self._cache = None
        if cache:
            optimized = str(Path(cache["dir"]) / "optimized.onnx")
            if cache["mode"] == "miss":  # optimize as usual and save the result
                so.optimized_model_filepath = optimized
            else:  # the saved model is already optimized: skip the optimizer entirely
                path = optimized
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            self._cache = {"mode": cache["mode"], "file": optimized}
        start = time.perf_counter()
        # Weights in a .data file beside the model are opened by ONNX Runtime itself, so reading
        # counts as session creation there; otherwise the file is read here, timed on its own.
        model: str | bytes = path if Path(path + ".data").exists() else Path(path).read_bytes()
        self.load_parts = {"read_ms": _ms(start) if isinstance(model, bytes) else 0.0}
        self._session = ort.InferenceSession(model, so, providers=_ORT_PROVIDERS[self._requested])
        self.inputs = [_ort_tensor(t) for t in self._session.get_inputs()]
        self.outputs = [_ort_tensor(t) for t in self._session.get_outputs()]
        self._first_output = [self.outputs[0]["name"]]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(self._first_output, feeds)[0]

    def describe(self) -> dict[str, Any]:
        providers = self._session.get_providers()
        return {
            "device": _strip_suffix(providers[0], "ExecutionProvider").upper(),
            "requested_device": self._requested,
            "providers": providers,
            "threads": self._threads,
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "cache": self._cache,
        }


# ---------------------------------------------------------------- OpenVINO


def _ov_tensor(port: Any, fallback_name: str) -> dict[str, Any]:
    try:
        name = port.get_any_name()
    except RuntimeError:  # a port with no tensor name (some outputs of converted models)
        name = fallback_name
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return _tensor(name, shape, np.dtype(port.get_element_type().to_dtype()).name)


def _ov_shapes(ov: Any, model: Any, shapes: dict) -> dict:
    """{input name: PartialShape} for model.reshape, naming the model's inputs on a wrong name."""
    names = {n for port in model.inputs for n in port.get_names()}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise ValueError(f"shapes given for {unknown}, which the model does not have; "
                         f"its inputs are {sorted(names)}")
    return {name: ov.PartialShape([int(d) for d in dims]) for name, dims in shapes.items()}


class OpenVinoSession(Session):
    def __init__(self, path: str, *, threads: int, device: str, options: dict, cache: dict | None,
                 shapes: dict):
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        self._on_cpu = device.upper() == "CPU"
        if self._on_cpu:  # other plugins reject CPU threading properties
            config.update(INFERENCE_NUM_THREADS=threads, NUM_STREAMS=1)
        config.update(options)
        self._cache = None
        if cache:
            config["CACHE_DIR"] = cache["dir"]
            self._cache = {"mode": cache["mode"], "dir": cache["dir"]}
        if cache and not shapes:
            # compile_model(path) lets a cache hit skip reading the IR as well as compiling it,
            # which is how an application with a cache loads; the read is then inside compile.
            start = time.perf_counter()
            self._compiled = core.compile_model(path, device, config)
            self.load_parts = {"read_ms": 0.0, "compile_ms": _ms(start)}
        else:
            start = time.perf_counter()
            model = core.read_model(path)  # an IR (.xml + .bin) or an .onnx file alike
            read_ms = _ms(start)
            start = time.perf_counter()
            if shapes:  # like benchmark_app -shape: reshaping is part of compiling (timed with it)
                model.reshape(_ov_shapes(ov, model, shapes))
            self._compiled = core.compile_model(model, device, config)
            self.load_parts = {"read_ms": read_ms, "compile_ms": _ms(start)}
        self._device = device
        # One request made here and reused: creating it per call would be timed as inference.
        self._request = self._compiled.create_infer_request()
        self._ov = ov
        self.inputs = [_ov_tensor(port, f"input_{i}") for i, port in enumerate(self._compiled.inputs)]
        self.outputs = [_ov_tensor(port, f"output_{i}") for i, port in enumerate(self._compiled.outputs)]
        # The memory of each of the request's input tensors, by input index (see _run).
        self._buffers: list[np.ndarray | None] = [None] * len(self.inputs)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # Copy each input into a tensor the request keeps, and the output out of the request's own
        # tensor: infer({0: x}, share_inputs=True, share_outputs=True) cost ~20 us more per call
        # in Python (a Tensor made around x, the input dict, an OVDict of results), 6 % of the
        # 0.34 ms student and none of it in benchmark_app's latency. The copy is cheaper than
        # that (4 KB: 1 us; a 3x224x224 image: 14 us, next to ~40 ms of inference).
        for i, spec in enumerate(self.inputs):
            x = feeds[spec["name"]]
            buffer = self._buffers[i]
            if buffer is None or buffer.shape != x.shape:  # first call, or a new batch size
                buffer = self._buffers[i] = np.empty(x.shape, x.dtype)
                self._request.set_input_tensor(i, self._ov.Tensor(buffer, shared_memory=True))
            np.copyto(buffer, x)
        self._request.infer()
        return self._request.get_output_tensor(0).data.copy()

    def describe(self) -> dict[str, Any]:
        executed = list(self._compiled.get_property("EXECUTION_DEVICES"))
        info: dict[str, Any] = {
            # What ran, not what was asked: AUTO reports the device it chose.
            "device": ",".join(executed) or self._device,
            "requested_device": self._device,
            "execution_devices": executed,
            "load_parts_ms": self.load_parts,
            "cache": self._cache,
            "inference_precision": str(self._compiled.get_property("INFERENCE_PRECISION_HINT")),
        }
        if self._on_cpu:
            info["threads"] = int(self._compiled.get_property("INFERENCE_NUM_THREADS"))
            info["streams"] = int(self._compiled.get_property("NUM_STREAMS"))
        else:
            info["threads"] = None
            info["notes"] = f"threads are set for CPU only; {self._device} schedules its own work"
        return info


# ---------------------------------------------------------------- ExecuTorch

# ExecuTorch ScalarType codes (runtime/core/portable_type/scalar_type.h) -> numpy names.
_ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
              6: "float32", 7: "float64", 11: "bool"}


def _et_tensor(meta: Any, name: str) -> dict[str, Any]:
    return _tensor(name, list(meta.sizes()), _ET_DTYPES.get(meta.dtype(), f"scalar type {meta.dtype()}"))


class ExecuTorchSession(Session):
    def __init__(self, path: str, *, threads: int, device: str, options: dict, cache: dict | None,
                 shapes: dict):
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        _no_options("executorch", options)
        if device.upper() != "CPU":
            raise ValueError(f"executorch's Python runtime runs on CPU; got device {device!r}")
        self._torch = torch
        # Set before loading: XNNPACK binds the process-wide threadpool when the method loads.
        self._threads, self._notes = _executorch_threads(portable_lib, threads)
        start = time.perf_counter()
        program = Runtime.get().load_program(Path(path))
        read_ms = _ms(start)
        start = time.perf_counter()
        self._method = program.load_method("forward")
        self.load_parts = {"read_ms": read_ms, "compile_ms": _ms(start)}  # delegate init
        self._program = program  # keeps the program alive as long as its method
        meta = self._method.metadata
        # A .pte keeps no input names: they are input_0, input_1, ... in the program's order.
        self.inputs = [_et_tensor(meta.input_tensor_meta(i), f"input_{i}") for i in range(meta.num_inputs())]
        self.outputs = [_et_tensor(meta.output_tensor_meta(i), f"output_{i}")
                        for i in range(meta.num_outputs())]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        args = [self._torch.from_numpy(np.ascontiguousarray(feeds[spec["name"]])) for spec in self.inputs]
        outputs = self._method.execute(args)
        return outputs[0].numpy().copy()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": "CPU", "threads": self._threads,
                                "load_parts_ms": self.load_parts}
        if self._notes:
            info["notes"] = self._notes
        return info


def _executorch_threads(portable_lib: Any, threads: int) -> tuple[int | None, str | None]:
    """Resize ExecuTorch's threadpool (XNNPACK and the portable kernels share it).

    torch.set_num_threads has no effect on it. The pybindings expose an experimental,
    process-wide reset; where a build lacks it the pool keeps its default size (the core count)
    and the thread count is reported as unknown.
    """
    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    count = getattr(portable_lib, "_threadpool_get_thread_count", None)
    if reset is None or count is None:
        return None, "this executorch build cannot set its thread count from Python"
    reset(threads)
    return int(count()), None


# ---------------------------------------------------------------- LiteRT


def _litert_quantization(detail: dict) -> tuple[float, int] | None:
    """(scale, zero point) of a quantized tensor (a float quantized to int8), None for a plain one
    (a float tensor, or integer data such as token ids: scale 0)."""
    params = detail.get("quantization_parameters") or {}
    scales = list(params.get("scales", []))
    if len(scales) > 1:
        raise ValueError(f"LiteRT tensor {detail['name']!r} is quantized per channel at the model's "
                         "boundary; only a per-tensor scale and zero point can be converted from floats")
    scale, zero_point = (scales[0], list(params["zero_points"])[0]) if scales else detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


class LiteRTSession(Session):
    """ai_edge_litert's Interpreter (the TFLite interpreter; its default op resolver applies the
    XNNPACK delegate on CPU), with the thread count set explicitly.

    A .tflite keeps positions, not the exporter's names (litert-torch names them args_0, ...):
    its inputs are input_0, input_1, ... in the model's order, as a .pte's, and the probe feeds
    them the same way; describe() gives the model's own tensor names. An input or output that
    is quantized (a static INT8 model takes int8) is declared float32: the session quantizes
    floats to it with the tensor's scale and zero point, and dequantizes the output, inside
    each call, as an application must, so the caller compares floats with PyTorch's.
    """

    def __init__(self, path: str, *, threads: int, device: str, options: dict, cache: dict | None,
                 shapes: dict):
        from ai_edge_litert.interpreter import Interpreter

        _no_options("litert", options)
        if device.upper() != "CPU":
            raise ValueError(f"litert's interpreter runs on CPU here; got device {device!r}")
        self._threads = threads
        start = time.perf_counter()
        # model_path: the interpreter maps the file itself, as an application does; reading is
        # inside building the interpreter (timed as a whole).
        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter_ms = _ms(start)
        details = self._interpreter.get_input_details()
        names = ["input_%d" % i for i in range(len(details))]
        for name, d in zip(names, details):  # a dynamic dim fixed by `shapes`, before allocating
            if name in shapes:
                self._interpreter.resize_input_tensor(d["index"], [int(x) for x in shapes[name]], strict=True)
        start = time.perf_counter()
        self._interpreter.allocate_tensors()  # plans memory; delegates are prepared here
        self.load_parts = {"read_ms": 0.0, "interpreter_ms": interpreter_ms, "allocate_ms": _ms(start)}
        self._in = [self._spec(d, name) for name, d in zip(names, self._interpreter.get_input_details())]
        outputs = self._interpreter.get_output_details()
        self._out = [self._spec(d, "output_%d" % i) for i, d in enumerate(outputs)]
        self.inputs = [spec for spec, _, _, _, _ in self._in]
        self.outputs = [spec for spec, _, _, _, _ in self._out]
        self._first = self._out[0]
        self._iinfo = {dtype: np.iinfo(dtype) for _, _, dtype, q, _ in self._in if q}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        # litert-torch narrows int64 inputs (token ids, masks) to int32, the dtype TFLite's
        # kernels take: int64 data (PyTorch's, the pipeline's held-out inputs) is narrowed here,
        # as an app would, and refused when a value does not fit.
        if isinstance(feeds, dict):
            feeds = {name: self._narrowed(name, x) for name, x in feeds.items()}
        return Session.run(self, feeds)

    def _narrowed(self, name: str, x: Any) -> Any:
        spec = next((s for s, _, _, _, _ in self._in if s["name"] == name), None)
        if spec is None or spec["dtype"] != "int32" or not isinstance(x, np.ndarray) or x.dtype != np.int64:
            return x
        info = np.iinfo(np.int32)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise ValueError("input %r: the model takes int32; int64 values from %d to %d do not fit"
                             % (name, x.min(), x.max()))
        return x.astype(np.int32)

    @staticmethod
    def _spec(detail: dict, name: str) -> tuple[dict[str, Any], int, np.dtype, tuple[float, int] | None, str]:
        """(the tensor as the caller sees it, its index, its dtype in the model, its quantization,
        the model's own name for it)."""
        quant = _litert_quantization(detail)
        shape = [int(d) if d >= 0 else None for d in detail.get("shape_signature", detail["shape"])]
        dtype = np.dtype(detail["dtype"])
        return _tensor(name, shape, "float32" if quant else dtype.name), int(detail["index"]), dtype, quant, detail["name"]

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for spec, index, dtype, quant, _ in self._in:
            x = feeds[spec["name"]]
            if quant:
                scale, zero_point = quant
                info = self._iinfo[dtype]
                x = np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)
            self._interpreter.set_tensor(index, x)
        self._interpreter.invoke()
        _, index, _, quant, _ = self._first
        out = self._interpreter.get_tensor(index)  # a copy the caller owns
        if quant:
            scale, zero_point = quant
            out = ((out.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return out

    def describe(self) -> dict[str, Any]:
        def tensors(specs: list) -> list[dict[str, Any]]:
            return [{"name": tensor_name, "as": spec["name"], "shape": spec["shape"],
                     "dtype": dtype.name,
                     "quantization": {"scale": quant[0], "zero_point": quant[1]} if quant else None}
                    for spec, _, dtype, quant, tensor_name in specs]
        converted = [spec["name"] for spec, _, _, q, _ in self._in + self._out if q]
        return {
            "device": "CPU",
            "threads": self._threads,  # Interpreter(num_threads=...): set, not defaulted
            "op_resolver": "AUTO (built-in kernels, the XNNPACK delegate applied by default)",
            "load_parts_ms": self.load_parts,
            "inputs": tensors(self._in),
            "outputs": tensors(self._out),
            "io_conversion": ("float inputs quantized with each tensor's scale and zero point, the "
                              "output dequantized, inside every timed call: %s" % ", ".join(converted)
                              if converted else None),
        }


# ---------------------------------------------------------------- TensorRT


class TensorRTSession(Session):
    def __init__(self, path: str, *, threads: int, device: str, options: dict, cache: dict | None,
                 shapes: dict):
        import tensorrt as trt

        _no_options("tensorrt", options)
        if device.upper() not in ("CUDA", "GPU"):
            raise ValueError(f"tensorrt runs on a CUDA GPU; got device {device!r}")
        self._trt = trt
        self._cuda = _TorchCuda() if importlib.util.find_spec("torch") else _CudaPython()
        start = time.perf_counter()
        plan = Path(path).read_bytes()
        read_ms = _ms(start)
        start = time.perf_counter()
        # The logger and runtime must outlive the engine made from them.
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {path}: an engine runs only on the "
                               "GPU model and TensorRT version that built it; rebuild it here")
        deserialize_ms = _ms(start)
        start = time.perf_counter()
        self._context = engine.create_execution_context()
        self.load_parts = {"read_ms": read_ms, "deserialize_ms": deserialize_ms,
                           "context_ms": _ms(start)}
        self._engine = engine
        # I/O tensors by name, in the engine's order (TensorRT 10's name-based API).
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._io = names
        self.inputs = [self._describe_tensor(n) for n in names if is_input[n]]
        self.outputs = [self._describe_tensor(n) for n in names if not is_input[n]]
        self._output = self.outputs[0]["name"]
        self._bound_shapes: dict[str, tuple[int, ...]] | None = None
        self._buffers: dict[str, Any] = {}

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self._engine.get_tensor_dtype(name)))

    def _describe_tensor(self, name: str) -> dict[str, Any]:
        shape = [d if d >= 0 else None for d in self._engine.get_tensor_shape(name)]
        return _tensor(name, shape, self._dtype(name).name)

    def _bind(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Set every input's shape, then (re)allocate every I/O buffer at the shapes TensorRT
        derives from them; only when a shape changes."""
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, shape):
                raise ValueError(f"input {name!r}: shape {list(shape)} is outside the "
                                 "engine's optimization profile")
        for name in self._io:
            count = int(np.prod(tuple(self._context.get_tensor_shape(name))))
            handle, pointer = self._cuda.alloc(count * self._dtype(name).itemsize)
            self._buffers[name] = handle  # replaces (and frees) the previous buffer
            self._context.set_tensor_address(name, pointer)
        self._bound_shapes = shapes

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        arrays = {spec["name"]: np.ascontiguousarray(feeds[spec["name"]]) for spec in self.inputs}
        shapes = {name: x.shape for name, x in arrays.items()}
        if shapes != self._bound_shapes:
            self._bind(shapes)
        for name, x in arrays.items():
            self._cuda.upload(self._buffers[name], x)
        if not self._context.execute_async_v3(self._cuda.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's log)")
        self._cuda.synchronize()
        shape = tuple(self._context.get_tensor_shape(self._output))
        out = np.empty(shape, self._dtype(self._output))
        self._cuda.download(out, self._buffers[self._output])
        return out

    def describe(self) -> dict[str, Any]:
        return {"device": "CUDA", "gpu": self._cuda.device_name(), "threads": None,
                "notes": "TensorRT runs on the GPU; a CPU thread count does not apply",
                "load_parts_ms": self.load_parts}


class _TorchCuda:
    """Device memory through torch.cuda; buffers are uint8 tensors, freed with their handle."""

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device is visible to torch")
        self._torch = torch
        self.stream = torch.cuda.current_stream().cuda_stream

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        buffer = self._torch.empty(max(nbytes, 1), dtype=self._torch.uint8, device="cuda")
        return buffer, buffer.data_ptr()

    def upload(self, buffer: Any, x: np.ndarray) -> None:
        buffer[: x.nbytes].copy_(self._torch.from_numpy(x.reshape(-1).view(np.uint8)))

    def download(self, out: np.ndarray, buffer: Any) -> None:
        self._torch.from_numpy(out.reshape(-1).view(np.uint8)).copy_(buffer[: out.nbytes])

    def synchronize(self) -> None:
        self._torch.cuda.current_stream().synchronize()

    def device_name(self) -> str:
        return self._torch.cuda.get_device_name()


class _CudaPython:
    """Device memory through cuda-python's runtime API, for targets without torch."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:  # cuda-python before 12.6 named the module cuda.cudart
            from cuda import cudart
        self._rt = cudart
        self._stream = self._call("cudaStreamCreate", cudart.cudaStreamCreate())
        self.stream = int(self._stream)

    def _call(self, what: str, result: tuple) -> Any:
        err, *value = result
        if err != self._rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"{what} failed: {err}")
        return value[0] if value else None

    def alloc(self, nbytes: int) -> tuple[Any, int]:
        pointer = int(self._call("cudaMalloc", self._rt.cudaMalloc(max(nbytes, 1))))
        return _CudaBuffer(self._rt, pointer), pointer

    def upload(self, buffer: _CudaBuffer, x: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpy", self._rt.cudaMemcpy(buffer.pointer, x.ctypes.data, x.nbytes, kind))

    def download(self, out: np.ndarray, buffer: _CudaBuffer) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpy",
                   self._rt.cudaMemcpy(out.ctypes.data, buffer.pointer, out.nbytes, kind))

    def synchronize(self) -> None:
        self._call("cudaStreamSynchronize", self._rt.cudaStreamSynchronize(self._stream))

    def device_name(self) -> str:
        props = self._call("cudaGetDeviceProperties", self._rt.cudaGetDeviceProperties(0))
        return props.name.decode(errors="replace").rstrip("\x00")


class _CudaBuffer:
    """A cudaMalloc pointer freed when its last reference goes, like a torch tensor."""

    def __init__(self, runtime: Any, pointer: int):
        self._rt = runtime
        self.pointer = pointer

    def __del__(self) -> None:
        self._rt.cudaFree(self.pointer)
