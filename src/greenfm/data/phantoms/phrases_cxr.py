"""The chest-radiograph phrase book used by ``reports`` (plain data)."""

from __future__ import annotations

from greenfm.data.phantoms.reports import ReportStyle

CXR_STYLE = ReportStyle(
    titles=("Chest radiograph, PA view", "CHEST (PA)", "Chest X-ray, frontal view", "Chest, PA and lateral",
            "Radiograph of the chest"),
    portable_titles=("Portable AP chest radiograph", "CHEST (PORTABLE AP)", "Bedside chest radiograph, AP view"),
    sections=(
        ("Heart and mediastinum", ("cardiomegaly",)),
        ("Lungs", ("consolidation", "lung_nodule")),
        ("Pleura", ("pleural_effusion", "pneumothorax")),
    ),
    phrases={
        "cardiomegaly": {
            "present": ("The heart is {grade}ly enlarged.", "{Grade} cardiomegaly.",
                        "The cardiac silhouette is {grade}ly enlarged.", "There is {grade} cardiomegaly.",
                        "Enlarged cardiac silhouette ({grade})."),
            "stable": ("Stable cardiomegaly.", "Cardiomegaly is unchanged.", "The heart remains {grade}ly enlarged."),
            "new": ("The cardiac silhouette is now {grade}ly enlarged.",),
            "uncertain": ("Heart size is at the upper limits of normal.", "Borderline cardiomegaly.",
                          "The heart size is borderline.", "Possible mild cardiomegaly."),
            "uncertain_projection": ("Cardiac size cannot be accurately assessed on this AP projection.",
                                     "The heart appears enlarged, although this may be exaggerated by the AP "
                                     "technique.",
                                     "Heart size is difficult to evaluate on this portable film."),
            "absent": ("Heart size is normal.", "The cardiac silhouette is within normal limits.", "Normal heart size.",
                       "The cardiomediastinal silhouette is normal.", "Cardiomediastinal contours are unremarkable.",
                       "The heart is not enlarged."),
            "resolved": ("Heart size is now within normal limits.",),
            "impression": ("{Grade} cardiomegaly.", "Cardiomegaly."),
            "impression_uncertain": ("Borderline heart size.", "Possible cardiomegaly.",
                                     "Cardiomegaly cannot be excluded."),
        },
        "pleural_effusion": {
            "present": ("{Grade} {side} pleural effusion{s}.", "There is a {grade} {side} pleural effusion{s}.",
                        "{Grade} {side} pleural effusion{s} with adjacent basal atelectasis.",
                        "Blunting of the {side} costophrenic angle{s}, consistent with {grade} effusion{s}.",
                        "Meniscus-shaped opacity at the {side} base{s} in keeping with {grade} pleural effusion{s}."),
            "new": ("New {grade} {side} pleural effusion{s}.", "Interval development of {grade} {side} effusion{s}."),
            "stable": ("Unchanged {grade} {side} pleural effusion{s}.", "Stable {side} pleural effusion{s}."),
            "increased": ("Increased {side} pleural effusion{s}, now {grade}.",
                          "Enlarging {side} pleural effusion{s}."),
            "decreased": ("Decreased {side} pleural effusion{s}, now {grade}.", "Smaller {side} pleural effusion{s}."),
            "resolved": ("Previously seen {side} pleural effusion{s} has resolved.",
                         "Interval resolution of the {side} pleural effusion{s}."),
            "uncertain": ("Blunting of the {side} costophrenic angle{s} may represent a small effusion or pleural "
                          "thickening.", "Possible small {side} pleural effusion{s}.",
                          "Questionable trace {side} pleural effusion{s}.",
                          "Minimal {side} basal opacity, possibly a trace effusion."),
            "absent": ("No pleural effusion.", "No effusion.", "Costophrenic angles are sharp.",
                       "There is no pleural effusion."),
            "impression": ("{Grade} {side} pleural effusion{s}.", "{Side} pleural effusion{s}."),
            "impression_uncertain": ("Possible small {side} pleural effusion{s}.",
                                     "Trace {side} effusion{s} versus pleural thickening."),
        },
        "pneumothorax": {
            "present": ("{Grade} {side} apical pneumothorax.",
                        "There is a {grade} {side} pneumothorax, measuring approximately {cm} cm at the apex.",
                        "{Side} pneumothorax with a visible visceral pleural line, {grade} in size.",
                        "{Grade} {side} pneumothorax."),
            "new": ("New {grade} {side} pneumothorax.",),
            "stable": ("Unchanged {grade} {side} pneumothorax.", "Persistent {side} pneumothorax."),
            "increased": ("Increased {side} pneumothorax, now {cm} cm at the apex.",),
            "decreased": ("Decreased {side} pneumothorax, now {cm} cm at the apex.", "Smaller {side} pneumothorax."),
            "resolved": ("The {side} pneumothorax has resolved.", "No residual {side} pneumothorax."),
            "uncertain": ("Questionable thin lucency at the {side} apex; a small pneumothorax cannot be excluded.",
                          "Possible tiny {side} apical pneumothorax versus skin fold.",
                          "Equivocal {side} apical pleural line, possibly a small pneumothorax."),
            "absent": ("No pneumothorax.", "There is no pneumothorax."),
            "impression": ("{Grade} {side} pneumothorax.", "{Side} pneumothorax; findings discussed with the "
                           "referring team."),
            "impression_uncertain": ("Possible small {side} pneumothorax; consider expiratory or repeat imaging.",),
        },
        "consolidation": {
            "present": ("{Grade} consolidation in the {side} {zone} zone.",
                        "Focal airspace opacity in the {side} {zone} zone, concerning for pneumonia.",
                        "{Side} {zone} zone airspace consolidation with {detail}.",
                        "There is {grade} airspace consolidation in the {side} {zone} zone.",
                        "Consolidation at the {side} {zone} zone with {detail}."),
            "new": ("New {side} {zone} zone consolidation.", "Interval development of {grade} {side} {zone} zone "
                    "airspace opacity."),
            "resolved": ("Previously seen {side} {zone} zone consolidation has cleared.",
                         "Interval resolution of the {side} {zone} zone opacity."),
            "uncertain": ("Subtle opacity in the {side} {zone} zone may reflect atelectasis or early consolidation.",
                          "Ill-defined hazy opacity in the {side} {zone} zone, possibly infection.",
                          "Possible developing consolidation in the {side} {zone} zone.",
                          "Questionable airspace opacity at the {side} {zone} zone."),
            "absent": ("No focal consolidation.", "No focal airspace opacity.", "No consolidation.",
                       "There is no focal airspace disease."),
            "impression": ("{Side} {zone} zone consolidation, likely pneumonia.", "{Grade} {side} {zone} zone "
                           "consolidation."),
            "impression_uncertain": ("Possible early {side} {zone} zone consolidation; clinical correlation advised.",
                                     "Subtle {side} {zone} zone opacity, atelectasis or infection."),
        },
        "lung_nodule": {
            "present": ("{size} mm nodule in the {side} {zone} zone.", "A {size} mm rounded opacity projects over the "
                        "{side} {zone} zone, likely a pulmonary nodule.", "Well-defined {size} mm nodule in the {side} "
                        "{zone} zone; CT is recommended for further characterisation.",
                        "There is a {size} mm {grade} nodular opacity in the {side} {zone} zone."),
            "new": ("New {size} mm nodule in the {side} {zone} zone.",),
            "stable": ("Stable {size} mm {side} {zone} zone nodule.", "The {side} {zone} zone nodule is unchanged "
                       "at {size} mm."),
            "increased": ("The {side} {zone} zone nodule has grown, now {size} mm.",),
            "uncertain": ("Possible small nodule in the {side} {zone} zone.",
                          "Questionable nodular opacity in the {side} {zone} zone, which may represent overlapping "
                          "vessels.", "Faint nodular density in the {side} {zone} zone of uncertain significance."),
            "uncertain_mimic": ("Vague nodular density at the {side} lower zone, possibly a nipple shadow; repeat with "
                                "nipple markers suggested.", "Possible small nodule in the {side} {zone} zone versus "
                                "overlapping rib ends.", "Questionable nodular opacity in the {side} {zone} zone."),
            "absent": ("No suspicious pulmonary nodule.", "No discrete nodule or mass."),
            "impression": ("{size} mm {side} {zone} zone pulmonary nodule; recommend CT.", "Pulmonary nodule in the "
                           "{side} {zone} zone."),
            "impression_uncertain": ("Possible small {side} {zone} zone nodule; consider CT.",
                                     "Indeterminate nodular opacity in the {side} {zone} zone."),
        },
    },
    grouped_negations=(
        (("pleural_effusion", "pneumothorax"), ("No pleural effusion or pneumothorax.",
                                                "No pneumothorax or pleural effusion.",
                                                "There is no pleural effusion or pneumothorax.",
                                                "No effusion or pneumothorax is seen.")),
        (("consolidation", "lung_nodule"), ("Lungs are clear.", "The lungs are clear.", "Clear lungs.",
                                            "No focal consolidation or suspicious nodule.")),
    ),
    negation_rate={"cardiomegaly": 0.75, "pleural_effusion": 0.7, "pneumothorax": 0.65, "consolidation": 0.7,
                   "lung_nodule": 0.15},
    normal_impressions=("No acute cardiopulmonary process.", "Normal chest radiograph.",
                        "No acute cardiopulmonary abnormality.", "No radiographic evidence of acute disease.",
                        "No active disease."),
    indications={
        "default": ("Cough.", "Shortness of breath.", "Chest pain.", "Pre-operative assessment.", "Routine check.",
                    "Follow-up.", "Dyspnoea.", "Fever.", "Trauma, rule out injury."),
        "consolidation": ("Fever and productive cough, evaluate for pneumonia.", "Cough and raised inflammatory "
                          "markers."),
        "pleural_effusion": ("Breathlessness, known heart failure.", "Reduced breath sounds at the base."),
        "cardiomegaly": ("Known heart failure, increasing dyspnoea.", "Ankle swelling and breathlessness."),
        "pneumothorax": ("Sudden pleuritic chest pain.", "Acute dyspnoea after line insertion."),
        "lung_nodule": ("Follow-up of pulmonary nodule.", "Smoker, weight loss."),
    },
    incidental=("Degenerative changes of the thoracic spine.", "No acute osseous abnormality.",
                "Visualised osseous structures are unremarkable.", "Old healed fracture of a left lateral rib.",
                "Mild thoracic scoliosis.", "Surgical clips in the right upper quadrant.",
                "Calcification of the aortic knob.", "Mildly unfolded thoracic aorta.",
                "Soft tissues are unremarkable."),
    device=("Right internal jugular central venous catheter with its tip in the lower SVC. ECG leads overlie the "
            "chest.",
            "Right-sided central line terminates at the cavoatrial junction; monitoring leads project over the chest.",
            "Lines and tubes: right jugular catheter, tip in the SVC. External ECG leads."),
    technique=("Single frontal view.", "PA and lateral views.", "Erect PA projection."),
    portable_technique=("Single portable AP view.", "Semi-erect AP projection at the bedside."),
)
