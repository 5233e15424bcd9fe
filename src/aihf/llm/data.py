"""LLM data through Hugging Face `datasets`: demonstrations, preference pairs, Anthropic HH dialogues and chat
message lists, validated row by row so that bad input stops the run before training with the file and row.

Every source becomes plain records: demonstrations {prompt, response}, pairs {prompt, chosen, rejected},
evaluation prompts {prompt}. Tokenisation (and the length rules) is `encode`'s job.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

from aihf.errors import ConfigError

log = logging.getLogger("aihf")
ASSISTANT = "\n\nAssistant:"
FORMATS = ("plain", "hh", "chat")


def _read_text(path: Path) -> str:
    """The file's text, or one line naming the file (and the line, for bytes that are not UTF-8)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:  # unreadable, or a truncated .gz
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def _check_json(path: Path, lines: bool) -> None:
    """`datasets` reports a broken JSON file without its line; check it first (and that it has rows at all)."""
    text = _read_text(path)
    if not text.strip():
        raise ConfigError(f"{path}: empty file (no rows)")
    if not lines:
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{path}:{lineno}: expected a JSON object, found {type(value).__name__}")


def load_rows(source: str, split: str = "train") -> tuple[list[dict], str]:
    """Rows of a local jsonl/json/parquet file (plain or .gz), or of a hub dataset when online. Returns (rows, label)."""
    import datasets
    datasets.disable_progress_bars()  # local files load in moments; the bars would bury the one-line errors
    path = Path(source).expanduser()
    if path.is_file():
        name = path.name.removesuffix(".gz")
        if name.endswith((".jsonl", ".json")):
            _check_json(path, lines=name.endswith(".jsonl"))
            builder = "json"
        elif name.endswith(".parquet"):
            builder = "parquet"
        else:
            raise ConfigError(f"{path}: unsupported data file; expected .jsonl, .json or .parquet (optionally .gz)")
        try:
            ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # pyarrow's own messages name neither the file nor the field
            raise ConfigError(f"{path}: could not be read as {builder}: {str(exc).splitlines()[0]}") from None
        if len(ds) == 0:
            raise ConfigError(f"{path}: no rows")
        return list(ds), str(path)
    if path.is_dir() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        if path.is_dir():
            try:
                ds = datasets.load_dataset(str(path), split=split)
            except Exception as exc:
                raise ConfigError(f"{path}: could not be read as a dataset folder: {str(exc).splitlines()[0]}") from None
            return list(ds), str(path)
        raise ConfigError(f"{source}: no such data file")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise ConfigError(f"{source}: not a local file, and the hub is offline (HF_HUB_OFFLINE=1); give a local path")
    return list(datasets.load_dataset(source, split=split)), f"{source}[{split}]"


