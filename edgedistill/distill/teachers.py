"""Teachers that are not PyTorch code: an ONNX file run by ONNX Runtime, a Hugging Face folder.

A teacher is only ever asked for its outputs (the distillation loss needs no gradient through
it), so a black-box runtime is enough. Both wrappers are nn.Modules so the trainer, the
teacher-output cache and check_compatible treat them like any other teacher.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
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
    """A transformers classification model whose forward returns plain logits, as distillation
    expects; this class takes images (pixel values), HFTextModel takes token ids."""

    takes_ids = False
    embedding = False  # True: a base encoder whose output is a pooled sentence embedding
    load_note = ""  # one line for the run's log: what was loaded and how its output is made

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _logits(self.model, self.model(pixel_values))


class HFTextModel(HFTeacher):
    """A transformers text model called with named inputs, as a tokenizer's output feeds it.

    `forward(input_ids, attention_mask=None, token_type_ids=None)` (HFTextModelWithTypes; a model
    without token types, e.g. DistilBERT, gets no token_type_ids parameter): the signature is what
    torch.onnx.export and torch.export trace, so it must name exactly the model's real inputs.
    The one-tensor path still works: a float tensor of ids, the mask made from pad_token_id
    (padding must be masked out, as a tokenizer's attention_mask would, or it changes every other
    token's attention and the output).

    With `pooling` set, the model is a base encoder (AutoModel) and the output is a sentence
    embedding pooled over the attention mask as sentence-transformers does it (its
    1_Pooling/config.json), L2-normalised when `normalize` (its modules.json lists Normalize).
    """

    takes_ids = True

    def __init__(self, model: nn.Module, pooling: tuple[str, ...] = (), normalize: bool = False):
        super().__init__(model)
        self.pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        self.pooling, self.normalize = tuple(pooling), normalize
        self.embedding = bool(self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(input_ids, attention_mask, None)

    def _run(self, input_ids, attention_mask, token_type_ids) -> torch.Tensor:
        ids = input_ids.long()  # the one-tensor path hands over float32 ids
        if attention_mask is None and self.pad_id is not None:
            attention_mask = (ids != self.pad_id).long()
        kwargs = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids.long()
        out = self.model(ids, **kwargs)
        if not self.embedding:
            return _logits(self.model, out)
        mask = torch.ones_like(ids) if attention_mask is None else attention_mask
        return sentence_embedding(out.last_hidden_state, mask, self.pooling, self.normalize)


class HFTextModelWithTypes(HFTextModel):
    """HFTextModel for a model that takes token_type_ids (BERT): they are part of its inputs."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self._run(input_ids, attention_mask, token_type_ids)


def _logits(model: nn.Module, out) -> torch.Tensor:
    logits = getattr(out, "logits", None)
    if logits is None:
        raise UsageError(f"Hugging Face model {type(model).__name__} returns no logits",
                         "use a folder saved from an *ForSequenceClassification or "
                         "*ForImageClassification model")
    return logits


# sentence-transformers' Pooling keys, in the order it concatenates the modes it has switched on.
POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}
_UNSUPPORTED_POOLING = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor, pooling: tuple[str, ...],
                       normalize: bool) -> torch.Tensor:
    """(batch, L, D) token states -> (batch, D * len(pooling)) as sentence-transformers pools them."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    for mode in pooling:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":  # padding can never be the maximum (sentence-transformers uses -1e9 too)
            parts.append(hidden.masked_fill(m == 0, -1e9).max(dim=1).values)
        else:  # mean over the real tokens; clamp: an all-padding row gives 0, not NaN
            tokens = m.sum(dim=1).clamp(min=1e-9)
            summed = (hidden * m).sum(dim=1)
            parts.append(summed / tokens if mode == "mean" else summed / tokens.sqrt())
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return torch.nn.functional.normalize(out, p=2, dim=-1) if normalize else out


def read_pooling(folder: Path, spec: str) -> tuple[tuple[str, ...], bool, str]:
    """(pooling modes, normalize, how they were decided) from a sentence-transformers folder.

    No 1_Pooling/config.json: mean pooling (the sentence-transformers default for a plain
    transformers folder). Normalize: only where modules.json lists the Normalize module.
    """
    modules_file, pooling_file = folder / "modules.json", None
    modules = []
    if modules_file.is_file():
        modules = _read_json(modules_file, spec)
        if not isinstance(modules, list):
            raise UsageError(f"{spec}: {modules_file.name} should be a list of modules, found {type(modules).__name__}")
        for m in modules:
            if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling"):
                pooling_file = folder / str(m.get("path", "")) / "config.json"
    if pooling_file is None and (folder / "1_Pooling" / "config.json").is_file():
        pooling_file = folder / "1_Pooling" / "config.json"
    normalize = any(isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules)
    if pooling_file is None or not pooling_file.is_file():
        return ("mean",), normalize, "mean pooling (no 1_Pooling/config.json)"
    settings = _read_json(pooling_file, spec)
    unsupported = [k for k in _UNSUPPORTED_POOLING if settings.get(k)]
    modes = tuple(name for key, name in POOLING_MODES.items() if settings.get(key))
    if unsupported or not modes:
        raise UsageError(f"{spec}: {pooling_file.relative_to(folder)} asks for pooling "
                         f"{', '.join(unsupported) or 'none'}; expected one or more of "
                         f"{', '.join(POOLING_MODES)}")
    return modes, normalize, f"{'+'.join(modes)} pooling ({pooling_file.relative_to(folder)})"


def _read_json(path: Path, spec: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{spec}: cannot read {path.name}: {first_line(str(e))}") from e


def _is_encoder(folder: Path) -> bool:
    """A base model (BertModel, DistilBertModel, …) or a sentence-transformers folder: no head."""
    if (folder / "modules.json").is_file():
        return True
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False  # transformers reports a broken config.json in its own words below
    return bool(architectures) and all(str(a).endswith("Model") for a in architectures)


def _wrap_text(model: nn.Module, **pooling) -> HFTextModel:
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters
    return (HFTextModelWithTypes if takes_types else HFTextModel)(model, **pooling)


def load_hf(folder: str, role: str) -> nn.Module:
    """`hf:<folder>`: a transformers model saved with save_pretrained.

    A classification model (its logits), or a base text encoder such as a sentence-transformers
    folder (its pooled sentence embedding: distill.objective = "embedding").
    """
    try:
        import transformers
    except ImportError as e:
        raise UsageError(f"{role} spec 'hf:{folder}' needs the transformers package, which is not installed",
                         HF_EXTRA_HINT) from e
    _check_hf_folder(Path(folder), role)
    spec = f"{role} spec 'hf:{folder}'"
    if _is_encoder(Path(folder)):
        pooling, normalize, how = read_pooling(Path(folder), spec)
        model, _ = _from_pretrained(transformers, "AutoModel", folder, spec, ignore=("pooler.",))
        if getattr(model, "main_input_name", "") != "input_ids":
            raise UsageError(f"{spec}: {type(model).__name__} is an encoder without token ids as input; "
                             "only text encoders are supported as embedding models",
                             "save an *ForImageClassification model to distill its logits")
        if getattr(model, "pooler", None) is not None:
            # BERT's pooler (a dense + tanh over [CLS], for next-sentence prediction) is not part
            # of a sentence embedding: dropped, it costs nothing in training or in the export.
            model.pooler = None
        wrapped = _wrap_text(model, pooling=pooling, normalize=normalize)
        layers = getattr(model.config, "num_hidden_layers", "?")
        wrapped.load_note = (f"{role} hf:{folder}: {type(model).__name__} encoder, {layers} layers, "
                             f"inputs {', '.join(list(inspect.signature(wrapped.forward).parameters))}; "
                             f"sentence embedding: {how}"
                             + (", L2-normalised (modules.json lists Normalize)" if normalize else ", not normalised"))
        return wrapped
    errors = []
    for auto in ("AutoModelForSequenceClassification", "AutoModelForImageClassification"):
        try:
            model, _ = _from_pretrained(transformers, auto, folder, spec)
        except _WrongClass as e:
            errors.append(f"{auto}: {e}")
            continue
        wrapped = _wrap_text(model) if getattr(model, "main_input_name", "") == "input_ids" else HFTeacher(model)
        wrapped.load_note = f"{role} hf:{folder}: {type(model).__name__}, its logits"
        return wrapped
    raise UsageError(f"{spec}: not a classification model ({'; '.join(errors)})")


class _WrongClass(Exception):
    """This Auto class does not map the folder's config."""


