//! `report.html`: the bench report as one self-contained page (inline SVG plots, no scripts, no
//! CDN) that a person can open from the run's folder.

use std::fmt::Write as _;

use super::report::{BenchReport, Bucket, Percentiles};

const W: f64 = 640.0;
const H: f64 = 260.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 24.0;
const COLOURS: [&str; 3] = ["#1f77b4", "#ff7f0e", "#2ca02c"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn legend(svg: &mut String, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let x = W - 190.0;
        let y = TOP + 14.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            y - 9.0,
            COLOURS[i % COLOURS.len()],
            x + 14.0,
            y,
            esc(n)
        );
    }
}

/// Grouped bars: one group per label, one bar per series.
fn bars(title: &str, unit: &str, labels: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let plot_w = W - LEFT - 10.0;
    let plot_h = H - TOP - BOTTOM;
    let group = plot_w / labels.len().max(1) as f64;
    let bar = (group * 0.8) / series.len().max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img"><title>{t}</title><text x="{LEFT}" y="14" font-size="13" font-weight="bold">{t}</text>"#,
        t = esc(title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = TOP + plot_h - plot_h * k as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="10" text-anchor="end">{v:.1}</text>"##,
            W - 10.0,
            LEFT - 4.0,
            y + 3.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="12" y="{}" font-size="11" transform="rotate(-90 12 {})">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        esc(unit)
    );
    for (gi, label) in labels.iter().enumerate() {
        let gx = LEFT + group * gi as f64 + group * 0.1;
        for (si, (_, values)) in series.iter().enumerate() {
            let v = values.get(gi).copied().unwrap_or(0.0);
            let h = plot_h * v / max;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {v:.2} {}</title></rect>"#,
                gx + bar * si as f64,
                TOP + plot_h - h,
                bar.max(1.0),
                h,
                COLOURS[si % COLOURS.len()],
                esc(label),
                esc(unit)
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            gx + group * 0.4,
            H - BOTTOM + 14.0,
            esc(label)
        );
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| *n).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

fn bucket_label(b: &Bucket, prev: Option<f64>) -> String {
    match (prev, b.upper_ms) {
        (_, Some(u)) => format!("≤{u}"),
        (Some(p), None) => format!(">{p}"),
        (None, None) => "all".into(),
    }
}

fn percentile_row(name: &str, p: &Percentiles) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
        esc(name),
        p.count,
        p.mean_ms,
        p.p50_ms,
        p.p95_ms,
        p.p99_ms,
        p.max_ms
    )
}

