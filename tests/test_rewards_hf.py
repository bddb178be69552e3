"""Local Hugging Face reward backends (rlpt.rewards.hf) on tiny randomly initialised models saved to disk
and loaded back by path, with the network blocked."""

from __future__ import annotations

import socket
import string

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from rlpt.data.dataset import Dataset  # noqa: E402
from rlpt.errors import ConfigError  # noqa: E402
from rlpt.rewards import RewardQuery, relabel  # noqa: E402
from rlpt.rewards.hf import CLIPSimilarityReward, VLMYesNoReward  # noqa: E402

INSTRUCTION = "pick the cube"
VLM_WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "Yes", "No", "yes", "no", "Has", "the", "robot",
             "successfully", "completed", "task:", "pick", "cube", "open", "drawer", "?", "Answer", "or", ".",
             "USER:", "ASSISTANT:"]
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
                 "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Offline mode on, and any socket connection fails the module (recorded even if a library swallows it)."""
    import huggingface_hub.constants

    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] or args)
        raise OSError("network access is not allowed in tests")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield
    assert not attempts, f"network access attempted: {attempts}"


def _clip_tokenizer():
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase + ".,:?'":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=[])


def _clip_image_processor():
    # the PIL backend: the default torchvision one is not installed next to the CPU torch wheel
    return transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _tower(**extra) -> dict:
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, **extra)


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    tok = _clip_tokenizer()
    cfg = transformers.CLIPConfig(
        text_config=_tower(vocab_size=len(tok), max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                           pad_token_id=1),
        vision_config=_tower(image_size=32, patch_size=8), projection_dim=8)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    transformers.CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    _clip_image_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def siglip_path(tmp_path_factory):
    tok = _clip_tokenizer()  # SigLIP's own tokenizer is SentencePiece; any tokenizer of the right vocab size works
    cfg = transformers.SiglipConfig(
        text_config=_tower(vocab_size=len(tok), max_position_embeddings=16, pad_token_id=1, bos_token_id=0,
                           eos_token_id=1),
        vision_config=_tower(image_size=32, patch_size=8))
    torch.manual_seed(0)
    model = transformers.SiglipModel(cfg)
    with torch.no_grad():  # a non-trivial scale and bias, to check they do not leak into the cosine
        model.logit_scale.fill_(1.5)
        model.logit_bias.fill_(-0.5)
    path = tmp_path_factory.mktemp("siglip")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    vocab = {w: i for i, w in enumerate(VLM_WORDS)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                               bos_token="<s>", eos_token="</s>",
                                               extra_special_tokens={"image_token": "<image>"})
    image_processor = _clip_image_processor()
    # 16 patches + CLS, minus CLS for the "default" feature strategy: 16 image tokens per image
    processor = transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                                            vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                                            num_additional_image_tokens=1)
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**_tower(image_size=32, patch_size=8)),
        text_config=transformers.LlamaConfig(**_tower(vocab_size=len(vocab), num_key_value_heads=2,
                                                      max_position_embeddings=128, pad_token_id=0, bos_token_id=2,
                                                      eos_token_id=3)),
        image_token_id=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(0)
    model = transformers.LlavaForConditionalGeneration(cfg)
    with torch.no_grad():  # sharper next-token logits than the 0.02-std init, so images visibly change P(yes)
        model.lm_head.weight.mul_(50.0)
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images():
    """Six 40x48 frames: 0 and 3 identical, the rest different (the processors resize to 32)."""
    rng = np.random.default_rng(0)
    ims = rng.integers(0, 256, size=(6, 40, 48, 3), dtype=np.uint8)
    ims[3] = ims[0]
    return ims


@pytest.fixture(scope="module")
def clip(clip_path):
    return CLIPSimilarityReward(clip_path, device="cpu")


@pytest.fixture(scope="module")
def vlm(llava_path):
    return VLMYesNoReward(llava_path, device="cpu")


def _check_common(model, images, out, lo: float, hi: float):
    """Shapes, range, determinism, distinct images, and batched == one-by-one."""
    n = len(images)
    assert out.reward.shape == out.valid.shape == out.prob.shape == (n,)
    assert out.valid.all() and out.reasons == [""] * n
    assert np.all((out.prob >= lo) & (out.prob <= hi))
    assert out.prob[0] == pytest.approx(out.prob[3], abs=1e-6)  # identical images
    assert len(np.unique(np.round(out.prob[[0, 1, 2, 4, 5]], 7))) == 5  # different images
    single = np.array([model.score(RewardQuery(images=images[i:i + 1], instruction=INSTRUCTION)).prob[0]
                       for i in range(n)])
    np.testing.assert_allclose(out.prob, single, atol=1e-5)


