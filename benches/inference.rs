//! criterion benches for the inference stage's own work: preprocessing a frame into the model's
//! input, decoding + NMS of real NanoDet outputs, and frames through the worker pool; and the
//! classical fire/smoke baseline the scenario stage runs per frame when straw burning needs it.
//! Run: `cargo bench --bench inference` (needs ./scripts/setup for onnxruntime).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use gridwatch::infer::card::{DecoderSpec, ModelCard};
use gridwatch::infer::nanodet::{DecodeParams, Level, NanodetDecoder};
use gridwatch::infer::pool::{self, Mailboxes};
use gridwatch::infer::{self, Thresholds, preprocess};
use gridwatch::ingest::Frame;
use gridwatch::ingest::settings::Pace;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn frame_rgb() -> (Vec<u8>, u32, u32) {
    let img = image::open(repo("tests/data/frames/vtest-416-a.png"))
        .expect("test frame")
        .to_rgb8();
    let (w, h) = img.dimensions();
    (img.into_raw(), w, h)
}

fn card() -> Arc<ModelCard> {
    Arc::new(ModelCard::load(&repo("models/nanodet-g-416-coco.toml")).expect("model card"))
}

fn bench_preprocess(c: &mut Criterion) {
    let card = card();
    let (rgb, w, h) = frame_rgb();
    let mut out = vec![0f32; card.input.shape.iter().product()];
    c.bench_function("preprocess 416x416 RGB -> NCHW BGR normalised", |b| {
        b.iter(|| {
            preprocess::normalise(
                &card.input,
                w as usize,
                h as usize,
                &rgb,
                w as usize * 3,
                &mut out,
            )
        })
    });
}

fn bench_decode(c: &mut Criterion) {
    let card = card();
    let env = infer::environment(&infer::runtime_library(None)).expect("onnxruntime");
    let (rgb, w, h) = frame_rgb();
    // Real outputs of the model on a real frame, captured once.
    let mut input = vec![0f32; card.input.shape.iter().product()];
    preprocess::normalise(
        &card.input,
        w as usize,
        h as usize,
        &rgb,
        w as usize * 3,
        &mut input,
    );
    let mut session = ort::session::Session::builder(env)
        .unwrap()
        .commit_from_file(card.model_path())
        .unwrap();
    let tensor = ort::value::TensorRef::from_array_view((card.input.shape, &input[..])).unwrap();
    let outputs = session
        .run(ort::inputs![card.input.name.as_str() => tensor])
        .unwrap();
    let DecoderSpec::Nanodet {
        strides,
        reg_max,
        score_outputs,
        box_outputs,
    } = &card.decoder
    else {
        panic!("bench expects the NanoDet card")
    };
    let grab = |n: &str| outputs[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    let scores: Vec<Vec<f32>> = score_outputs.iter().map(|n| grab(n)).collect();
    let boxes: Vec<Vec<f32>> = box_outputs.iter().map(|n| grab(n)).collect();
    let labels = card.load_labels().unwrap();
    let params = DecodeParams {
        input_width: w as usize,
        input_height: h as usize,
        num_classes: labels.len(),
        reg_max: *reg_max,
        score_threshold: 0.35,
        nms_iou: 0.6,
    };
    let mut decoder = NanodetDecoder::default();
    let mut out = Vec::with_capacity(64);
    c.bench_function("nanodet decode + NMS (3 levels, 80 classes)", |b| {
        b.iter(|| {
            let levels: Vec<Level<'_>> = strides
                .iter()
                .zip(&scores)
                .zip(&boxes)
                .map(|((s, sc), bx)| Level {
                    stride: *s,
                    scores: sc,
                    boxes: bx,
                })
                .collect();
            decoder.decode(&levels, &params, &labels, &mut out);
            out.len()
        })
    });
}

fn bench_pool(c: &mut Criterion) {
    let card = card();
    let env = infer::environment(&infer::runtime_library(None)).expect("onnxruntime");
    let (rgb, w, h) = frame_rgb();
    const CAMERAS: usize = 4;
    const FRAMES_PER_CAMERA: usize = 4;
    let mut group = c.benchmark_group("pool");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function(
        "16 frames, 4 cameras, 2 workers (NanoDet, 1 intra-op thread)",
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let ids: Vec<Arc<str>> =
                        (0..CAMERAS).map(|i| Arc::from(format!("c{i}"))).collect();
                    let mailboxes =
                        Mailboxes::new(ids.clone(), Pace::Fast, Duration::from_secs(60));
                    let detectors = pool::build_detectors(
                        env,
                        card.clone(),
                        2,
                        1,
                        Thresholds {
                            score: 0.35,
                            nms_iou: 0.6,
                        },
                    )
                    .unwrap();
                    let (tx, rx) = crossbeam_channel::bounded(64);
                    let start = Instant::now();
                    let workers = pool::spawn_workers(mailboxes.clone(), detectors, tx);
                    let feeders: Vec<_> = (0..CAMERAS)
                        .map(|cam| {
                            let (mailboxes, rgb, id) =
                                (mailboxes.clone(), rgb.clone(), ids[cam].clone());
                            std::thread::spawn(move || {
                                for seq in 0..FRAMES_PER_CAMERA {
                                    let f = Frame::from_rgb(
                                        cam,
                                        id.clone(),
                                        seq as u64,
                                        seq as f64,
                                        w,
                                        h,
                                        rgb.clone(),
                                    )
                                    .unwrap();
                                    mailboxes.put(f);
                                }
                                mailboxes.close(cam);
                            })
                        })
                        .collect();
                    let analysed = rx.iter().count();
                    total += start.elapsed();
                    assert_eq!(analysed, CAMERAS * FRAMES_PER_CAMERA);
                    feeders.into_iter().for_each(|f| f.join().unwrap());
                    workers.into_iter().for_each(|t| t.join().unwrap());
                }
                total
            })
        },
    );
    group.finish();
}

fn bench_fire_baseline(c: &mut Criterion) {
    use gridwatch::scenarios::fire::{FireBaseline, FireBaselineSettings};
    // Two real frames in turn, so the flicker/motion averages see change, as on a live camera.
    let frames: Vec<Frame> = [
        "tests/data/frames/vtest-416-a.png",
        "tests/data/frames/vtest-416-b.png",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| {
        let img = image::open(repo(p)).expect("test frame").to_rgb8();
        let (w, h) = img.dimensions();
        Frame::from_rgb(
            0,
            Arc::from("cam"),
            i as u64,
            i as f64,
            w,
            h,
            img.into_raw(),
        )
        .expect("frame")
    })
    .collect();
    let mut detector = FireBaseline::new(FireBaselineSettings::default()).expect("detector");
    let mut out = Vec::new();
    let mut n = 0usize;
    c.bench_function(
        "fire/smoke baseline per frame (416x416 in, 160 px wide analysis)",
        |b| {
            b.iter(|| {
                out.clear();
                n += 1;
                detector.detect(&frames[n % 2], &mut out).expect("detect");
            })
        },
    );
}

criterion_group!(
    benches,
    bench_preprocess,
    bench_decode,
    bench_pool,
    bench_fire_baseline
);
criterion_main!(benches);
