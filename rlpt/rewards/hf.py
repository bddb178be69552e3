"""Local Hugging Face `transformers` reward models.

`CLIPSimilarityReward` scores image-text similarity with a CLIP/SigLIP-style dual encoder (VLM-RM style);
`VLMYesNoReward` asks a generative VLM (LLaVA, Qwen2-VL, SmolVLM, ...) whether the task is done and reads
P("yes") off the next-token logits (RoboFuME style). Both load with `from_pretrained` from a local folder or
a hub id and run batched under `torch.no_grad` on the chosen device.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlpt.errors import ConfigError
from rlpt.rewards.base import RewardModel, RewardOutput, RewardQuery
from rlpt.utils import resolve_device

DEFAULT_QUESTION = "Has the robot successfully completed the task: {instruction}? Answer yes or no."
_TEXT_CACHE_SIZE = 1024


def _load(owner: str, what: str, loaders: Sequence[Any], name_or_path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name_or_path, **kwargs)` with the first loader that works; ConfigError otherwise."""
    errors = []
    for loader in loaders:
        try:
            return loader.from_pretrained(name_or_path, **kwargs)
        except Exception as err:  # transformers raises OSError, ValueError, KeyError, ...
            first = (str(err).strip().splitlines() or [""])[0][:300]
            errors.append(f"{loader.__name__}: {type(err).__name__}: {first}")
    raise ConfigError(f"{owner}: cannot load the {what} from {name_or_path!r} (a local folder or a hub id; "
                      f"local_files_only={kwargs.get('local_files_only')}): " + "; ".join(errors))


def _resolve_path(owner: str, name_or_path: str | os.PathLike) -> str:
    """A hub id as given; a path ("/...", "./...", "~/...") expanded, and ConfigError when it does not exist
    (transformers would report it as a malformed repo id)."""
    name = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or os.path.isabs(name) or name.startswith((".", "~")):
        name = os.path.expanduser(name)
        if not os.path.isdir(name):
            raise ConfigError(f"{owner}: cannot load the model from {name!r}: no such folder")
    return name


