"""Tokenizer and model helpers: a character tokenizer and tiny transformers built in code, loading and
saving HF causal LMs from local directories. Nothing here downloads anything.

``transformers`` is imported inside the functions; ``HF_HUB_OFFLINE=1`` is set before the first
import so that even a mistyped model name fails instead of reaching for the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch

from ppokit.config import one_line
from ppokit.distributed import resolve_device
from ppokit.errors import CheckpointError, ConfigError
from ppokit.llm.config import TinyModelConfig

if TYPE_CHECKING:  # types only: transformers is imported inside the functions that need it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
# Digits first so their ids are stable across tasks; then the characters the built-in tasks and the
# tests use. Any other character maps to <unk>.
DEFAULT_CHARS = "0123456789+-*=()., abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ?!:;'\"/\n"


def load_transformers() -> ModuleType:
    """The ``transformers`` module, offline (``HF_HUB_OFFLINE=1``) and quiet; ConfigError (one line)
    when it is not installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download, whatever a caller passes
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "the language-model side needs transformers: pip install -c constraints.txt -e '.[llm]'"
        ) from None

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # no per-shard bars in the middle of our own
    return transformers


def build_char_tokenizer(chars: str = DEFAULT_CHARS) -> PreTrainedTokenizerBase:
    """A real HF tokenizer (``PreTrainedTokenizerFast``) with one token per character.

    Built on the ``tokenizers`` WordLevel model with a pre-tokenizer that isolates every character, so
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained(dir)`` round-trip it like any hub tokenizer.
    Left padding, because generation appends to the right end of every row.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate([PAD, EOS, BOS, UNK])}
    for ch in dict.fromkeys(chars):
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # concatenate characters back without spaces
    tf = load_transformers()
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=BOS,
        unk_token=UNK,
        padding_side="left",
        model_max_length=4096,
    )
    return tok


def build_tiny_model(
    cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int | None = None
) -> PreTrainedModel:
    """A randomly initialised GPT-2 or Qwen2 causal LM sized by ``cfg``, vocabulary from ``tokenizer``.

    Dropout is off: with dropout two forward passes of the same weights disagree, so the importance
    ratio of GRPO/PPO would not be 1 on the first update (TRL disables dropout for the same reason).
    """
    tf = load_transformers()
    if seed is not None:
        torch.manual_seed(seed)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if cfg.architecture == "gpt2":
        config = tf.GPT2Config(
            n_positions=cfg.n_positions,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            resid_pdrop=0.0,
            activation_function="gelu_pytorch_tanh",  # fused; the default "gelu_new" is several ops in Python
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
        model = tf.GPT2LMHeadModel(config)
    else:
        config = tf.Qwen2Config(
            hidden_size=cfg.n_embd,
            intermediate_size=4 * cfg.n_embd,
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_head,
            max_position_embeddings=cfg.n_positions,
            tie_word_embeddings=True,
            attention_dropout=0.0,
            **ids,
        )
        model = tf.Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def dtype_kwargs(tf: ModuleType, dtype: str | None) -> dict[str, torch.dtype | str]:
    """``{"dtype": ...}`` for ``from_pretrained`` (``torch_dtype`` before transformers 4.56, where
    ``dtype`` did not exist yet; 5.x deprecates ``torch_dtype``). ``None``: transformers' default."""
    if dtype is None:
        return {}
    from ppokit.llm.precision import load_dtype

    major, minor = (int(x) for x in tf.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": load_dtype(dtype)}


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` from a local directory; CheckpointError (one line) when it holds none."""
    tf = load_transformers()
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
    if not any((Path(path) / name).is_file() for name in names):
        # transformers 5 would build an empty tokenizer (one token) from config.json alone
        raise CheckpointError(
            f"model directory {str(path)!r} has no tokenizer (none of {', '.join(names)}); save one "
            "there with tokenizer.save_pretrained(DIR), or pass processing_class="
        )
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"model directory {str(path)!r} has no loadable tokenizer ({type(e).__name__}); save one "
            "there with tokenizer.save_pretrained, or pass processing_class="
        ) from None
    if isinstance(tokenizer, bool) or not hasattr(tokenizer, "pad_token_id"):
        raise CheckpointError(f"model directory {str(path)!r} has no loadable tokenizer")
    return prepare_tokenizer(tokenizer)


def load_pretrained(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | None = "float32",
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from a local directory.

    ``dtype`` (``torch_dtype`` in the configs): ``"float32"`` (the default: float32 master weights even
    for a checkpoint saved in bfloat16, as hub models are), ``"bfloat16"``, ``"float16"`` or ``"auto"``
    (as saved). ``device``: a ``torch.device`` or a config's spec (``auto``, ``cuda``, ...: resolved
    for this process by ``ppokit.distributed.resolve_device``). Raises CheckpointError when the
    directory is missing or holds no loadable model or tokenizer (``tokenizer`` given: it is used
    instead). A tokenizer with no pad token gets its EOS token as pad (padding positions are masked
    everywhere), and padding is set to the left for batched generation.
    """
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"model directory {str(path)!r} has no config.json (expected save_pretrained output)"
        )
    # load_tokenizer refuses a directory without tokenizer files (transformers 5 would build an
    # empty one-token tokenizer); a tokenizer given by the caller needs none there
    tf = load_transformers()
    tokenizer = prepare_tokenizer(tokenizer) if tokenizer is not None else load_tokenizer(path)
    try:
        # output_loading_info and ignore_mismatched_sizes: transformers reports a missing, unexpected or
        # wrong-shaped tensor instead of starting a layer at random without a word (its warning is
        # silenced above) or raising a multi-line RuntimeError; check_loaded refuses each (issue 34)
        model, info = tf.AutoModelForCausalLM.from_pretrained(
            str(path),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **dtype_kwargs(tf, dtype),
        )
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot load a causal LM from {str(path)!r}: {one_line(e, 300)}") from None
    check_causal_lm(model, f"model directory {str(path)!r}")
    check_loaded(info, path)
    return model.to(resolve_device(device)), tokenizer


def check_loaded(info: dict[str, Any], path: str | Path) -> None:
    """CheckpointError naming the tensors when ``from_pretrained``'s loading info (``info``) lists a
    tensor the model needs that ``path`` lacks (it would start random), one ``path`` holds that the
    model has no place for, or one of another shape."""
    problems = []
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        problems.append(f"missing {_names(missing)} (they would start at random)")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)} (the model has no place for them)")
    mismatched = sorted(info.get("mismatched_keys") or [], key=lambda m: str(m[0]))
    if mismatched:
        shapes = [
            f"{k} is {list(saved)} there, {list(wanted)} in the model" for k, saved, wanted in mismatched
        ]
        problems.append(f"wrong shape: {_names(shapes)}")
    if problems:
        raise CheckpointError(
            f"model directory {str(path)!r} does not match its config.json: tensors "
            + "; ".join(problems)
            + ". Save the model again with save_pretrained, or fix config.json"
        )


def _names(items: list[str], most: int = 4) -> str:
    """The first ``most`` of ``items`` and how many more."""
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


def check_causal_lm(model: torch.nn.Module, what: str = "the model") -> None:
    """ConfigError naming the architecture when ``model`` is an encoder (BERT-like) or an
    encoder-decoder rather than a decoder-only causal LM.

    ``AutoModelForCausalLM`` turns a BERT directory into ``BertLMHeadModel`` with bidirectional
    attention (every position sees the tokens after it): GRPO/PPO then train something that does not
    generate the way it is scored, and setting ``is_decoder=True`` only masks the attention of weights
    that were trained as an encoder (issue 34: such a model trained without a word). A model whose
    config names no known encoder family (a user's own module) is let through."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return
    model_type = getattr(cfg, "model_type", None)
    names = list(getattr(cfg, "architectures", None) or []) or [type(model).__name__]
    arch = f"{'/'.join(names)} (model_type {model_type!r})"
    use = "GRPO and PPO train decoder-only causal LMs (GPT-2, Llama, Qwen2, ...): use one of those"
    if getattr(cfg, "is_encoder_decoder", False):
        raise ConfigError(f"{what} holds {arch}, an encoder-decoder model; {use}")
    masked, causal = _lm_families()
    is_causal_class = any(n in causal for n in names)
    if model_type in masked and not (getattr(cfg, "is_decoder", False) and is_causal_class):
        raise ConfigError(
            f"{what} holds {arch}, an encoder (bidirectional attention, trained to fill in masked "
            f"tokens), not a causal language model; {use}"
        )


def _lm_families() -> tuple[set[str], set[str]]:
    """``(model types that have a masked-LM head, class names of causal LMs)`` from transformers'
    auto mappings (empty when this transformers does not expose them)."""
    try:
        from transformers.models.auto import modeling_auto as auto
    except ImportError:  # pragma: no cover - a transformers without the auto mappings
        return set(), set()
    masked = set(getattr(auto, "MODEL_FOR_MASKED_LM_MAPPING_NAMES", {}))
    causal: set[str] = set()
    for value in getattr(auto, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {}).values():
        causal.update([value] if isinstance(value, str) else value)
    return masked, causal


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token (EOS when the tokenizer has none), in place; returns it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def save_pretrained(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> Path:
    """``save_pretrained`` of model (safetensors) and tokenizer into one directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def eos_token_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, (list, tuple)):
        ids.update(extra)
    return sorted(i for i in ids if i is not None)


def trainable_parameter_count(model: torch.nn.Module) -> int:
    """Number of parameters with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
