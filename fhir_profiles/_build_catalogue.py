"""Build recognition/catalogue-2024.json: the 2024 edition of the catalogue of
mutually recognised examination and test items of the Chengdu-Chongqing region
(112 items: 45 laboratory, 67 imaging), as a FHIR collection Bundle holding the
CodeSystem and a ConceptMap from LOINC and local codes to the items.

The official item-level list is not public. This is a representative list
compiled from the items most commonly recognised under the national 2022
measures (blood count, liver and kidney function, electrolytes, glucose and HbA1c,
lipids, coagulation, hepatitis markers, thyroid function, tumour and
inflammation markers; X-ray, CT, MRI and ultrasound by body region). Validity
windows and reference prices are typical values, not official ones. Another
edition (e.g. the 222-item one) is loaded with `ehr-service catalogue load FILE`
without code changes.

Usage: python fhir_profiles/_build_catalogue.py
"""

from __future__ import annotations

import json
from pathlib import Path

URL = "urn:ehr-service:recognition-item"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
LOCAL_LAB = "urn:ehr-service:local:lab"
LOCAL_IMAGING = "urn:ehr-service:local:imaging"

# code suffix, zh, en, LOINC, validity days, QC category, price (CNY)
LAB = [
    ("WBC", "白细胞计数", "Leukocyte count", "6690-2", 7, "lab-hematology", 5),
    ("RBC", "红细胞计数", "Erythrocyte count", "789-8", 7, "lab-hematology", 5),
    ("HGB", "血红蛋白", "Hemoglobin", "718-7", 7, "lab-hematology", 5),
    ("HCT", "红细胞压积", "Hematocrit", "4544-3", 7, "lab-hematology", 5),
    ("PLT", "血小板计数", "Platelet count", "777-3", 7, "lab-hematology", 5),
    ("ALT", "丙氨酸氨基转移酶", "Alanine aminotransferase", "1742-6", 14, "lab-chemistry", 5),
    ("AST", "天门冬氨酸氨基转移酶", "Aspartate aminotransferase", "1920-8", 14, "lab-chemistry", 5),
    ("TBIL", "总胆红素", "Total bilirubin", "1975-2", 14, "lab-chemistry", 5),
    ("DBIL", "直接胆红素", "Direct bilirubin", "1968-7", 14, "lab-chemistry", 5),
    ("ALB", "白蛋白", "Albumin", "1751-7", 14, "lab-chemistry", 5),
    ("TP", "总蛋白", "Total protein", "2885-2", 14, "lab-chemistry", 5),
    ("ALP", "碱性磷酸酶", "Alkaline phosphatase", "6768-6", 14, "lab-chemistry", 5),
    ("GGT", "γ-谷氨酰转移酶", "Gamma glutamyl transferase", "2324-2", 14, "lab-chemistry", 5),
    ("CREA", "肌酐", "Creatinine", "2160-0", 14, "lab-chemistry", 6),
    ("BUN", "尿素氮", "Urea nitrogen", "3094-0", 14, "lab-chemistry", 6),
    ("UA", "尿酸", "Uric acid", "3084-1", 14, "lab-chemistry", 6),
    ("CYSC", "胱抑素C", "Cystatin C", "33863-2", 14, "lab-chemistry", 30),
    ("K", "钾", "Potassium", "2823-3", 7, "lab-chemistry", 4),
    ("NA", "钠", "Sodium", "2951-2", 7, "lab-chemistry", 4),
    ("CL", "氯", "Chloride", "2075-0", 7, "lab-chemistry", 4),
    ("CA", "钙", "Calcium", "17861-6", 7, "lab-chemistry", 4),
    ("CO2", "二氧化碳结合力", "Carbon dioxide, total", "2028-9", 7, "lab-chemistry", 4),
    ("GLU", "葡萄糖", "Glucose", "2345-7", 30, "lab-chemistry", 4),
    ("HBA1C", "糖化血红蛋白", "Hemoglobin A1c", "4548-4", 60, "lab-chemistry", 60),
    ("TC", "总胆固醇", "Cholesterol, total", "2093-3", 30, "lab-chemistry", 5),
    ("TG", "甘油三酯", "Triglyceride", "2571-8", 30, "lab-chemistry", 5),
    ("HDL", "高密度脂蛋白胆固醇", "HDL cholesterol", "2085-9", 30, "lab-chemistry", 8),
    ("LDL", "低密度脂蛋白胆固醇", "LDL cholesterol", "2089-1", 30, "lab-chemistry", 8),
    ("PT", "凝血酶原时间", "Prothrombin time", "5902-2", 7, "lab-coagulation", 10),
    ("INR", "国际标准化比值", "INR", "6301-6", 7, "lab-coagulation", 10),
    (
        "APTT",
        "活化部分凝血活酶时间",
        "Activated partial thromboplastin time",
        "3173-2",
        7,
        "lab-coagulation",
        10,
    ),
    ("FIB", "纤维蛋白原", "Fibrinogen", "3255-7", 7, "lab-coagulation", 10),
    ("DDIM", "D-二聚体", "D-dimer", "48065-7", 7, "lab-coagulation", 50),
    ("HBSAG", "乙肝表面抗原", "Hepatitis B surface antigen", "5196-1", 180, "lab-immunology", 15),
    ("HBSAB", "乙肝表面抗体", "Hepatitis B surface antibody", "16935-9", 180, "lab-immunology", 15),
    ("HBEAG", "乙肝e抗原", "Hepatitis B e antigen", "13954-3", 180, "lab-immunology", 15),
    ("HBEAB", "乙肝e抗体", "Hepatitis B e antibody", "13953-5", 180, "lab-immunology", 15),
    ("HBCAB", "乙肝核心抗体", "Hepatitis B core antibody", "13952-7", 180, "lab-immunology", 15),
    ("HCVAB", "丙肝抗体", "Hepatitis C antibody", "16128-1", 180, "lab-immunology", 30),
    ("TSH", "促甲状腺激素", "Thyrotropin", "3016-3", 30, "lab-immunology", 25),
    ("FT4", "游离甲状腺素", "Free thyroxine", "3024-7", 30, "lab-immunology", 25),
    ("FT3", "游离三碘甲状腺原氨酸", "Free triiodothyronine", "3051-0", 30, "lab-immunology", 25),
    ("AFP", "甲胎蛋白", "Alpha-1-fetoprotein", "1834-1", 30, "lab-immunology", 30),
    ("CEA", "癌胚抗原", "Carcinoembryonic antigen", "2039-6", 30, "lab-immunology", 30),
    ("CRP", "C反应蛋白", "C-reactive protein", "1988-5", 7, "lab-immunology", 15),
]