def _model_kwargs(local_files_only: bool, dtype: str | torch.dtype | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ConfigError(f"dtype must be 'auto' or a torch dtype name such as 'bfloat16'; got {dtype!r}")
        dtype = getattr(torch, dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return kwargs


def _to_device(inputs: Any, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Tensors of a processor's output on `device`; floating ones (pixel values) in the model's dtype."""
    return {k: (v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
            for k, v in dict(inputs).items()}


def _images(query: RewardQuery, owner: str) -> list[np.ndarray]:
    if query.images is None:
        raise ConfigError(f"{owner} needs images; the query has none")
    return list(np.asarray(query.images))


def _fill(template: str, instruction: str, owner: str) -> str:
    """`template` with "{instruction}" replaced (other braces are kept as written)."""
    if "{instruction}" in template and not instruction.strip():
        raise ConfigError(f"{owner}: the prompt {template!r} needs an instruction but the query has none "
                          "(pass instruction=... to relabel / RewardWrapper)")
    return template.replace("{instruction}", instruction)


class CLIPSimilarityReward(RewardModel):
    """Image-text similarity of a CLIP/SigLIP-style dual encoder (anything `AutoModel` loads with
    `get_image_features` and `get_text_features`: CLIPModel, SiglipModel, ...).

    The positive text is `prompt` with "{instruction}" replaced by the query's instruction (default: the
    instruction itself; a prompt without the placeholder is fixed). Without `negatives`, reward = prob =
    cosine similarity of image and positive text, in [-1, 1]. With `negatives` (templates like `prompt`),
    reward = prob = softmax over `logit_scale * cosine` of [positive, *negatives], the probability of the
    positive text. `logit_scale` defaults to the model's learned one (exp(model.logit_scale)).
    `success = prob > threshold` when a threshold is given, else None.
    Text embeddings are cached per instruction.
    """

    needs = ("images",)

    def __init__(self, name_or_path: str | os.PathLike, *, prompt: str = "{instruction}",
                 negatives: Sequence[str] = (), threshold: float | None = None, logit_scale: float | None = None,
                 device: str | torch.device = "auto", dtype: str | torch.dtype | None = None, batch_size: int = 32,
                 local_files_only: bool = False) -> None:
        import transformers

        owner = type(self).__name__
        self.name_or_path = _resolve_path(owner, name_or_path)
        self.prompt, self.negatives, self.threshold, self.batch_size = prompt, tuple(negatives), threshold, batch_size
        self.device = resolve_device(device)
        kwargs = _model_kwargs(local_files_only, dtype)
        self.model = _load(owner, "model", [transformers.AutoModel], self.name_or_path, **kwargs)
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise ConfigError(f"{owner}: {self.name_or_path!r} loads as {type(self.model).__name__}, which has no "
                              "get_image_features/get_text_features (expected a CLIP/SigLIP-style model)")
        self.model.to(self.device).eval()
        self.tokenizer = _load(owner, "tokenizer", [transformers.AutoTokenizer], self.name_or_path,
                               local_files_only=local_files_only)
        self.image_processor = _load(owner, "image processor", [transformers.AutoImageProcessor], self.name_or_path,
                                     local_files_only=local_files_only)
        if logit_scale is None:
            scale = getattr(self.model, "logit_scale", None)
            logit_scale = float(scale.detach().exp()) if torch.is_tensor(scale) else 100.0
        self.logit_scale = logit_scale
        # SigLIP was trained on texts padded to the full length (and has a logit bias; CLIP has none).
        self._pad_to_max = hasattr(self.model, "logit_bias")
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self._max_length = int(getattr(text_config, "max_position_embeddings", 0) or 77)
        self._text_cache: dict[str, torch.Tensor] = {}

    @staticmethod
    def _normalized(out: Any) -> torch.Tensor:
        # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor.
        emb = out if torch.is_tensor(out) else out.pooler_output
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    def texts(self, instruction: str) -> list[str]:
        """The positive text for `instruction`, then the negatives."""
        owner = type(self).__name__
        return [_fill(self.prompt, instruction, owner)] + [_fill(t, instruction, owner) for t in self.negatives]

    @torch.no_grad()
    def text_embeddings(self, instruction: str) -> torch.Tensor:
        """Unit-norm float32 embeddings (1 + len(negatives), D) of `texts(instruction)`, cached."""
        if instruction in self._text_cache:
            return self._text_cache[instruction]
        tokens = self.tokenizer(self.texts(instruction), padding="max_length" if self._pad_to_max else True,
                                truncation=True, max_length=self._max_length, return_tensors="pt")
        emb = self._normalized(self.model.get_text_features(**_to_device(tokens, self.device, self.model.dtype)))
        if len(self._text_cache) >= _TEXT_CACHE_SIZE:
            self._text_cache.pop(next(iter(self._text_cache)))
        self._text_cache[instruction] = emb
        return emb

    @torch.no_grad()
    def image_embeddings(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Unit-norm float32 embeddings (B, D) of uint8 (H, W, 3) images."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")
        return self._normalized(self.model.get_image_features(**_to_device(pixels, self.device, self.model.dtype)))

    def score(self, query: RewardQuery) -> RewardOutput:
        images = _images(query, type(self).__name__)
        sims = self.image_embeddings(images) @ self.text_embeddings(query.instruction).T  # (B, 1 + K)
        if self.negatives:
            prob = torch.softmax(self.logit_scale * sims, dim=-1)[:, 0]
        else:
            prob = sims[:, 0]
        prob_np = prob.cpu().numpy().astype(np.float32)
        success = None if self.threshold is None else prob_np > self.threshold
        return RewardOutput(prob_np, np.ones(len(prob_np), bool), success, prob_np)

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "model": self.name_or_path, "prompt": self.prompt,
                "negatives": list(self.negatives), "threshold": self.threshold, "logit_scale": self.logit_scale}


class VLMYesNoReward(RewardModel):
    """A generative VLM asked a yes/no success question about each image (RoboFuME's success detector).

    `question` ("{instruction}" is replaced by the query's instruction) goes through the processor's chat
    template when it has one (`use_chat_template=None`), else into a plain "<image>\\n<question>" prompt.
    P(yes) is the softmax of the next-token logits restricted to the single-token spellings of `yes_words`
    and `no_words` (with and without a leading space) that the tokenizer knows, summed over the yes tokens.
    reward = prob = P(yes) (or the 0/1 success with `binary=True`); success = P(yes) > P(no) (i.e. > 0.5),
    or P(yes) > `threshold` when given.
    """

    needs = ("images",)

    def __init__(self, name_or_path: str | os.PathLike, *, question: str = DEFAULT_QUESTION,
                 threshold: float | None = None, binary: bool = False, yes_words: Sequence[str] = ("Yes", "yes"),
                 no_words: Sequence[str] = ("No", "no"), use_chat_template: bool | None = None,
                 device: str | torch.device = "auto", dtype: str | torch.dtype | None = None, batch_size: int = 8,
                 local_files_only: bool = False) -> None:
        import transformers

        owner = type(self).__name__
        self.name_or_path = _resolve_path(owner, name_or_path)
        self.question, self.threshold, self.binary, self.batch_size = question, threshold, binary, batch_size
        self.device = resolve_device(device)
        loaders = [getattr(transformers, n) for n in ("AutoModelForImageTextToText", "AutoModelForVision2Seq")
                   if hasattr(transformers, n)]
        self.model = _load(owner, "model", loaders, self.name_or_path, **_model_kwargs(local_files_only, dtype))
        self.model.to(self.device).eval()
        self.processor = _load(owner, "processor", [transformers.AutoProcessor], self.name_or_path,
                               local_files_only=local_files_only)
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ConfigError(f"{owner}: the processor of {self.name_or_path!r} ({type(self.processor).__name__}) "
                              "has no tokenizer")
        self.tokenizer.padding_side = "left"  # the last position is every prompt's next token
        self.yes_ids = self._token_ids(yes_words)
        self.no_ids = self._token_ids(no_words)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise ConfigError(f"{owner}: the tokenizer of {self.name_or_path!r} has no single tokens for the answers "
                              f"(yes_words={list(yes_words)} -> {self.yes_ids}, no_words={list(no_words)} -> "
                              f"{self.no_ids}); pass yes_words/no_words that it spells as one token")
        has_template = getattr(self.processor, "chat_template", None) is not None
        if use_chat_template and not has_template:
            raise ConfigError(f"{owner}: use_chat_template=True but the processor of {self.name_or_path!r} has "
                              "no chat template")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self.image_token = getattr(self.processor, "image_token", None) or getattr(self.tokenizer, "image_token", None)
        self._keep_last = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._prompts: dict[str, str] = {}

    def _token_ids(self, words: Sequence[str]) -> list[int]:
        """Ids of the single-token spellings of `words` (as written and with a leading space); never <unk>."""
        ids: list[int] = []
        unk = self.tokenizer.unk_token_id
        for word in words:
            for variant in (word, " " + word):
                enc = self.tokenizer.encode(variant, add_special_tokens=False)
                if (len(enc) == 1 and enc[0] != unk and enc[0] not in ids
                        and self.tokenizer.decode(enc).strip() == word.strip()):
                    ids.append(int(enc[0]))
        return ids

    def prompt(self, instruction: str) -> str:
        """The text the model sees for one image (image placeholder included)."""
        if instruction not in self._prompts:
            question = _fill(self.question, instruction, type(self).__name__)
            if self.use_chat_template:
                messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
                text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            else:
                text = f"{self.image_token}\n{question}" if self.image_token else question
            self._prompts[instruction] = text
        return self._prompts[instruction]

    @torch.no_grad()
    def yes_no_probs(self, query: RewardQuery) -> tuple[np.ndarray, np.ndarray]:
        """(P(yes), P(no)), each float (B,), from the softmax restricted to the yes and no token ids."""
        images = _images(query, type(self).__name__)
        inputs = self.processor(images=images, text=[self.prompt(query.instruction)] * len(images),
                                padding=True, return_tensors="pt")
        inputs = _to_device(inputs, self.device, self.model.dtype)
        extra = {"logits_to_keep": 1} if self._keep_last else {}
        logits = self.model(**inputs, **extra).logits[:, -1].float()
        logp = torch.log_softmax(logits[:, self.yes_ids + self.no_ids], dim=-1)
        n_yes = len(self.yes_ids)
        p_yes = logp[:, :n_yes].logsumexp(-1).exp()
        p_no = logp[:, n_yes:].logsumexp(-1).exp()
        return p_yes.cpu().numpy().astype(np.float32), p_no.cpu().numpy().astype(np.float32)

    def score(self, query: RewardQuery) -> RewardOutput:
        p_yes, p_no = self.yes_no_probs(query)
        success = p_yes > p_no if self.threshold is None else p_yes > self.threshold
        reward = success.astype(np.float32) if self.binary else p_yes
        return RewardOutput(reward, np.ones(len(p_yes), bool), success, p_yes)

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "model": self.name_or_path, "question": self.question,
                "threshold": self.threshold, "binary": self.binary, "yes_ids": self.yes_ids, "no_ids": self.no_ids,
                "chat_template": self.use_chat_template}
