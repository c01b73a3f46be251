"""Reports to structured labels.

- ``findings``: finding vocabularies (YAML; chexpert14, nih14, ct-rate-18, merlin-30, phantom-cxr5)
- ``rules``: the offline rule labeler (default); ``llm``: OpenAI-compatible LLM labeler
- ``policies``: uncertain / missing label policies and the masked BCE
- ``templates``: template reports for label-only data
- ``agreement``: per-finding precision / recall / F1 against reference labels
- ``label_verb``: ``label_manifest``, the function behind ``greenfm label``, and
  ``evaluate_against_manifest`` (label a manifest's reports, score them against its labels)

Everything here is importable without torch; torch loads only where a tensor is needed.
"""

from greenfm.labeling.agreement import (
    compare_labels,
    micro_average,
)
from greenfm.labeling.findings import (
    Finding,
    Vocabulary,
    builtin_vocabularies,
    load_vocabulary,
)
from greenfm.labeling.label_verb import LabelRunSummary, evaluate_against_manifest, label_manifest, make_labeler
from greenfm.labeling.llm import LLMConfig, LLMLabeler, resolve_llm_config
from greenfm.labeling.policies import (
    LabelPolicy,
    apply_policy,
    label_policy,
    masked_bce_with_logits,
)
from greenfm.labeling.results import Evidence, LabelTable
from greenfm.labeling.rules import ReportLabels, RuleLabeler
from greenfm.labeling.templates import (
    load_template_bank,
    render_report,
    synthesize_reports,
)

__all__ = [
    "Evidence", "Finding", "LLMConfig", "LLMLabeler", "LabelPolicy", "LabelRunSummary", "LabelTable",
    "ReportLabels", "RuleLabeler", "Vocabulary", "apply_policy", "builtin_vocabularies", "compare_labels",
    "evaluate_against_manifest", "label_manifest", "label_policy", "load_template_bank", "load_vocabulary",
    "make_labeler", "masked_bce_with_logits", "micro_average", "render_report", "resolve_llm_config",
    "synthesize_reports",
]