# modality, body region key, zh region, en region, SNOMED body structure, days, price
DX = ("DX", 90, 60)
CT = ("CT", 90, 300)
MR = ("MR", 90, 600)
US = ("US", 60, 100)
REGIONS = {
    "CHEST": ("胸部", "chest", "51185008"),
    "CSPINE": ("颈椎", "cervical spine", "122494005"),
    "TSPINE": ("胸椎", "thoracic spine", "122495006"),
    "LSPINE": ("腰椎", "lumbar spine", "122496007"),
    "PELVIS": ("骨盆", "pelvis", "12921003"),
    "SHOULDER": ("肩关节", "shoulder", "16982005"),
    "ELBOW": ("肘关节", "elbow", "16953009"),
    "WRIST": ("腕关节", "wrist", "74670003"),
    "HAND": ("手", "hand", "85562004"),
    "HIP": ("髋关节", "hip", "24136001"),
    "KNEE": ("膝关节", "knee", "72696002"),
    "ANKLE": ("踝关节", "ankle", "70258002"),
    "FOOT": ("足", "foot", "56459004"),
    "SKULL": ("头颅", "skull", "89546000"),
    "SINUS": ("鼻窦", "paranasal sinuses", "2095001"),
    "HEAD": ("头部", "head", "69536005"),
    "BRAIN": ("颅脑", "brain", "12738006"),
    "NECK": ("颈部", "neck", "45048000"),
    "ABDOMEN": ("腹部", "abdomen", "113345001"),
    "UPPERABD": ("上腹部", "upper abdomen", "27947004"),
    "ABDPELVIS": ("全腹部", "abdomen and pelvis", "416949008"),
    "CORONARY": ("冠状动脉", "coronary arteries", "41801008"),
    "HEADVESSELS": ("头颈血管", "head and neck arteries", "69105007"),
    "PULMARTERY": ("肺动脉", "pulmonary artery", "81040000"),
    "URINARY": ("泌尿系", "urinary tract", "122489005"),
    "TEMPORAL": ("颞骨", "temporal bone", "60911003"),
    "ORBIT": ("眼眶", "orbit", "363654007"),
    "PITUITARY": ("垂体", "pituitary", "56329008"),
    "LIVER": ("肝脏", "liver", "10200004"),
    "BILIARY": ("胰胆管", "biliary and pancreatic ducts", "34707002"),
    "FEMPELVIS": ("女性盆腔", "female pelvis", "12921003"),
    "PROSTATE": ("前列腺", "prostate", "41216001"),
    "BREAST": ("乳腺", "breast", "76752008"),
    "HEART": ("心脏", "heart", "80891009"),
    "THYROID": ("甲状腺", "thyroid", "69748006"),
    "CAROTID": ("颈动脉", "carotid arteries", "69105007"),
    "LEGVEINS": ("下肢静脉", "lower limb veins", "40902009"),
    "SCROTUM": ("阴囊", "scrotum", "20233005"),
    "NECKNODES": ("颈部淋巴结", "cervical lymph nodes", "81105003"),
    "KIDNEY": ("肾脏", "kidneys", "64033007"),
}
IMAGING = [
    (DX, ["CHEST", "CSPINE", "TSPINE", "LSPINE", "PELVIS", "SHOULDER", "ELBOW", "WRIST", "HAND",
          "HIP", "KNEE", "ANKLE", "FOOT", "SKULL", "SINUS"]),
    (CT, ["HEAD", "SINUS", "NECK", "CHEST", "ABDOMEN", "UPPERABD", "PELVIS", "ABDPELVIS",
          "CSPINE", "TSPINE", "LSPINE", "CORONARY", "HEADVESSELS", "PULMARTERY", "URINARY",
          "TEMPORAL", "ORBIT", "SHOULDER", "KNEE", "ANKLE", "HIP", "WRIST"]),
    (MR, ["BRAIN", "PITUITARY", "CSPINE", "TSPINE", "LSPINE", "SHOULDER", "KNEE", "HIP", "ANKLE",
          "WRIST", "LIVER", "BILIARY", "FEMPELVIS", "PROSTATE", "BREAST", "HEART", "HEADVESSELS",
          "ORBIT"]),
    (US, ["UPPERABD", "URINARY", "THYROID", "BREAST", "FEMPELVIS", "PROSTATE", "CAROTID", "HEART",
          "LEGVEINS", "SCROTUM", "NECKNODES", "KIDNEY"]),
]  # fmt: skip
MODALITY_ZH = {"DX": "X线摄影", "CT": "CT", "MR": "磁共振", "US": "超声"}
MODALITY_EN = {"DX": "X-ray", "CT": "CT", "MR": "MRI", "US": "Ultrasound"}


