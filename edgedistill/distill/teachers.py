"""Teachers that are not PyTorch code: an ONNX file run by ONNX Runtime, a Hugging Face folder.

A teacher is only ever asked for its outputs (the distillation loss needs no gradient through
it), so a black-box runtime is enough. Both wrappers are nn.Modules so the trainer, the
teacher-output cache and check_compatible treat them like any other teacher.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgedistill.artifacts import Artifact
from edgedistill.backends.common import first_line
from edgedistill.errors import UnsafeModelError, UsageError
from edgedistill.onnx_files import (
    check_onnx_external_data,
    external_data_locations,
    onnx_input,
)

HF_EXTRA_HINT = "pip install 'edgedistill[hf]'"
_SHOW_KEYS = 5  # how many missing tensors (or files) an error lists


class OnnxTeacher(nn.Module):
    """An ONNX model as a teacher: outputs through ONNX Runtime on the CPU, no parameters.

    The file is checked for external data outside its folder before ONNX Runtime opens it.
    `content_digest` (sha256 of the file and its external data, read at load time) is what the
    teacher-output cache keys on, since the module has no state_dict to hash.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        graph = check_onnx_external_data(self.path)  # refuses unsafe external data first
        self.input_name, self.input_shape = onnx_input(graph)
        # A graph exported with a fixed batch only accepts exactly that many rows at a time.
        self.static_batch = self.input_shape[0] if self.input_shape and self.input_shape[0] else None
        self.external_files = external_data_locations(graph)
        self.content_digest = _files_digest(self.path, self.external_files)
        self._session = self._open()

    def _open(self):  # -> onnxruntime.InferenceSession
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        try:
            # On a damaged file ORT prints an "EP Error" banner to stdout and retries; the
            # error below says it in one line.
            with contextlib.redirect_stdout(io.StringIO()):
                return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise UsageError(f"teacher {self.path}: ONNX Runtime cannot load it: {type(e).__name__}: "
                             f"{first_line(str(e))}",
                             "check the file with onnx.checker, or re-export it") from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().numpy().astype(np.float32, copy=False)
        step = self.static_batch or max(1, len(array))
        outputs = []
        for start in range(0, len(array), step):
            chunk = array[start:start + step]
            rows = len(chunk)
            if self.static_batch and rows < self.static_batch:  # pad the last chunk, drop the padding
                pad = np.zeros((self.static_batch - rows, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            outputs.append(self._session.run(None, {self.input_name: chunk})[0][:rows])
        result = np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32))

    def extra_repr(self) -> str:
        return f"{self.path.name}, static_batch={self.static_batch}"

    def copy_to(self, out_path: Path) -> Artifact:
        """The file itself (and its external data) as the teacher's "onnx" intermediate."""
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.path, out_path)
        for location in self.external_files:  # relative names inside the model's folder (checked)
            target = out_path.parent / location
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path.parent / location, target)
        shape = self.input_shape
        return Artifact(kind="onnx", path=out_path, precision="fp32", role="teacher",
                        meta={"exporter": "user ONNX file", "source": str(self.path),
                              "sha256": self.content_digest, "input_name": self.input_name,
                              "input_shape": shape, "dynamic_batch": shape[0] is None,
                              "external_data": bool(self.external_files)})

    # ONNX Runtime sessions cannot be pickled or deep-copied: reopen from the file instead.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._session = self._open()


def _files_digest(path: Path, external_files: list[str]) -> str:
    h = hashlib.sha256(path.read_bytes())
    for location in external_files:
        h.update(location.encode())
        h.update((path.parent / location).read_bytes())
    return h.hexdigest()


class HFTeacher(nn.Module):
    """A transformers model whose forward returns plain logits, as distillation expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # Text models take token ids (integers); the data pipeline hands over float tensors.
        self.takes_ids = getattr(model, "main_input_name", "") == "input_ids"
        # Sequences padded to one length: the padding must be masked out, as a tokenizer's
        # attention_mask would, or it changes every other token's attention and the logits.
        self.pad_id = getattr(getattr(model, "config", None), "pad_token_id", None) if self.takes_ids else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.takes_ids:
            out = self.model(x)
        else:
            ids = x.long()
            mask = None if self.pad_id is None else (ids != self.pad_id).long()
            out = self.model(ids, attention_mask=mask)
        logits = getattr(out, "logits", None)
        if logits is None:
            raise UsageError(f"Hugging Face model {type(self.model).__name__} returns no logits",
                             "use a folder saved from an *ForSequenceClassification or "
                             "*ForImageClassification model")
        return logits


def load_hf(folder: str, role: str) -> nn.Module:
    """`hf:<folder>`: a transformers classification model saved with save_pretrained."""
    try:
        import transformers
    except ImportError as e:
        raise UsageError(f"{role} spec 'hf:{folder}' needs the transformers package, which is not installed",
                         HF_EXTRA_HINT) from e
    _check_hf_folder(Path(folder), role)
    errors = []
    for auto in ("AutoModelForSequenceClassification", "AutoModelForImageClassification"):
        try:
            # use_safetensors: a pytorch_model.bin is a pickle, which can run code when loaded.
            with _quiet(transformers):
                model, info = getattr(transformers, auto).from_pretrained(
                    folder, local_files_only=True, use_safetensors=True, output_loading_info=True)
        except (ValueError, OSError, KeyError) as e:  # a config this Auto class does not map
            errors.append(f"{auto}: {first_line(str(e)) or type(e).__name__}")
            continue
        # transformers fills weights the folder lacks with random values and only logs it: a
        # base model saved without its head would become a teacher with a random classifier.
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            shown = ", ".join(missing[:_SHOW_KEYS]) + (", …" if len(missing) > _SHOW_KEYS else "")
            raise UsageError(f"{role} spec 'hf:{folder}': the weights lack {len(missing)} tensor(s) of "
                             f"{type(model).__name__}, which would start random: {shown}",
                             "save the trained classification model itself (with its head) "
                             "with save_pretrained")
        return HFTeacher(model)
    raise UsageError(f"{role} spec 'hf:{folder}': not a classification model ({'; '.join(errors)})")


@contextlib.contextmanager
def _quiet(transformers):
    """No progress bar or load report on stderr: the missing-weights check below says it in one line."""
    logging = transformers.utils.logging
    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()


def _check_hf_folder(folder: Path, role: str) -> None:
    """Say what is missing before transformers reports it as a wrong model class."""
    spec = f"{role} spec 'hf:{folder}'"
    if not folder.is_dir():
        raise UsageError(f"{spec}: folder not found (expected a save_pretrained folder)")
    if not (folder / "config.json").is_file():
        raise UsageError(f"{spec}: expected a save_pretrained folder with config.json, found "
                         f"{sorted(p.name for p in folder.iterdir())[:_SHOW_KEYS] or 'an empty folder'}")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.glob("*.bin"))
        if pickles:
            raise UnsafeModelError(f"refusing {spec}: its weights are pickles ({', '.join(pickles[:_SHOW_KEYS])}),"
                                   " which can run code when loaded, and there is no .safetensors file",
                                   "convert them: load the model where you trust it and save_pretrained "
                                   "(safetensors is the default)")
        raise UsageError(f"{spec}: expected weights in a .safetensors file next to config.json, found none")
