"""The chest-CT phrase book used by ``reports`` (plain data)."""

from __future__ import annotations

from greenfm.data.phantoms.reports import ReportStyle

CT_STYLE = ReportStyle(
    titles=("CT chest without contrast", "CT THORAX NON-CONTRAST", "Non-contrast CT of the chest",
            "CT chest, low dose"),
    portable_titles=("CT chest without contrast",),
    sections=(
        ("Lungs and airways", ("lung_nodule", "consolidation", "emphysema")),
        ("Pleura", ("pleural_effusion",)),
        ("Heart and mediastinum", ("cardiomegaly", "pericardial_effusion")),
    ),
    phrases={
        "lung_nodule": {
            "present": ("{size} mm {grade} nodule in the {lobe}.", "There is a {size} mm {grade} pulmonary nodule in "
                        "the {lobe}.", "{Grade} nodule in the {lobe} measuring {size} mm.",
                        "A {size} mm {grade} nodule is present in the {lobe}; follow-up CT is recommended."),
            "new": ("New {size} mm {grade} nodule in the {lobe}.",),
            "stable": ("Stable {size} mm nodule in the {lobe}.", "The {lobe} nodule is unchanged at {size} mm."),
            "increased": ("The {lobe} nodule has grown to {size} mm.",),
            "uncertain": ("Tiny {size} mm opacity in the {lobe}, possibly a vessel or a small nodule.",
                          "Possible {size} mm nodule in the {lobe}.", "Indeterminate {size} mm focus in the {lobe}."),
            "uncertain_mimic": ("Tiny {size} mm subpleural opacity in the {lobe}, likely an intrapulmonary lymph node "
                                "but a nodule cannot be excluded.", "Possible {size} mm nodule in the {lobe}."),
            "absent": ("No suspicious pulmonary nodules.", "No pulmonary nodules.", "No nodule or mass."),
            "impression": ("{size} mm {grade} nodule in the {lobe}; follow-up as per guidelines.",
                           "Pulmonary nodule in the {lobe} ({size} mm)."),
            "impression_uncertain": ("Indeterminate tiny {lobe} opacity.", "Possible small {lobe} nodule."),
        },
        "consolidation": {
            "present": ("{Grade} consolidation in the {lobe} with {detail}.", "Consolidation in the {lobe}.",
                        "Airspace consolidation involving the {lobe}, consistent with pneumonia.",
                        "There is {grade} consolidation of the {lobe}."),
            "new": ("New consolidation in the {lobe}.",),
            "resolved": ("Previously seen consolidation in the {lobe} has resolved.",),
            "uncertain": ("Subtle ground-glass opacity in the {lobe}, possibly early infection or atelectasis.",
                          "Ill-defined opacity in the {lobe}, possibly infective.",
                          "Possible early consolidation in the {lobe}."),
            "absent": ("No consolidation.", "No focal consolidation.", "No airspace disease."),
            "impression": ("{Lobe} consolidation, likely pneumonia.", "Consolidation in the {lobe}."),
            "impression_uncertain": ("Possible early infection in the {lobe}.",),
        },
        "emphysema": {
            "present": ("{Grade} centrilobular emphysema, upper lobe predominant.",
                        "{Grade} emphysematous changes, most marked in the upper lobes.",
                        "There is {grade} centrilobular and paraseptal emphysema."),
            "stable": ("Stable {grade} emphysema.",),
            "uncertain": ("Subtle areas of low attenuation may represent minimal emphysema.",
                          "Possible mild emphysema in the upper lobes."),
            "absent": ("No emphysema.", "No emphysematous change."),
            "impression": ("{Grade} emphysema.", "Centrilobular emphysema."),
            "impression_uncertain": ("Possible minimal emphysema.",),
        },
        "pleural_effusion": {
            "present": ("{Grade} {side} pleural effusion{s}.", "There is a {grade} {side} pleural effusion{s} with "
                        "adjacent compressive atelectasis.", "{Grade} dependent {side} pleural effusion{s}."),
            "new": ("New {grade} {side} pleural effusion{s}.",),
            "increased": ("Increased {side} pleural effusion{s}, now {grade}.",),
            "decreased": ("Decreased {side} pleural effusion{s}.",),
            "resolved": ("Interval resolution of the {side} pleural effusion{s}.",),
            "uncertain": ("Trace {side} pleural fluid versus pleural thickening.",
                          "Possible trace {side} pleural effusion{s}."),
            "absent": ("No pleural effusion.", "No pleural effusion or thickening.", "Pleural spaces are clear."),
            "impression": ("{Grade} {side} pleural effusion{s}.",),
            "impression_uncertain": ("Possible trace {side} pleural effusion{s}.",),
        },
        "cardiomegaly": {
            "present": ("The heart is {grade}ly enlarged.", "{Grade} cardiomegaly.", "Cardiomegaly."),
            "stable": ("Stable cardiomegaly.",),
            "uncertain": ("Heart size is at the upper limit of normal.", "Borderline cardiomegaly."),
            "absent": ("Heart size is normal.", "Normal heart size.", "The heart is not enlarged."),
            "impression": ("{Grade} cardiomegaly.", "Cardiomegaly."),
            "impression_uncertain": ("Borderline heart size.",),
        },
        "pericardial_effusion": {
            "present": ("{Grade} pericardial effusion.", "There is a {grade} pericardial effusion measuring up to "
                        "{size} mm.", "{Grade} circumferential pericardial effusion."),
            "new": ("New {grade} pericardial effusion.",),
            "resolved": ("The pericardial effusion has resolved.",),
            "uncertain": ("Possible small pericardial effusion.", "Minimal pericardial fluid or thickening."),
            "absent": ("No pericardial effusion.", "No pericardial effusion or thickening."),
            "impression": ("{Grade} pericardial effusion.",),
            "impression_uncertain": ("Possible small pericardial effusion.",),
        },
    },
    grouped_negations=(
        (("cardiomegaly", "pericardial_effusion"), ("Heart size is normal without pericardial effusion.",
                                                    "Normal heart size. No pericardial effusion.",
                                                    "The heart is normal in size and there is no pericardial "
                                                    "effusion.")),
        (("lung_nodule", "consolidation"), ("No consolidation or suspicious nodule.",
                                            "The lungs are clear without nodules or consolidation.")),
    ),
    negation_rate={"lung_nodule": 0.6, "consolidation": 0.6, "emphysema": 0.4, "pleural_effusion": 0.75,
                   "cardiomegaly": 0.6, "pericardial_effusion": 0.6},
    normal_impressions=("No acute intrathoracic abnormality.", "Normal CT of the chest.",
                        "No significant abnormality.", "No acute cardiopulmonary findings."),
    indications={
        "default": ("Chronic cough.", "Dyspnoea.", "Staging.", "Follow-up.", "Chest pain.", "Weight loss."),
        "lung_nodule": ("Follow-up of pulmonary nodule.", "Lung cancer screening, current smoker."),
        "emphysema": ("Smoker with progressive dyspnoea.", "COPD exacerbation."),
        "consolidation": ("Fever and cough not resolving on antibiotics.",),
        "pleural_effusion": ("Effusion on chest radiograph.",),
        "pericardial_effusion": ("Enlarged cardiac silhouette on radiograph.",),
    },
    incidental=("Coronary artery calcification.", "Atherosclerotic calcification of the thoracic aorta.",
                "Small hiatal hernia.", "Degenerative changes of the thoracic spine.",
                "No mediastinal or hilar lymphadenopathy.", "The visualised upper abdomen is unremarkable.",
                "Thyroid is unremarkable.", "No aggressive osseous lesion."),
    technique=("Axial images acquired at 3 mm slice thickness without intravenous contrast.",
               "Helical acquisition, 3 mm reconstructions, soft tissue and lung kernels.",
               "Low-dose technique."),
)
