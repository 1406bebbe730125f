//! Model cards refuse what would make a decoder silently wrong or panic: a `[kinds]` table naming
//! labels the model lacks, a missing `[kinds]` table, unknown kinds, an SSD anchor scheme that does
//! not give the stated number of anchors, NanoDet strides without matching outputs. And the
//! shipped cards map their person labels to the person kind.

use gridwatch::infer::card::ModelCard;
use gridwatch::infer::kinds::ObjectKind;

use crate::support::{TempDir, repo};

/// Copies a card with its model and labels into a temp folder, edits the card text, loads it.
fn load_edited(card: &str, edit: impl Fn(&str) -> String) -> Result<ModelCard, String> {
    let dir = TempDir::new("card-edit");
    let src = repo(card);
    let folder = src.parent().unwrap();
    for entry in std::fs::read_dir(folder).unwrap() {
        let p = entry.unwrap().path();
        let keep = matches!(p.extension().and_then(|e| e.to_str()), Some("onnx" | "txt"));
        if keep {
            std::fs::copy(&p, dir.path(p.file_name().unwrap().to_str().unwrap())).unwrap();
        }
    }
    let text = edit(&std::fs::read_to_string(&src).unwrap());
    std::fs::write(dir.path("card.toml"), text).unwrap();
    ModelCard::load(&dir.path("card.toml")).map_err(|e| e.to_string())
}

const YOLO: &str = "tests/data/models/yolov8-test.toml";
const SSD: &str = "models/ssd-mobilenetv2-oidv4-300.toml";

#[test]
fn the_shipped_cards_map_their_person_labels_to_the_person_kind() {
    for (card, label) in [
        ("models/nanodet-g-416-coco.toml", "person"),
        (SSD, "Person"),
    ] {
        let card = ModelCard::load(&repo(card)).unwrap();
        let labels = card.load_labels().unwrap();
        let i = labels.iter().position(|l| &**l == label).unwrap();
        assert_eq!(card.class_kinds[i], ObjectKind::Person);
        assert_eq!(card.class_kinds.len(), labels.len());
    }
    let coco = ModelCard::load(&repo("models/nanodet-g-416-coco.toml")).unwrap();
    let labels = coco.load_labels().unwrap();
    let kind = |l: &str| coco.class_kinds[labels.iter().position(|x| &**x == l).unwrap()];
    assert_eq!(kind("dining table"), ObjectKind::Table);
    assert_eq!(kind("motorcycle"), ObjectKind::Motorcycle);
    assert_eq!(kind("potted plant"), ObjectKind::PottedPlant);
    assert_eq!(kind("kite"), ObjectKind::Other);
}

#[test]
fn a_kinds_table_naming_unknown_labels_is_refused() {
    let err = load_edited(YOLO, |t| {
        t.replace("\"pedestrian\" = ", "\"pedestrain\" = ")
    })
    .unwrap_err();
    assert!(err.contains("pedestrain"), "{err}");
}

#[test]
fn a_card_without_kinds_or_with_an_unknown_kind_is_refused() {
    let err = load_edited(YOLO, |t| t[..t.find("[kinds]").unwrap()].to_owned()).unwrap_err();
    assert!(err.contains("kinds"), "{err}");
    let err = load_edited(YOLO, |t| t.replace("= \"person\"", "= \"people\"")).unwrap_err();
    assert!(err.contains("people"), "{err}");
}

#[test]
fn an_anchor_scheme_that_does_not_give_num_anchors_is_refused() {
    let err = load_edited(SSD, |t| {
        t.replace("num_anchors = 1917", "num_anchors = 1900")
    })
    .unwrap_err();
    assert!(err.contains("1917") && err.contains("1900"), "{err}");
    let err = load_edited(SSD, |t| {
        t.replace(
            "reduce_boxes_in_lowest_layer = true",
            "reduce_boxes_in_lowest_layer = false",
        )
    })
    .unwrap_err();
    assert!(err.contains("anchors"), "{err}");
}

#[test]
fn nanodet_strides_without_matching_outputs_are_refused() {
    let err = load_edited("models/nanodet-g-416-coco.toml", |t| {
        t.replace("strides = [8, 16, 32]", "strides = [8, 16, 32, 64]")
    })
    .unwrap_err();
    assert!(err.contains("4 strides"), "{err}");
}

#[test]
fn a_features_table_with_a_stride_that_does_not_divide_the_input_is_refused() {
    let err = load_edited("models/nanodet-g-416-coco.toml", |t| {
        t.replace("stride_pixels = 16", "stride_pixels = 15")
    })
    .unwrap_err();
    assert!(err.contains("features.stride_pixels = 15"), "{err}");
    let err = load_edited("models/nanodet-g-416-coco.toml", |t| {
        t.replace("channels = 128", "channels = 128\ncolour = 1")
    })
    .unwrap_err();
    assert!(err.contains("colour"), "{err}");
}