def _from_pretrained(transformers, auto: str, folder: str, spec: str, ignore: tuple[str, ...] = ()):
    try:
        # use_safetensors: a pytorch_model.bin is a pickle, which can run code when loaded.
        with _quiet(transformers):
            model, info = getattr(transformers, auto).from_pretrained(
                folder, local_files_only=True, use_safetensors=True, output_loading_info=True)
    except (ValueError, OSError, KeyError) as e:  # a config this Auto class does not map
        raise _WrongClass(first_line(str(e)) or type(e).__name__) from e
    # transformers fills weights the folder lacks with random values and only logs it: a
    # base model saved without its head would become a teacher with a random classifier.
    # `ignore`: weights whose output is never used (an encoder's pooler: the embedding is pooled here).
    missing = sorted(k for k in info.get("missing_keys") or () if not k.startswith(ignore))
    if missing:
        shown = ", ".join(missing[:_SHOW_KEYS]) + (", …" if len(missing) > _SHOW_KEYS else "")
        raise UsageError(f"{spec}: the weights lack {len(missing)} tensor(s) of "
                         f"{type(model).__name__}, which would start random: {shown}",
                         "save the trained model itself (with its head) with save_pretrained")
    return model, info


def check_objective(objective: str, teacher: nn.Module) -> None:
    """An encoder's output is an embedding: distilling it as logits would be KD on 384 'classes'."""
    if getattr(teacher, "embedding", False) and objective != "embedding":
        raise UsageError(f"the teacher is a text encoder ({type(teacher.model).__name__}) whose output is a "
                         f"sentence embedding, but distill.objective is {objective!r}",
                         'set [distill] objective = "embedding"')


def check_sequence_length(model: nn.Module, x, role: str = "teacher") -> None:
    """A sequence longer than the model's max_position_embeddings: exit 2 before training.

    `x` is the data's inputs (a tensor of ids, or a dict with input_ids). Past the position
    table BERT fails deep inside its embedding layer with an index error; say it in one line.
    """
    limit = getattr(model, "max_positions", None)
    if not getattr(model, "takes_ids", False) or not limit:
        return
    ids = x.get("input_ids") if isinstance(x, dict) else x
    if ids is None or getattr(ids, "dim", lambda: 0)() < 2:
        return
    length = int(ids.shape[1])
    if length > limit:
        raise UsageError(f"the data's sequences have {length} tokens, longer than the {role}'s "
                         f"max_position_embeddings {limit}",
                         f"tokenize with truncation to at most {limit} tokens")


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
