//! Episode precision and recall of the scenarios against the ground truth annotated by looking at
//! the sample clips (`sample-streams/ground-truth.toml`, independent of any model): the whole
//! pipeline (GStreamer, the shipped NanoDet model, tracker, rules, cases, delivery) runs on each
//! clip with the zones of the annotation; every delivered case is matched to an annotated episode
//! (same scenario and zone, confirmed while the object is in place, an object overlapping the
//! annotated box), at most one case per episode.

use gridwatch::cases::Case;
use gridwatch::config::Config;
use gridwatch::run::{RunOptions, StopHandle};
use gridwatch::track::iou;
use gridwatch_bench::accuracy::{self, Clip, GroundTruth, Tally};
use gridwatch_dispatch_ref::{CASES_PATH, Receiver};

use crate::support::{TempDir, repo};

/// Runs the pipeline on one clip and returns the delivered cases. `looped`: replay the clip in a
/// loop with the shipped catalog plus a crowd zone, until a crowd case confirmed at or after that
/// stream time arrives (proof that the stream got that far).
fn cases_of(gt: &GroundTruth, clip: &Clip, dir: &TempDir, looped: Option<f64>) -> Vec<Case> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = dir.path(&format!("{}-receiver.sqlite", clip.camera));
    let receiver = runtime
        .block_on(Receiver::bind("127.0.0.1:0", &db, Some("t0ken".into())))
        .unwrap();
    let base = format!("http://{}", receiver.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(receiver.serve(async {
        let _ = stop_rx.await;
    }));
    let mut zones: String = clip
        .zones
        .iter()
        .map(|z| {
            format!(
                "[[cameras.zones]]\nid = \"{}\"\nname = \"{}\"\npolygon = {:?}\nscenarios = {:?}\n",
                z.id, z.name, z.polygon, z.scenarios
            )
        })
        .collect();
    let mut extra = format!(
        "[scenarios]\ncatalog = \"{}\"\n",
        repo(&format!("sample-streams/{}", gt.catalog)).display()
    );
    if looped.is_some() {
        zones = format!(
            "loop = true\n{zones}[[cameras.zones]]\nid = \"all\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\nscenarios = [\"crowd_gathering\"]\n"
        );
        extra = "[scenarios.crowd_gathering]\nmin_persons = 6\nmin_duration_seconds = 5.0\nclear_seconds = 3.0\n".into();
    }
    let text = format!(
        r#"
[centre]
name = "test centre"
[[units]]
id = "sjt"
name = "沈泾塘"
[[groups]]
id = "patrol"
name = "巡查编组"
unit = "sjt"
analysis_fps = {fps}
[[cameras]]
id = "{camera}"
name = "{camera}"
unit = "sjt"
group = "patrol"
uri = "{uri}"
{zones}
[model]
card = "{card}"
[inference]
workers = 2
[ingest]
pace = "fast"
{extra}
[cases]
outbox = "{camera}-outbox.sqlite"
[dispatch]
url = "{base}{CASES_PATH}"
bearer_token = "t0ken"
"#,
        fps = clip.analysis_fps,
        camera = clip.camera,
        uri = repo(&format!("sample-streams/{}", clip.clip)).display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    );
    let config =
        Config::from_text(&text, "accuracy.toml", &dir.0).unwrap_or_else(|e| panic!("{e}"));
    let stop = StopHandle::default();
    let watcher = looped.map(|until| {
        let (stop, db) = (stop.clone(), db.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(150);
            while std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let far = rusqlite::Connection::open(&db).ok().and_then(|c| {
                    c.query_row(
                        "SELECT count(*) FROM received WHERE scenario = 'crowd_gathering' \
                         AND json_extract(body, '$.episode.confirmed_media_seconds') >= ?1",
                        [until],
                        |r| r.get::<_, i64>(0),
                    )
                    .ok()
                });
                if far.unwrap_or(0) > 0 {
                    stop.stop();
                    return true;
                }
            }
            stop.stop();
            false
        })
    });
    let summary = gridwatch::run::run(config, RunOptions::default(), stop).unwrap();
    if let Some(w) = watcher {
        assert!(w.join().unwrap(), "the looped replay never got that far");
    }
    assert_eq!(summary.outbox.pending, 0, "every case was delivered");
    let _ = stop_tx.send(());
    runtime.block_on(server).unwrap().unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn.prepare("SELECT body FROM received").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|b| serde_json::from_str::<Case>(&b.unwrap()).unwrap())
        .collect()
}

