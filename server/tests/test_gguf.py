"""GGUF files read directly: each tensor type dequantises to exactly the weights transformers' own
GGUF loader makes of the same file, the model then computes its numbers, and the tokenizer built
from the file's metadata splits text as transformers' GGUF tokenizer does."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load a GGUF file
gguf = pytest.importorskip("gguf")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # transformers' GGUF loading draws bars into the test log

from djinn.model.build import build_model  # noqa: E402
from djinn.model.gguf_file import unpermute_rope_rows  # noqa: E402
from djinn.model.llama import rope_tables  # noqa: E402
from model_files import _permute, random_hf, write_gguf  # noqa: E402

CPU = torch.device("cpu")
Q = gguf.GGMLQuantizationType
TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
TEXTS = ["the cat in the hat", "  two  spaces, then\na newline<|endoftext|>!", "ünïcödé and 12345"]


def _load_hf(path):
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("qtype", TYPES)
def test_dequantised_weights_and_logits_equal_transformers(tmp_path, arch, qtype):
    hf, cfg = random_hf("qwen2" if arch == "qwen2" else "llama", seed=3)
    path = tmp_path / f"m-{qtype}.gguf"
    write_gguf(hf, cfg, path, arch, getattr(Q, qtype))
    ref = _load_hf(path)
    net, _, args = build_model(str(path), CPU, torch.float32)
    theirs = {k.removeprefix("model."): v for k, v in ref.state_dict().items()}
    for name, p in net.state_dict().items():
        assert torch.equal(p, theirs[name]), f"{qtype} {name}"
    if qtype != "F32":  # the file holds the quantised values, not the originals
        assert not torch.equal(net.layers[0].mlp.up_proj.weight, hf.model.layers[0].mlp.up_proj.weight)
    ids = torch.arange(3, 19)
    kv = torch.zeros(args.n_layers, 2, args.n_kv_heads, 32, args.head_dim)
    cos, sin = rope_tables(args, 32, CPU, torch.float32)
    with torch.no_grad():
        ours = net.forward_plain(ids, kv, 0, cos, sin)
        want = ref(ids[None]).logits[0].float()
    assert (ours - want).abs().max().item() < 1e-4


def test_unpermute_inverts_llama_cpp_permute():
    w = torch.randn(4 * 16, 8)
    for heads in (4, 2):
        back = unpermute_rope_rows(torch.from_numpy(_permute(w.numpy(), heads)), heads)
        assert torch.equal(back, w)


def test_gpt2_tokenizer_equals_transformers(tmp_path):
    hf, cfg = random_hf("llama")
    path = tmp_path / "t.gguf"
    write_gguf(hf, cfg, path, "llama")
    _, ours, _ = build_model(str(path), CPU, torch.float32)
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs(text, add_special_tokens=False).input_ids, text
        assert ours.decode(ids) == text.replace("<|endoftext|>", "")
    assert ours.encode("<|endoftext|>") == [ours.eos_id], "a control token is one token"
    assert ours.token_text(ours.eos_id) == "<|endoftext|>"


def _write_spm(path, vocab_size: int = 320) -> None:
    """A SentencePiece-style ("llama") tokenizer: <unk> <s> </s>, 256 byte tokens, scored pieces."""
    pieces = ["▁", "t", "h", "e", "c", "a", "▁t", "he", "▁the", "at", "▁c", "▁cat", "s", "▁s", "at▁"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    while len(tokens) < vocab_size:
        tokens.append(f"<filler_{len(tokens)}>")
        types.append(4)
        scores.append(-1000.0)
    hf, cfg = random_hf("llama", vocab_size=vocab_size)
    write_gguf(hf, cfg, path, "llama")
    # the same file with a "llama" tokenizer instead of the gpt2 one
    reader = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(path) + ".spm", "llama")
    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", "general.architecture")) or key.startswith("tokenizer."):
            continue
        w.add_key_value(key, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_shape=[int(d) for d in reversed(t.shape)], raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_sentencepiece_tokenizer_equals_transformers(tmp_path):
    path = tmp_path / "base.gguf"
    _write_spm(path)
    spm = tmp_path / "spm.gguf"
    (tmp_path / "base.gguf.spm").rename(spm)
    _, ours, _ = build_model(str(spm), CPU, torch.float32)
    theirs = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=spm.name)
    for text in ["the cat sat", "thecat  the", "ü"]:
        ids = ours.encode(text)
        assert ids[0] == 1, "add_bos_token: <s> first"
        assert ids == theirs(text).input_ids, text
        assert ours.decode(ids) == text


# K-quants (Q4_K_M files hold Q4_K and Q6_K): gguf can read them but not write them, so the test
# writes random blocks with sane scales and checks our weights against transformers' own decoding.
_K_SCALES = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q2_K": (80, 82), "Q3_K": (108,)}


def _random_kquant(rows: int, cols: int, qtype, rng) -> np.ndarray:
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, nbytes), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    for off in _K_SCALES[qtype.name]:  # fp16 d / dmin fields: finite and small
        data[:, :, off:off + 2] = scale
    return data.reshape(rows, -1)


def _rewrite(src, dst, tensor_fn) -> None:
    """src's metadata and tensors into dst, each tensor through tensor_fn(tensor) -> (data, type)."""
    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        w.add_key_value(key, field.contents(), field.types[0], field.types[-1] if len(field.types) > 1 else None)
    for t in reader.tensors:
        data, qtype = tensor_fn(t)
        if qtype == t.tensor_type:
            w.add_tensor(t.name, data, raw_shape=[int(d) for d in reversed(t.shape)], raw_dtype=qtype)
        else:
            w.add_tensor(t.name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q5_K"])
def test_k_quants_equal_transformers(tmp_path, qtype):

    hf, cfg = random_hf("llama", hidden_size=256, intermediate_size=256, num_attention_heads=4,
                        num_key_value_heads=2)
    base, path = tmp_path / "f32.gguf", tmp_path / f"{qtype}.gguf"
    write_gguf(hf, cfg, base, "llama")
    rng, q = np.random.default_rng(0), getattr(Q, qtype)

    def k(t):
        shape = [int(d) for d in reversed(t.shape)]
        if len(shape) == 2:
            return _random_kquant(shape[0], shape[1], q, rng), q
        return t.data, t.tensor_type
    _rewrite(base, path, k)
    ref = _load_hf(path)
    net, _, args = build_model(str(path), CPU, torch.float32)
    theirs = {n.removeprefix("model."): v for n, v in ref.state_dict().items()}
    for name, p in net.state_dict().items():
        assert torch.isfinite(p).all(), name
        assert torch.equal(p, theirs[name]), f"{qtype} {name}"
    assert net.layers[0].mlp.up_proj.weight.std() > 0.01