def _field(row: dict, key: str, label: str, i: int, kind=str):
    if key not in row or row[key] is None:  # `datasets` fills a field that other rows have with None
        found = sorted(k for k, v in row.items() if v is not None)
        raise ConfigError(f"{label} row {i + 1}: missing field {key!r} (found {found})")
    value = row[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{label} row {i + 1}: field {key!r} should be {kind.__name__}, found {type(value).__name__}")
    return value


def _nonempty(text: str, what: str, label: str, i: int) -> str:
    if not text.strip():
        raise ConfigError(f"{label} row {i + 1}: empty {what} (llm.data.empty_responses=drop skips such rows)")
    return text


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """An HH record → (prompt, chosen response, rejected response).

    The prompt is the shared prefix up to the last "\\n\\nAssistant:" both dialogues contain; usually that is the
    final turn, but where the two diverge earlier the responses carry the rest of each dialogue.
    """
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(ASSISTANT, 0, common)  # the marker must lie wholly inside the shared prefix
    if cut < 0:
        raise ValueError("chosen and rejected share no 'Assistant:' turn")
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def render_chat(tok, messages: list, label: str, i: int) -> tuple[str, str]:
    """A message list ending with the assistant's turn → (prompt rendered by the chat template, response text)."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "assistant":
        raise ConfigError(f"{label} row {i + 1}: a chat record must end with an assistant message")
    if not getattr(tok, "chat_template", None):
        raise ConfigError(f"{label}: llm.data.format=chat needs a tokenizer with a chat template")
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    return prompt, messages[-1].get("content") or ""


class _Skip(Exception):
    pass


def _nonempty_or_skip(text: str, what: str, label: str, i: int, drop: bool) -> str:
    if drop and not text.strip():
        raise _Skip
    return _nonempty(text, what, label, i)


def to_demos(rows: list[dict], fmt: str, label: str, tok=None, drop_empty: bool = False) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        if fmt == "chat":
            prompt, response = render_chat(tok, _field(row, "messages", label, i, list), label, i)
        else:
            prompt, response = _field(row, "prompt", label, i), _field(row, "response", label, i)
        try:
            out.append({"prompt": prompt, "response": _nonempty_or_skip(response, "response", label, i, drop_empty)})
        except _Skip:
            continue
    if len(out) < len(rows):
        log.warning("%s: dropped %d rows with an empty response (llm.data.empty_responses=drop)", label,
                    len(rows) - len(out))
    return out


def to_pairs(rows: list[dict], fmt: str, label: str, tok=None, drop_empty: bool = False) -> list[dict]:
    out, diverged = [], 0
    for i, row in enumerate(rows):
        if fmt == "hh":
            chosen_d, rejected_d = _field(row, "chosen", label, i), _field(row, "rejected", label, i)
            try:
                prompt, chosen, rejected = split_hh(chosen_d, rejected_d)
            except ValueError as exc:
                raise ConfigError(f"{label} row {i + 1}: {exc}") from None
            diverged += chosen_d.count(ASSISTANT) + rejected_d.count(ASSISTANT) > 2 * prompt.count(ASSISTANT) + 2
        elif fmt == "chat":
            c, r = _field(row, "chosen", label, i, list), _field(row, "rejected", label, i, list)
            if c[:-1] != r[:-1]:
                raise ConfigError(f"{label} row {i + 1}: chosen and rejected conversations differ before the last turn")
            prompt, chosen = render_chat(tok, c, label, i)
            _, rejected = render_chat(tok, r, label, i)
        else:
            prompt = _field(row, "prompt", label, i)
            chosen, rejected = _field(row, "chosen", label, i), _field(row, "rejected", label, i)
        try:
            out.append({"prompt": prompt, "chosen": _nonempty_or_skip(chosen, "chosen response", label, i, drop_empty),
                        "rejected": _nonempty_or_skip(rejected, "rejected response", label, i, drop_empty)})
        except _Skip:
            continue
    if len(out) < len(rows):
        log.warning("%s: dropped %d pairs with an empty response (llm.data.empty_responses=drop)", label,
                    len(rows) - len(out))
    if diverged:
        log.info("%s: %d pairs diverge before the last Assistant turn; their responses carry the rest of the dialogue",
                 label, diverged)
    return out


def to_prompts(rows: list[dict], fmt: str, label: str, tok=None, drop_empty: bool = False) -> list[str]:
    prompts = []
    for i, row in enumerate(rows):
        if fmt == "chat" and "messages" in row:
            msgs = _field(row, "messages", label, i, list)
            msgs = msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs
            prompts.append(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        else:
            prompts.append(_nonempty(_field(row, "prompt", label, i), "prompt", label, i))
    return prompts


class Encoder:
    """Text → token ids under the length rules: prompt ≤ max_prompt_length (error, or keep its last tokens after
    the tokenizer's leading special tokens, e.g. an encoder's [CLS]); prompt + response ≤ max_length by cutting the
    response's end; the response ends with eos. `keys` name the two limits in messages."""

    def __init__(self, tok, max_length: int, max_prompt_length: int, prompt_truncation: str = "error",
                 keys: tuple[str, str] = ("llm.data.max_length", "llm.data.max_prompt_length")):
        if prompt_truncation not in ("error", "left"):
            raise ConfigError(f"llm.data.prompt_truncation={prompt_truncation!r}: expected error or left")
        if max_prompt_length >= max_length:
            raise ConfigError(f"{keys[1]}={max_prompt_length} leaves no room for a response within "
                              f"{keys[0]}={max_length}")
        self.tok, self.max_length, self.max_prompt_length = tok, max_length, max_prompt_length
        self.prompt_truncation, self.keys = prompt_truncation, keys
        # Encoders (e.g. MiniLM as a reward model) have no eos; their separator token closes the response.
        end = tok.eos_token_id if tok.eos_token_id is not None else getattr(tok, "sep_token_id", None)
        self.end = [end] if end is not None else []
        self.special = set(tok.all_special_ids)

    def prompt(self, text: str, where: str = "") -> list[int]:
        ids = self.tok(text, add_special_tokens=True)["input_ids"]
        if self.end and len(ids) > 1 and ids[-1] == self.end[0]:
            ids = ids[:-1]  # some tokenizers append eos (or [SEP]) to every text; a prompt must not end the sequence
        if len(ids) > self.max_prompt_length:
            if self.prompt_truncation == "error":
                raise ConfigError(f"{where}: prompt has {len(ids)} tokens > {self.keys[1]}="
                                  f"{self.max_prompt_length}; raise it (and {self.keys[0]}), or set "
                                  f"llm.data.prompt_truncation=left to keep the prompt's last tokens")
            lead = 0
            while lead < len(ids) - 1 and ids[lead] in self.special:
                lead += 1  # [CLS] / <bos> stay first: the model reads its summary (or start) from them
            lead = min(lead, self.max_prompt_length - 1)
            ids = ids[:lead] + ids[len(ids) - (self.max_prompt_length - lead):]
        return ids

    def response(self, text: str, prompt_len: int) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"] + self.end
        return ids[: self.max_length - prompt_len]

    def demo(self, row: dict, where: str) -> dict:
        p = self.prompt(row["prompt"], where)
        return {"prompt": p, "response": self.response(row["response"], len(p))}

    def pair(self, row: dict, where: str) -> dict:
        p = self.prompt(row["prompt"], where)
        return {"prompt": p, "chosen": self.response(row["chosen"], len(p)),
                "rejected": self.response(row["rejected"], len(p))}