# ---------------------------------------------------------------- CLIP / SigLIP
def test_clip_cosine_reward(clip, images):
    clip.batch_size = 4  # __call__ splits the 6 images into chunks of 4 and 2
    out = clip(RewardQuery(images=images, instruction=INSTRUCTION))
    _check_common(clip, images, out, -1.0, 1.0)
    np.testing.assert_array_equal(out.reward, out.prob)
    assert out.success is None  # no threshold
    # the cosine itself: against the model's own embeddings
    with torch.no_grad():
        pix = clip.image_processor(images=list(images), return_tensors="pt")
        img = clip.model.get_image_features(**pix).pooler_output
        txt = clip.model.get_text_features(**clip.tokenizer([INSTRUCTION], return_tensors="pt")).pooler_output
    np.testing.assert_allclose(out.prob, torch.cosine_similarity(img, txt).numpy(), atol=1e-5)
    assert clip.describe() == {"type": "CLIPSimilarityReward", "model": clip.name_or_path, "prompt": "{instruction}",
                               "negatives": [], "threshold": None,
                               "logit_scale": pytest.approx(np.exp(2.6592), rel=1e-4)}  # CLIP's initial scale


def test_clip_negatives_softmax_matches_clip_logits(clip_path, images):
    reward = CLIPSimilarityReward(clip_path, device="cpu", prompt="a robot that did {instruction}",
                                  negatives=["a robot that did not {instruction}", "an empty table"], threshold=0.4)
    query = RewardQuery(images=images, instruction=INSTRUCTION)
    out = reward(query)
    assert reward.texts(INSTRUCTION) == ["a robot that did pick the cube", "a robot that did not pick the cube",
                                         "an empty table"]
    np.testing.assert_array_equal(out.success, out.prob > 0.4)
    np.testing.assert_array_equal(out.reward, out.prob)
    # CLIPModel.forward: logits_per_image = exp(logit_scale) * cosine; its softmax over the texts is our prob
    with torch.no_grad():
        inputs = reward.tokenizer(reward.texts(INSTRUCTION), padding=True, return_tensors="pt")
        logits = reward.model(**inputs, **reward.image_processor(images=list(images), return_tensors="pt"))
    expected = torch.softmax(logits.logits_per_image, -1)[:, 0].numpy()
    np.testing.assert_allclose(out.prob, expected, atol=1e-5)
    _check_common(reward, images, out, 0.0, 1.0)


def test_clip_text_embeddings_follow_the_instruction_and_are_cached(clip, images):
    a = clip.text_embeddings("pick the cube")
    b = clip.text_embeddings("open the drawer")
    assert a.shape == b.shape == (1, 8)
    assert torch.linalg.vector_norm(a, dim=-1).item() == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(a, b)
    assert clip.text_embeddings("pick the cube") is a  # cached
    r_pick = clip.score(RewardQuery(images=images[:2], instruction="pick the cube")).reward
    r_open = clip.score(RewardQuery(images=images[:2], instruction="open the drawer")).reward
    assert not np.allclose(r_pick, r_open)
    with pytest.raises(ConfigError, match="needs an instruction"):
        clip.score(RewardQuery(images=images[:1], instruction=""))


def test_clip_in_bfloat16_matches_float32(clip, clip_path, images):
    half = CLIPSimilarityReward(clip_path, device="cpu", dtype="bfloat16")
    assert half.model.dtype == torch.bfloat16
    query = RewardQuery(images=images, instruction=INSTRUCTION)
    np.testing.assert_allclose(half(query).prob, clip(query).prob, atol=0.05)
    with pytest.raises(ConfigError, match="dtype"):
        CLIPSimilarityReward(clip_path, device="cpu", dtype="float17")


def test_siglip_cosine_reward(siglip_path, images):
    reward = CLIPSimilarityReward(siglip_path, device="cpu", threshold=0.0, local_files_only=True)
    assert reward._pad_to_max and reward.logit_scale == pytest.approx(np.exp(1.5))
    out = reward(RewardQuery(images=images, instruction=INSTRUCTION))
    _check_common(reward, images, out, -1.0, 1.0)
    np.testing.assert_array_equal(out.success, out.prob > 0.0)
    # SiglipModel.forward (texts padded to max_length): logits = exp(scale) * cosine + bias
    with torch.no_grad():
        tokens = reward.tokenizer([INSTRUCTION], padding="max_length", max_length=16, return_tensors="pt")
        logits = reward.model(**tokens, **reward.image_processor(images=list(images), return_tensors="pt"))
    logits = logits.logits_per_image
    np.testing.assert_allclose(out.prob, ((logits[:, 0] + 0.5) / np.exp(1.5)).numpy(), atol=1e-5)