pub fn render(r: &BenchReport) -> String {
    let g = &r.gridwatch;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gridwatch bench {}</title>\
         <style>body{{font-family:sans-serif;max-width:980px;margin:1em auto;}}table{{border-collapse:collapse;margin:0.5em 0;}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right;}}td:first-child,th:first-child{{text-align:left;}}</style></head><body>",
        esc(&r.started_at)
    );
    let _ = write!(
        h,
        "<h1>gridwatch bench</h1><p>{} · model {} · {} CPUs ({}; flags {}) · {:.0} GiB · load average at start {:.2}</p><p><code>{}</code></p>",
        esc(&r.started_at),
        esc(&r.model),
        r.machine.cpus,
        esc(&r.machine.cpu_model),
        esc(&r.machine.cpu_flags.join(" ")),
        r.machine.memory_gib,
        r.machine.load_average_at_start,
        esc(&r.command)
    );

    // Summary table, side by side.
    h.push_str("<h2>Throughput, CPU, memory</h2><table><tr><th></th><th>frames analysed</th><th>analysed/s</th><th>analysed per CPU-s</th><th>CPU s</th><th>peak RSS MiB</th><th>p50 ms</th><th>p99 ms</th></tr>");
    let _ = write!(
        h,
        "<tr><td>gridwatch ({} cameras, {} pace, {}×{} threads)</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td></tr>",
        g.cameras,
        esc(&g.pace),
        g.workers,
        g.intra_op_threads,
        g.frames_analysed,
        g.analysed_fps,
        g.analysed_per_cpu_second,
        g.cpu_seconds,
        g.peak_rss_mib,
        g.latency.p50_ms,
        g.latency.p99_ms
    );
    if let Some(b) = &r.baseline {
        let _ = write!(
            h,
            "<tr><td>Python peer (OpenCV {} + onnxruntime {}, {} threads)</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.0}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&b.opencv),
            esc(&b.onnxruntime),
            b.threads,
            b.frames_analysed,
            b.analysed_fps,
            b.analysed_per_cpu_second,
            b.cpu_seconds,
            b.peak_rss_mib,
            b.latency.p50_ms,
            b.latency.p99_ms
        );
    }
    h.push_str("</table>");
    let dropped: Vec<String> = g
        .frames_dropped
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let _ = write!(
        h,
        "<p>gridwatch: {} frames decoded at the analysis rate, {} kept from inference by the motion gate, dropped: {}; active {:.1} s of {:.1} s wall.</p>",
        g.frames_decoded,
        g.frames_skipped_no_motion,
        if dropped.is_empty() {
            "none".to_owned()
        } else {
            esc(&dropped.join(", "))
        },
        g.active_seconds,
        g.wall_seconds
    );
    if let Some(l) = &r.limits {
        let _ = write!(
            h,
            "<h2>Limits</h2><table><tr><th></th><th>frames/s</th><th>gridwatch efficiency</th></tr>\
             <tr><td>decode only (same pipelines, nothing after the appsink)</td><td>{:.1}</td><td>{:.1} % (decoded)</td></tr>\
             <tr><td>bare model (same workers and threads)</td><td>{:.2}</td><td>{:.1} % (analysed)</td></tr>\
             <tr><td>decoding the needed units ({:.1} ms CPU per frame) + bare model ({:.1} ms), every core</td><td>{:.2}</td><td>{:.1} % (analysed)</td></tr></table>\
             <p>The bare model is the faster of two measurements ({:.2?} frames/s). With this decoding on the same cores, a pipeline reaches at most {:.1} % of the bare model.</p>",
            l.decode_fps,
            l.decode_efficiency * 100.0,
            l.model_fps,
            l.model_efficiency * 100.0,
            l.decode_cpu_ms_per_frame,
            l.model_cpu_ms_per_frame,
            l.decode_and_model_fps,
            l.decode_and_model_efficiency * 100.0,
            l.model_fps_runs,
            l.decoding_ceiling * 100.0,
        );
    }
    if let Some(b) = &r.baseline {
        let a = &b.agreement;
        let _ = write!(
            h,
            "<h2>Against the Python peer</h2><p>throughput ratio (gridwatch / peer) {:.2}; latency ratio p50 {:.2}, p99 {:.2}.</p>\
             <p>Detections on the {} frames both analysed: gridwatch {}, peer {}, matched {} ({:.1} %, same class, IoU ≥ 0.5), mean IoU {:.3}, |Δscore| mean {:.4} max {:.4}. \
             gridwatch decodes and scales with GStreamer, the peer with FFmpeg and cv2.resize: pixels differ slightly.</p>",
            b.throughput_ratio,
            b.latency_p50_ratio,
            b.latency_p99_ratio,
            a.frames_compared,
            a.gridwatch_detections,
            a.baseline_detections,
            a.matched,
            a.matched_fraction * 100.0,
            a.mean_matched_iou,
            a.mean_abs_score_delta,
            a.max_abs_score_delta
        );
    }

    // Latency histogram.
    let mut labels = Vec::new();
    let mut prev = None;
    for b in &g.latency_histogram {
        labels.push(bucket_label(b, prev));
        prev = b.upper_ms;
    }
    let share = |hist: &[Bucket]| -> Vec<f64> {
        let total: u64 = hist.iter().map(|b| b.count).sum::<u64>().max(1);
        hist.iter()
            .map(|b| 100.0 * b.count as f64 / total as f64)
            .collect()
    };
    let mut series = vec![("gridwatch", share(&g.latency_histogram))];
    if let Some(b) = &r.baseline {
        series.push(("Python peer", share(&b.latency_histogram)));
    }
    h.push_str("<h2>Latency, capture to decision</h2>");
    h.push_str(&bars(
        "Latency histogram (ms, share of frames)",
        "% of frames",
        &labels,
        &series,
    ));
    h.push_str("<table><tr><th>stage</th><th>frames</th><th>mean ms</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>");
    h.push_str(&percentile_row("capture → decision", &g.latency));
    for (name, p) in &g.stages {
        h.push_str(&percentile_row(name, p));
    }
    h.push_str("</table><p>queue includes the motion gate; rules includes the wait for the scenario thread.</p>");

    // Per-stage breakdown (mean ms per analysed frame).
    let stage_names = ["queue", "preprocess", "inference", "postprocess", "rules"];
    let labels: Vec<String> = stage_names.iter().map(|s| s.to_string()).collect();
    let mut series = vec![(
        "gridwatch",
        stage_names
            .iter()
            .map(|s| g.stages.get(*s).map_or(0.0, |p| p.mean_ms))
            .collect::<Vec<_>>(),
    )];
    if let Some(b) = &r.baseline {
        let n = b.frames_analysed.max(1) as f64;
        let per = |k: &str| b.stage_seconds_total.get(k).copied().unwrap_or(0.0) * 1000.0 / n;
        series.push((
            "Python peer",
            vec![
                0.0,
                per("convert_scale") + per("preprocess"),
                per("inference"),
                per("postprocess"),
                0.0,
            ],
        ));
    }
    h.push_str(&bars(
        "Per-stage breakdown (mean ms per analysed frame)",
        "ms",
        &labels,
        &series,
    ));

    if let Some(s) = &r.scaling {
        let labels: Vec<String> = s.steps.iter().map(|x| x.cameras.to_string()).collect();
        let series = vec![
            (
                "analysed/s",
                s.steps.iter().map(|x| x.analysed_fps).collect::<Vec<_>>(),
            ),
            (
                "offered/s",
                s.steps
                    .iter()
                    .map(|x| x.cameras as f64 * s.analysis_fps)
                    .collect(),
            ),
        ];
        let _ = write!(
            h,
            "<h2>Scaling</h2><p>{} analysed frame/s per camera, real-time pace; sustained = after the warm-up no stale drop, no unit shed late (behind real time) and p99 capture → decision &lt; {} ms (superseded frames and shed keyframes, which a waiting frame stands for, are counted, not disqualifying). Largest sustained: <b>{}</b> cameras.</p>",
            s.analysis_fps, s.p99_bound_ms, s.largest_sustained
        );
        h.push_str(&bars(
            "Throughput vs number of cameras",
            "frames/s",
            &labels,
            &series,
        ));
        h.push_str("<table><tr><th>cameras</th><th>analysed/s</th><th>stale</th><th>superseded</th><th>shed keyframes</th><th>units shed late</th><th>p50 ms</th><th>p99 ms</th><th>capture p99 ms</th><th>CPU share</th><th>sustained</th></tr>");
        for x in &s.steps {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0} %</td><td>{}</td></tr>",
                x.cameras,
                x.analysed_fps,
                x.stale_drops,
                x.superseded_drops,
                x.shed_keyframes,
                x.late_units,
                x.latency.p50_ms,
                x.latency.p99_ms,
                x.steady.as_ref().map_or(0.0, |s| s.capture_latency.p99_ms),
                x.cpu_share_of_machine * 100.0,
                if x.sustained { "yes" } else { "no" }
            );
        }
        h.push_str("</table>");
    }

    if let Some(k) = &r.key_area {
        key_area(&mut h, k);
    }

    h.push_str("<h2>Accuracy against the ground truth</h2>");
    if g.accuracy.is_empty() {
        h.push_str("<p>Not scored: no ground truth for these streams (or <code>--ground-truth none</code>).</p></body></html>\n");
        return h;
    }
    h.push_str("<table><tr><th>scenario</th><th>episodes</th><th>found</th><th>missed</th><th>false cases</th><th>precision</th><th>recall</th></tr>");
    for a in &g.accuracy {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td></tr>",
            esc(&a.scenario),
            a.episodes,
            a.found,
            a.missed,
            a.false_cases,
            a.precision,
            a.recall
        );
    }
    h.push_str("</table><ul>");
    for line in &g.accuracy_details {
        let _ = write!(h, "<li>{}</li>", esc(line));
    }
    h.push_str("</ul></body></html>\n");
    h
}

