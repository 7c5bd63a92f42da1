"""Frozen pretrained feature extractors from Hugging Face ``transformers`` (platonic-rep-unique, after
arXiv:2405.07987).

* ``encoder=hf_lm`` (:class:`HFCausalLM`): a causal language model on a ``text`` modality (raw UTF-8). The whole
  input is tokenised at once (``padding="longest"``, left padding; pad token ``[PAD]`` for huggyllama models and
  eos otherwise), run in batches, and every hidden state — the embedding output and each block — is mean-pooled
  over the attention mask: layers ``hidden0 … hiddenL``. :meth:`HFCausalLM.bits_per_byte` is the model's
  performance: summed token cross-entropy (nats) × log2(e) / UTF-8 bytes, per text.
* ``encoder=hf_vit`` (:class:`HFVisionTransformer`): a ViT-style vision model (ViT, DINOv2, MAE, CLIP's vision
  tower) on uint8 images through the model's own image processor; the CLS token at the output of every block:
  layers ``block1 … blockL``.

Models load offline (``local_files_only``) from a hub name in the local cache or a folder of ``save_pretrained``
files; a missing model is a one-line error saying how to make it available. bf16 on CUDA devices of compute
capability ≥ 7, float32 otherwise; a progress bar per extraction; features cached to disk (``feature_cache``) under
a key of model, revision, pooling, dtype and a hash of the inputs (so the dataset, its U and the images are in the
key), so alignment can be recomputed without running the models again.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import torch
from rich.progress import Progress
from torch import nn

from mmrep.core.contract import ModalitySpec, decode_texts
from mmrep.core.errors import ConfigError
from mmrep.core.files import atomic_write

log = logging.getLogger(__name__)


def _how_to_get(model: str) -> str:
    return (
        f"download it once where there is internet (huggingface-cli download {model}, or "
        f"from_pretrained({model!r}) then save_pretrained(<folder>)) and give the folder as the model, or point "
        "cache_dir / HF_HOME at the cache that holds it; runs are offline (local_files_only)"
    )


def _dtype(name: str) -> torch.dtype:
    """``auto``: bf16 where CUDA compute capability >= 7 (as platonic-rep-unique), else float32."""
    if name == "auto":
        capable = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 7
        return torch.bfloat16 if capable else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ConfigError(f"encoder.dtype: auto, float32, bfloat16 or float16, got {name!r}") from None


class _Frozen(nn.Module):
    """Shared by the extractors: offline loading, dtype, a disk cache of layer features keyed by the inputs."""

    def __init__(
        self,
        model: str,
        revision: str | None,
        cache_dir: str | None,
        dtype: str,
        feature_cache: str | None,
        batch_size: int,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"encoder.batch_size: must be a positive integer, got {batch_size!r}")
        self.model_name, self.revision, self.cache_dir = str(model), revision, cache_dir
        self.dtype, self.batch_size = _dtype(dtype), batch_size
        self.feature_cache = Path(feature_cache) if feature_cache else None

    @staticmethod
    def _transformers():
        try:
            import transformers
        except ImportError:
            raise ConfigError(
                "encoder: frozen pretrained extractors need Hugging Face transformers: pip install -e '.[vl]'"
            ) from None
        return transformers

    def _load(self, loader, what: str = "model", name: str | None = None, key: str = "model"):
        name = name or self.model_name
        try:
            return loader.from_pretrained(name, revision=self.revision, cache_dir=self.cache_dir, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"encoder.{key}: {name!r} has no local {what} files ({type(err).__name__}); {_how_to_get(name)}"
            ) from None

    def _cached(self, kind: str, inputs: list[torch.Tensor], compute) -> dict[str, torch.Tensor]:
        if self.feature_cache is None:
            return compute()
        digest = hashlib.sha1(repr((self.model_name, self.revision, kind, str(self.dtype))).encode())
        for tensor in inputs:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        slug = self.model_name.strip("/").replace("/", "--")[-60:]
        path = self.feature_cache / f"{slug}_{kind}_{digest.hexdigest()[:16]}.pt"
        device = next(self.parameters()).device
        if path.is_file():
            try:
                return {k: v.to(device) for k, v in torch.load(path, map_location="cpu").items()}
            except Exception:  # a truncated or foreign file: recompute and overwrite
                log.warning("feature cache %s is unreadable; recomputing", path)
        features = compute()
        try:
            with atomic_write(path, "wb") as fh:
                torch.save({k: v.cpu() for k, v in features.items()}, fh)
        except OSError as err:
            log.warning("could not write the feature cache %s (%s)", path, err)
        return features

    @staticmethod
    def _progress(total: int, what: str):
        progress = Progress(transient=True)
        task = progress.add_task(what, total=total)
        return progress, task


class HFCausalLM(_Frozen):
    """A frozen causal LM: per-layer masked-mean features of a ``text`` modality and bits per byte.

    Args:
        modality: must be a ``text`` modality. out_dim: ignored (the model's hidden size is the representation).
        model: hub name (from the local cache) or a ``save_pretrained`` folder. tokenizer: defaults to ``model``.
        revision, cache_dir: where in the Hugging Face cache. pad_token: ``None`` = platonic-rep-unique's rule
            (``[PAD]`` for huggyllama, else eos).
        batch_size: texts per forward pass (platonic-rep-unique: 2). dtype: ``auto`` | float32 | bfloat16 | float16.
        feature_cache: folder for cached features (``None``: no cache).
    """

    def __init__(
        self,
        modality: ModalitySpec,
        out_dim: int,
        model: str,
        tokenizer: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        pad_token: str | None = None,
        batch_size: int = 2,
        dtype: str = "auto",
        feature_cache: str | None = None,
    ) -> None:
        if modality.kind != "text":
            raise ConfigError(
                f"encoder: hf_lm reads raw text (a dataset's `text` modality), got a {modality.kind} modality"
            )
        super().__init__(model, revision, cache_dir, dtype, feature_cache, batch_size)
        transformers = self._transformers()
        self.lm = self._load(transformers.AutoModelForCausalLM).to(self.dtype).eval().requires_grad_(False)
        self.tokenizer = self._load(
            transformers.AutoTokenizer, "tokenizer", str(tokenizer or model), "tokenizer" if tokenizer else "model"
        )
        self.tokenizer.padding_side = "left"
        if pad_token is not None:
            self.tokenizer.pad_token = pad_token
        elif "huggyllama" in self.model_name:  # platonic-rep-unique: "[PAD]" for huggyllama, eos for every other model
            self.tokenizer.pad_token = "[PAD]"
        else:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def _tokens(self, x) -> tuple[list[str], dict[str, torch.Tensor]]:
        texts = decode_texts(x)
        tokens = self.tokenizer(texts, padding="longest", return_tensors="pt")
        return texts, tokens

    def _batches(self, tokens, what: str):
        device = next(self.parameters()).device
        n = tokens["input_ids"].shape[0]
        progress, task = self._progress(n, f"{what} {self.model_name}")
        with progress:
            for lo in range(0, n, self.batch_size):
                ids = tokens["input_ids"][lo : lo + self.batch_size].to(device)
                mask = tokens["attention_mask"][lo : lo + self.batch_size].to(device)
                yield ids, mask
                progress.advance(task, len(ids))

    @torch.no_grad()
    def layer_features(self, x) -> dict[str, torch.Tensor]:
        def compute():
            _, tokens = self._tokens(x)
            parts: list[list[torch.Tensor]] = []
            for ids, mask in self._batches(tokens, "features"):
                hidden = self.lm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                weights = mask.unsqueeze(-1).to(torch.float32)
                pooled = [(h.float() * weights).sum(1) / weights.sum(1).clamp_min(1.0) for h in hidden]
                parts = parts or [[] for _ in pooled]
                for slot, h in enumerate(pooled):
                    parts[slot].append(h)
            return {f"hidden{i}": torch.cat(p) for i, p in enumerate(parts)}

        return self._cached("mean", [x["x"], x["mask"]], compute)

    def forward(self, x) -> torch.Tensor:
        return list(self.layer_features(x).values())[-1]

    @torch.no_grad()
    def bits_per_byte(self, x) -> torch.Tensor:
        """(N,) bits per UTF-8 byte of each text: summed next-token cross-entropy × log2(e) / byte length
        (platonic-rep-unique)."""
        texts, tokens = self._tokens(x)
        nats = []
        for ids, mask in self._batches(tokens, "bits per byte"):
            logits = self.lm(input_ids=ids, attention_mask=mask).logits.float()
            loss = nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            nats.append((loss * mask[:, 1:]).sum(1))
        n_bytes = torch.tensor([max(1, len(t.encode("utf-8"))) for t in texts], dtype=torch.float32)
        return torch.cat(nats).cpu() * math.log2(math.e) / n_bytes


class HFVisionTransformer(_Frozen):
    """A frozen ViT-style model: the CLS token at the output of every block, from uint8 images (B, 3, H, W).

    Args: as :class:`HFCausalLM`; ``batch_size`` images per forward pass. CLIP checkpoints use their vision tower.
    """

    def __init__(
        self,
        modality: ModalitySpec,
        out_dim: int,
        model: str,
        revision: str | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        dtype: str = "auto",
        feature_cache: str | None = None,
    ) -> None:
        if modality.kind != "image":
            raise ConfigError(f"encoder: hf_vit reads images, got a {modality.kind} modality")
        super().__init__(model, revision, cache_dir, dtype, feature_cache, batch_size)
        transformers = self._transformers()
        loaded = self._load(transformers.AutoModel)
        if hasattr(loaded.config, "mask_ratio"):  # MAE masks 75 % of the patches by default: see them all
            loaded.config.mask_ratio = 0.0
        self.vit = getattr(loaded, "vision_model", loaded).to(self.dtype).eval().requires_grad_(False)
        self.processor = self._load(transformers.AutoImageProcessor, "image processor")

    @torch.no_grad()
    def layer_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        def compute():
            device = next(self.parameters()).device
            images = x if x.dtype == torch.uint8 else (x.clamp(0, 1) * 255).round().to(torch.uint8)
            parts: list[list[torch.Tensor]] = []
            progress, task = self._progress(len(images), f"features {self.model_name}")
            with progress:
                for lo in range(0, len(images), self.batch_size):
                    chunk = [im.cpu().numpy() for im in images[lo : lo + self.batch_size]]
                    pixels = self.processor(images=chunk, return_tensors="pt", input_data_format="channels_first")
                    pixels = pixels["pixel_values"].to(device=device, dtype=self.dtype)
                    hidden = self.vit(pixel_values=pixels, output_hidden_states=True).hidden_states[1:]
                    parts = parts or [[] for _ in hidden]
                    for slot, h in enumerate(hidden):
                        parts[slot].append(h[:, 0].float())
                    progress.advance(task, len(chunk))
            return {f"block{i + 1}": torch.cat(p) for i, p in enumerate(parts)}

        return self._cached("cls", [x], compute)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return list(self.layer_features(x).values())[-1]