def _concept(
    code: str, zh: str, en: str, properties: list[tuple[str, str, object]]
) -> dict[str, object]:
    values = []
    for name, kind, value in properties:
        values.append({"code": name, kind: value})
    return {
        "code": code,
        "display": en,
        "designation": [{"language": "zh-CN", "value": zh}, {"language": "en", "value": en}],
        "property": values,
    }


def build(edition: str = "2024") -> dict[str, object]:
    concepts = []
    lab_map = []
    local_map = []
    for suffix, zh, en, loinc, days, qc, price in LAB:
        code = f"LAB-{suffix}"
        concepts.append(
            _concept(
                code,
                zh,
                en,
                [
                    ("category", "valueCode", "laboratory"),
                    ("loinc", "valueCode", loinc),
                    ("validityDays", "valueInteger", days),
                    ("qcCategory", "valueCode", qc),
                    ("price", "valueDecimal", price),
                ],
            )
        )
        lab_map.append({"code": loinc, "target": [{"code": code, "equivalence": "equivalent"}]})
        local_map.append(
            {"code": f"CQ-{suffix}", "target": [{"code": code, "equivalence": "equivalent"}]}
        )
    imaging_map = []
    for (modality, days, price), regions in IMAGING:
        for region in regions:
            zh_region, en_region, site = REGIONS[region]
            code = f"IMG-{modality}-{region}"
            concepts.append(
                _concept(
                    code,
                    f"{zh_region}{MODALITY_ZH[modality]}",
                    f"{MODALITY_EN[modality]} {en_region}",
                    [
                        ("category", "valueCode", "imaging"),
                        ("modality", "valueCode", modality),
                        ("bodySite", "valueCode", site),
                        ("validityDays", "valueInteger", days),
                        ("qcCategory", "valueCode", f"imaging-{modality}"),
                        ("price", "valueDecimal", price),
                    ],
                )
            )
            imaging_map.append(
                {"code": f"{modality}-{region}",
                 "target": [{"code": code, "equivalence": "equivalent"}]}
            )  # fmt: skip
    lab = sum(1 for c in concepts if c["code"].startswith("LAB-"))  # type: ignore[union-attr]
    codesystem = {
        "resourceType": "CodeSystem",
        "id": f"recognition-items-{edition}",
        "url": URL,
        "version": edition,
        "name": "RecognitionItems",
        "title": f"川渝检查检验结果互认项目 ({edition})",
        "status": "active",
        "experimental": False,
        "publisher": "ehr-service",
        "description": (
            f"Mutually recognised examination and test items, edition {edition}: "
            f"{len(concepts)} items ({lab} laboratory, {len(concepts) - lab} imaging). "
            "The official item-level list is not public: this is a representative list "
            "compiled from commonly recognised items (blood count, liver and kidney function, "
            "electrolytes, glucose and HbA1c, lipids, coagulation, hepatitis markers, thyroid "
            "function, tumour and inflammation markers; X-ray, CT, MRI and ultrasound by body "
            "region). Validity windows and reference prices are typical values."
        ),
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "property": [
            {"code": "category", "type": "code", "description": "laboratory | imaging"},
            {"code": "loinc", "type": "code", "description": "LOINC code (laboratory items)"},
            {"code": "modality", "type": "code", "description": "DICOM modality (imaging)"},
            {"code": "bodySite", "type": "code", "description": "SNOMED CT body structure"},
            {"code": "validityDays", "type": "integer",
             "description": "days after the result during which it is recognised"},
            {"code": "qcCategory", "type": "code",
             "description": "quality-control category the institution must have passed"},
            {"code": "price", "type": "decimal", "description": "reference price, CNY"},
        ],
        "concept": concepts,
    }  # fmt: skip
    conceptmap = {
        "resourceType": "ConceptMap",
        "id": f"recognition-items-map-{edition}",
        "url": "urn:ehr-service:recognition-item-map",
        "version": edition,
        "name": "RecognitionItemMap",
        "status": "active",
        "targetUri": URL,
        "group": [
            {"source": LOINC, "target": URL, "element": lab_map},
            {"source": LOCAL_LAB, "target": URL, "element": local_map},
            {"source": LOCAL_IMAGING, "target": URL, "element": imaging_map},
        ],
    }
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": codesystem}, {"resource": conceptmap}],
    }


def main() -> None:
    bundle = build()
    target = Path(__file__).with_name("recognition") / "catalogue-2024.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(bundle, ensure_ascii=False, indent=1) + "\n")
    concepts = bundle["entry"][0]["resource"]["concept"]  # type: ignore[index]
    print(f"{target.name}: {len(concepts)} items")


if __name__ == "__main__":
    main()