def test_bad_paths_raise_config_error_naming_the_path(tmp_path):
    # no such folder; a folder without a model; a hub id that is not cached (offline: no download is tried)
    for path in (str(tmp_path / "missing"), str(tmp_path), "rlpt-tests/no-such-model"):
        for cls in (CLIPSimilarityReward, VLMYesNoReward):
            with pytest.raises(ConfigError, match=f"cannot load the model from '{path}'"):
                cls(path, device="cpu")


# ---------------------------------------------------------------- generative VLM yes/no
def test_vlm_yes_no_probabilities(vlm, llava_path, images):
    assert vlm.yes_ids == [5, 7] and vlm.no_ids == [6, 8]  # "Yes", "yes" / "No", "no"; never <unk>
    assert vlm.use_chat_template
    assert vlm.prompt(INSTRUCTION) == ("USER: <image> Has the robot successfully completed the task: pick the cube? "
                                       "Answer yes or no. ASSISTANT:")
    query = RewardQuery(images=images, instruction=INSTRUCTION)
    p_yes, p_no = vlm.yes_no_probs(query)
    np.testing.assert_allclose(p_yes + p_no, 1.0, atol=1e-5)
    vlm.batch_size = 4
    out = vlm(query)
    _check_common(vlm, images, out, 0.0, 1.0)
    np.testing.assert_allclose(out.prob, p_yes, atol=1e-6)
    np.testing.assert_array_equal(out.reward, out.prob)
    np.testing.assert_array_equal(out.success, out.prob > p_no)
    # by hand: full next-token logits of the model, restricted to the 4 answer tokens
    with torch.no_grad():
        inputs = vlm.processor(images=list(images[:2]), text=[vlm.prompt(INSTRUCTION)] * 2, return_tensors="pt")
        logits = vlm.model(**inputs).logits[:, -1]
    expected = torch.softmax(logits[:, [5, 7, 6, 8]], -1)[:, :2].sum(-1).numpy()
    np.testing.assert_allclose(out.prob[:2], expected, atol=1e-5)
    # the plain prompt (no chat template) and a threshold / binary reward
    plain = VLMYesNoReward(llava_path, device="cpu", use_chat_template=False, threshold=0.3, binary=True,
                           question="Has the robot completed the task: {instruction}?")
    assert plain.prompt(INSTRUCTION) == "<image>\nHas the robot completed the task: pick the cube?"
    out = plain(query)
    np.testing.assert_array_equal(out.success, out.prob > 0.3)
    np.testing.assert_array_equal(out.reward, out.success.astype(np.float32))


def test_vlm_without_answer_tokens_is_a_config_error(llava_path):
    with pytest.raises(ConfigError, match="no single tokens"):
        VLMYesNoReward(llava_path, device="cpu", yes_words=("Affirmative",))


# ---------------------------------------------------------------- offline relabelling
def test_relabel_with_clip(clip_path, images):
    n = len(images)
    terminals = np.zeros(n, bool)
    terminals[2] = terminals[-1] = True
    data = Dataset(np.zeros((n, 3), np.float32), np.zeros((n, 2), np.float32), np.zeros(n, np.float32), terminals,
                   np.zeros(n, bool), images=images)
    reward = CLIPSimilarityReward(clip_path, device="cpu", negatives=["an empty table"], threshold=0.5)
    out = relabel(data, reward, instruction=INSTRUCTION, offset=-1.0)
    expected = reward(RewardQuery(images=images, instruction=INSTRUCTION))
    assert out.rewards.shape == (n,) and out.rewards.dtype == np.float32
    np.testing.assert_allclose(out.rewards, expected.prob - 1.0, atol=1e-6)
    np.testing.assert_array_equal(out.infos["reward_model_success"], expected.success)
    np.testing.assert_array_equal(out.infos["reward_original"], np.zeros(n, np.float32))
    assert out.metadata["relabel"]["type"] == "CLIPSimilarityReward"
    assert out.metadata["relabel"]["reward_model/fallbacks"] == 0.0