/// Scores with the library's matching (`gridwatch_bench::accuracy`), shared with `gridwatch-bench`.
fn score(gt: &GroundTruth, clip: &Clip, cases: &[Case], tally: &mut Tally) {
    for line in accuracy::score(
        &clip.episodes,
        &clip.clip,
        gt.match_iou,
        gt.tolerance_seconds,
        cases,
        tally,
    ) {
        eprintln!("{line}");
    }
}

#[test]
fn parking_episodes_of_the_sample_clips() {
    let _exclusive = crate::support::exclusive();
    let gt = GroundTruth::load(&repo("sample-streams/ground-truth.toml")).unwrap();
    let dir = TempDir::new("accuracy");
    let mut tally = Tally::new();
    for clip in &gt.clips {
        let cases = cases_of(&gt, clip, &dir, None);
        score(&gt, clip, &cases, &mut tally);
    }
    for (scenario, (cases, right, episodes, found)) in &tally {
        let precision = if *cases == 0 {
            1.0
        } else {
            *right as f64 / *cases as f64
        };
        let recall = *found as f64 / (*episodes).max(1) as f64;
        eprintln!(
            "{scenario}: precision {precision:.2} ({right}/{cases} cases), recall {recall:.2} ({found}/{episodes} episodes)"
        );
    }
    // Measured (see README): illegal_parking 2/2 cases right, 2/2 episodes found;
    // nonmotor_parking 0 cases, 0/3 episodes (NanoDet-g 416 scores these bicycles 0.36-0.48 in
    // one frame of three or four: below the tracker's confident score, never a steady track).
    // What must hold whatever the model: no case outside an annotated episode and no second case
    // for one episode (precision 1), and the parked vehicles of vtest found.
    for (scenario, (cases, right, _, _)) in &tally {
        assert_eq!(cases, right, "{scenario}: false or duplicate cases");
    }
    let (_, _, episodes, found) = tally["illegal_parking"];
    assert_eq!(episodes, 2);
    assert!(found >= 1, "the parked van of vtest was not found");
}

/// The shipped catalog's dwell (120 s) on vtest replayed in a loop into its fourth loop (stream
/// time continues across loops, so the parked van and car stay in place for 280+ s): each vehicle
/// is one case, never one per loop or per dwell.
#[test]
fn a_parked_vehicle_is_one_case_over_several_loops() {
    let _exclusive = crate::support::exclusive();
    let mut gt = GroundTruth::load(&repo("sample-streams/ground-truth.toml")).unwrap();
    let dir = TempDir::new("loops");
    let clip = gt.clips.remove(0);
    assert_eq!(clip.clip, "vtest.mp4");
    let shipped = gridwatch::scenarios::EMBEDDED
        .entry("illegal_parking")
        .unwrap()
        .thresholds
        .dwell_seconds;
    // vtest's crowd episodes (vtest.crowd-ground-truth.toml, same thresholds) fire at about 9 s
    // and 55.5 s of each loop: a crowd case after 3 loops + 40 s proves the replay reached the
    // fourth loop, more than twice the dwell.
    let until = 3.0 * 79.5 + 40.0;
    assert!(until > 2.0 * shipped);
    let cases = cases_of(&gt, &clip, &dir, Some(until));
    let parking: Vec<&Case> = cases
        .iter()
        .filter(|c| c.scenario.id == "illegal_parking")
        .collect();
    for c in &parking {
        eprintln!(
            "illegal_parking at {:.1} s: {:?}",
            c.episode.confirmed_media_seconds, c.objects[0].bbox
        );
        assert!(c.episode.confirmed_media_seconds >= shipped);
    }
    // Every case is a different annotated vehicle: at most one per vehicle.
    let mut matched = vec![0; clip.episodes.len()];
    for c in &parking {
        let i = clip
            .episodes
            .iter()
            .position(|e| {
                e.bbox
                    .is_some_and(|b| iou(&c.objects[0].bbox, &b) >= gt.match_iou)
            })
            .unwrap_or_else(|| panic!("a case for no parked vehicle: {:?}", c.objects));
        matched[i] += 1;
    }
    assert!(matched.iter().all(|&n| n <= 1), "{matched:?}");
    assert_eq!(matched[0], 1, "the van is one case");
}