/// The key-area workload against the loop a user would write.
fn key_area(h: &mut String, k: &super::report::KeyArea) {
    let _ = write!(
        h,
        "<h2>Key-area workload</h2><p>{} cameras in {} units ({} plaza, {} street), {:.0} s of video each. \
         The naive loop: every camera at {} frame/s, every frame decoded, 1 onnxruntime thread \
         (measured on {} cameras: its cost per camera does not depend on the zones).</p>\
         <table><tr><th></th><th>CPU-s per camera-hour</th></tr>\
         <tr><td>gridwatch</td><td>{:.0}</td></tr><tr><td>naive loop</td><td>{:.0}</td></tr>\
         <tr><td>ratio</td><td>{:.2}</td></tr></table>",
        k.cameras,
        k.units,
        k.plaza_cameras,
        k.street_cameras,
        k.media_seconds_per_camera,
        k.naive_analysis_fps,
        k.peer_cameras,
        k.gridwatch_cpu_seconds_per_camera_hour,
        k.peer_cpu_seconds_per_camera_hour,
        k.cpu_ratio
    );
    h.push_str(
        "<table><tr><th>scenario</th><th>decision p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>",
    );
    for (s, p) in &k.decision_latency_by_scenario {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.0}</td></tr>",
            esc(s),
            p.p50_ms,
            p.p95_ms,
            p.p99_ms
        );
    }
    let _ = write!(
        h,
        "</table><p>What the naive loop's frames find (the same rules on its schedule, {} cameras):</p>\
         <table><tr><th>scenario</th><th>episodes</th><th>found</th><th>false cases</th></tr>",
        k.naive_schedule_cameras
    );
    for a in &k.naive_schedule_accuracy {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&a.scenario),
            a.episodes,
            a.found,
            a.false_cases
        );
    }
    h.push_str("</table>");
}
