"""The model card's tower sections: every tower of the export and, for image-text models, zero-shot scores.

``greenfm.report.card.model_card`` writes the card of the image tower (details, data,
contract, evaluation, compute, limitations, plain-timm loading, file hashes); this module
adds, before its "How to load" section, a table of every tower (image; text: source,
pool, max length, tokenizer lowercasing; heads) and, where there is a text tower, how
to compute latents and zero-shot scores with greenfm and with transformers alone.
"""

from __future__ import annotations

import json
from typing import Any

from greenfm.export.loader import HEADS, POOL_RECIPES, REFERENCE_LATENTS_NPY, ExportedModel

TEXT_POOL_RECIPES = {  # the code of greenfm.models.text.pool_hidden for each pool, on a right-padded batch
    "cls": 'hidden[:, 0]',
    "mean": '(hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)',
    "last-token": 'hidden[torch.arange(len(hidden)), mask.sum(1) - 1]',
}
TEXT_POOL_WORDS = {
    "cls": "the first token's state ([CLS])",
    "mean": "the mean of the non-padding tokens' states",
    "last-token": "the last non-padding token's state (the [SEP] of a BERT text)",
}


def with_tower_sections(card: str, exported: ExportedModel) -> str:
    """``card`` with the towers section (and, for an image-text model, zero-shot scores) inserted."""
    sections = [towers_section(exported)]
    if exported.text is not None:
        sections.append(zeroshot_section(exported))
    anchor = card.find("\n## How to load")
    if anchor < 0:
        return card.rstrip() + "\n\n" + "\n\n".join(sections) + "\n"
    return card[:anchor].rstrip() + "\n\n" + "\n\n".join(sections) + "\n\n" + card[anchor:].lstrip("\n")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def towers_section(exported: ExportedModel) -> str:
    config = exported.config
    spec = config.get("model") or {}
    n_image = config.get("n_parameters")
    rows = [[
        "image", "`model.safetensors`, `config.json`",
        f"timm `{spec.get('name')}`" + (f", {n_image:,} parameters" if isinstance(n_image, int) else ""),
        f"{config.get('embed_dim')} values, pooling `{exported.pooling}`",
    ]]  # fmt: skip
    towers = config.get("towers") or {}
    text_entry = towers.get("text")
    if exported.text is not None and text_entry:
        text = exported.text
        n_text = text_entry.get("n_parameters")
        rows.append([
            "text", f"`{text_entry['path']}/` (transformers weights, tokenizer, `greenfm_text.json`)",
            f"transformers `{type(text.model).__name__}` from `{text.source}`"
            + (f", {n_text:,} parameters" if isinstance(n_text, int) else ""),
            f"{text.embed_dim} values, pool `{text.pool}`, at most {text.max_length} tokens per text, "
            f"tokenizer lower-cases: {'yes' if text.lowercase else 'no'}",
        ])  # fmt: skip
    heads = config.get("heads") or {}
    if heads:
        rows.append(["heads", f"`{HEADS}`", ", ".join(f"`{k}` {v}" for k, v in heads.items()),
                     "projections into the shared image-text space and the temperature"])  # fmt: skip
    text = "## Towers\n\nEvery file below is listed with its sha256 in `metadata.json`.\n\n"
    text += _table(["Tower", "Files", "Model", "Output"], rows)
    if exported.text is not None:
        t = exported.text
        text += (
            f"\n\nThe text tower embeds a text as {TEXT_POOL_WORDS[t.pool]} after its last layer. Texts longer "
            f"than {t.max_length} tokens (special tokens included) are cut; the tokenizer "
            + ("lower-cases every text first." if t.lowercase else "keeps the case of the text.")
        )
    return text


def zeroshot_section(exported: ExportedModel) -> str:
    model = exported.image_text
    text = exported.text
    pool = model.pool or exported.encoder.resolve_pool(None)
    image_pool = POOL_RECIPES[pool].replace("model.", "image_model.")
    folder = ((exported.config.get("towers") or {}).get("text") or {}).get("path", "text")
    normalize = model.normalize
    how = ", each L2-normalised" if normalize else " (not normalised: this recipe trained on raw latents)"
    settings = {"image_pool": pool, "text_pool": text.pool, "max_length": text.max_length, "normalize": normalize}
    norm = "F.normalize({}, dim=-1)" if normalize else "{}"
    scale = f"{model.logit_scale:.4g}" if model.logit_scale is not None else "not recorded"
    proj = {side: f"{side}_projection" in exported.heads for side in ("image", "text")}

    def project(side: str, expr: str) -> str:
        return norm.format(f'{expr} @ heads["{side}_projection"].T' if proj[side] else expr)

    return f"""## Zero-shot scores

The image and a text land in one shared space: the image embedding times `image_projection`,
the text embedding times `text_projection`{how}.
For a finding with a positive prompt ("There is pleural effusion.") and a negative one
("There is no pleural effusion."), greenfm's zero-shot probability is the softmax over the
image's two similarities, `p = sigmoid(image @ positive - image @ negative)`. Training scaled
the similarities by the learned inverse temperature (`exp(logit_scale)` = {scale}); scaling
sharpens the probabilities without changing their ranking (AUROC). `{REFERENCE_LATENTS_NPY}`
holds the latents of the fixture image and of the sentence "{exported.reference_text}".

With greenfm (checks the files, the contract and the reference latents first):

```python
import torch
from greenfm.export import load_exported

exported = load_exported("MODEL_DIR")
model = exported.image_text
image = model.encode_images(exported.preprocess_file("image.png"))             # (1, D)
prompts = model.encode_texts(["There is pleural effusion.", "There is no pleural effusion."])
p = torch.sigmoid(image @ (prompts[0] - prompts[1]))
```

With timm, transformers and safetensors only:

```python
import json, timm, torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

cfg = json.load(open("config.json"))
image_model = timm.create_model(cfg["model"]["name"], pretrained=False, **cfg["model"]["kwargs"]).eval()
image_model.load_state_dict(load_file("model.safetensors"))
text_model = AutoModel.from_pretrained("{folder}").eval()
tokenizer = AutoTokenizer.from_pretrained("{folder}")
heads = load_file("{HEADS}")

def encode_texts(texts):
    tokens = tokenizer(texts, padding=True, truncation=True, max_length={text.max_length}, return_tensors="pt")
    mask = tokens["attention_mask"]
    hidden = text_model(input_ids=tokens["input_ids"], attention_mask=mask).last_hidden_state
    return {project("text", TEXT_POOL_RECIPES[text.pool])}

with torch.no_grad():   # x: (1, C, H, W) prepared per contract.json
    image = {project("image", image_pool)}
    positive, negative = encode_texts(["There is pleural effusion.", "There is no pleural effusion."])
    p = torch.sigmoid(image @ (positive - negative))
```

Settings: `{json.dumps(settings)}`."""
