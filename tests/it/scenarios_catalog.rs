//! The scenario catalog as configuration: `gridwatch check` reports the scenarios the configured
//! model cannot serve as inactive (a warning, exit 0), a town's own catalog replaces the shipped
//! one (its ids are the ones zones may name, its codes and names reach the engine), and a broken
//! catalog or an unknown scenario id is a configuration error with its line.

use std::process::Command;

use gridwatch::config::Config;

use crate::support::{TempDir, repo};

#[test]
fn check_reports_the_scenarios_the_model_cannot_serve_as_inactive() {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let inactive: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("warning: scenario `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    // The shipped COCO model has no garbage, laundry or water kinds; fire and smoke come from
    // the classical baseline, which `check` names.
    assert_eq!(
        inactive,
        [
            "exposed_garbage",
            "street_drying",
            "waterlogging",
            "garbage_overflow"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains("no configured model provides any of the kinds laundry"),
        "the reason is given: {stdout}"
    );
    assert!(
        stdout.contains(
            "note: scenario `straw_burning` uses the classical OpenCV fire/smoke baseline"
        ),
        "{stdout}"
    );
}

fn config_text(catalog: &str, scenario: &str) -> String {
    format!(
        r#"
[centre]
name = "c"
[[units]]
id = "u"
name = "u"
[[groups]]
id = "g"
name = "g"
unit = "u"
[[cameras]]
id = "cam"
name = "cam"
unit = "u"
group = "g"
uri = "{clip}"
[[cameras.zones]]
id = "z"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
scenarios = ["{scenario}"]
[model]
card = "{card}"
[scenarios]
catalog = "{catalog}"
[dispatch]
url = "http://127.0.0.1:9/api"
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    )
}

const TOWN_CATALOG: &str = r#"
[codes]
"A-17" = { major = "市容秩序", minor = "车辆乱停" }
[[scenarios]]
id = "cars_on_pavement"
name_zh = "车辆占用人行道"
name_en = "Cars on the pavement"
category_code = "A-17"
department = "城管"
workstation = "村居工作站"
level = "difficult"
rule = "track_dwell"
kinds = ["car"]
thresholds = { dwell_seconds = 45.0 }
"#;

#[test]
fn a_town_catalog_replaces_the_shipped_one() {
    let dir = TempDir::new("catalog");
    std::fs::write(dir.path("town.toml"), TOWN_CATALOG).unwrap();
    let c = Config::from_text(
        &config_text("town.toml", "cars_on_pavement"),
        "t.toml",
        &dir.0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let info = c.catalog.info("cars_on_pavement").unwrap();
    assert_eq!(info.name_zh, "车辆占用人行道");
    assert_eq!(info.level.deadline_minutes(), 60);
    assert_eq!(c.catalog.codes[info.category_code].minor, "车辆乱停");
    // The shipped scenarios are not known to this configuration.
    let e = Config::from_text(
        &config_text("town.toml", "illegal_parking"),
        "t.toml",
        &dir.0,
    )
    .unwrap_err();
    let p = &e.problems()[0];
    assert!(
        p.to_string().contains("unknown scenario `illegal_parking`"),
        "{p}"
    );
    assert_eq!(p.line, 20, "{p}");
    // A catalog that names a code its table lacks is refused, at the `catalog` line.
    std::fs::write(
        dir.path("bad.toml"),
        TOWN_CATALOG.replace("\"A-17\" =", "\"A-18\" ="),
    )
    .unwrap();
    let e = Config::from_text(
        &config_text("bad.toml", "cars_on_pavement"),
        "t.toml",
        &dir.0,
    )
    .unwrap_err();
    assert!(
        e.problems()
            .iter()
            .any(|p| p.to_string().contains("category_code `A-17`")),
        "{e}"
    );
}

/// A town catalog's own crowd entry: name, code, department, workstation and level.
const TOWN_CROWD: &str = r#"
[[scenarios]]
id = "crowd_gathering"
name_zh = "人员聚集"
name_en = "People gathering"
category_code = "B-02"
department = "城运中心（安管）"
workstation = "村居工作站"
level = "simple"
rule = "crowd"
kinds = ["person"]
"#;

/// Crowd cases carry the configured catalog's entry, not the shipped one's (they always
/// carried 人群聚集 / 公安 / general, whatever the town's catalog said).
#[test]
fn a_town_catalogs_crowd_entry_names_its_crowd_cases() {
    use std::sync::Arc;

    use gridwatch::infer::Detection;
    use gridwatch::infer::kinds::ObjectKind;
    use gridwatch::infer::pool::Detections;
    use gridwatch::ingest::Frame;

    let dir = TempDir::new("catalog-crowd");
    let catalog = TOWN_CATALOG.replace(
        "[codes]\n",
        "[codes]\n\"B-02\" = { major = \"公共安全\", minor = \"人员聚集\" }\n",
    ) + TOWN_CROWD;
    std::fs::write(dir.path("town.toml"), catalog).unwrap();
    let text = config_text("town.toml", "crowd_gathering")
        + "[scenarios.crowd_gathering]\nmin_persons = 3\nmin_duration_seconds = 1.0\n";
    let c = Config::from_text(&text, "t.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = gridwatch::scenarios::ScenarioEngine::new(c.scenario_setup());
    let id: Arc<str> = Arc::from("cam");
    // Five persons whose feet are inside the zone (the triangle above the diagonal).
    let persons: Vec<Detection> = (0..5)
        .map(|k| Detection {
            class_id: 0,
            label: Arc::from("person"),
            kind: ObjectKind::Person,
            score: 0.8,
            bbox: [0.6 + 0.06 * k as f32, 0.05, 0.64 + 0.06 * k as f32, 0.3],
        })
        .collect();
    let mut events = Vec::new();
    for seq in 0..8u64 {
        let (w, h) = (64u32, 48u32);
        let frame = Frame::from_rgb(
            0,
            id.clone(),
            seq,
            seq as f64 * 0.5,
            w,
            h,
            vec![90; (w * h * 3) as usize],
        )
        .expect("gstreamer initialises");
        let d = Detections {
            frame,
            objects: persons.clone(),
            queue_seconds: 0.0,
            times: Default::default(),
            probe: None,
        };
        engine.evaluate(d, |e| events.push(e));
    }
    assert_eq!(events.len(), 1, "one crowd episode");
    let s = &events[0].scenario;
    assert_eq!(
        (
            s.name_zh,
            s.department,
            s.workstation,
            s.level.deadline_minutes()
        ),
        ("人员聚集", "城运中心（安管）", "村居工作站", 10)
    );
    let (case, _) = gridwatch::cases::build(&events[0], 640).unwrap();
    assert_eq!(case.department, "城运中心（安管）");
    assert_eq!(case.deadline_minutes, 10);
    assert_eq!(case.scenario.category_code, "B-02");
    assert_eq!(case.scenario.category_minor, "人员聚集");
}
