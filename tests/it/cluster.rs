//! Camera-group ownership across nodes: a real etcd (Debian's `etcd-server`), real
//! `gridwatch run` processes on loopback, the sample streams served live by the real RTSP server
//! (`gridwatch serve-rtsp`), one reference dispatch receiver. An observer polls every node's
//! `/api/v1/cluster` and `/api/v1/cameras` every 100 ms and keeps the timeline the assertions
//! read: who analyses which group, when frames flow, takeover times.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::dispatch_support::{TOKEN, TestReceiver, free_port, received, wait_until};
use crate::support::{TempDir, repo};

/// Lease TTL of the test nodes; the issue's bound for a takeover is TTL + 5 s.
const TTL_SECONDS: u64 = 5;
const FENCE_MARGIN_SECONDS: f64 = 1.5;
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// A single-member etcd on loopback ports, its data in `dir`.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed by scripts/setup (Debian's etcd-server)");
        let health = format!("{endpoint}/health");
        let http = reqwest::blocking::Client::new();
        assert!(
            wait_until(Duration::from_secs(20), || http
                .get(&health)
                .timeout(Duration::from_millis(500))
                .send()
                .is_ok_and(|r| r.status().is_success())),
            "etcd did not become healthy at {endpoint}"
        );
        Etcd { child, endpoint }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy that can cut a node off from etcd: `cut` resets every open connection and
/// refuses new ones until `heal`.
struct CutProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                {
                    let mut open = o.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { addr, cut, open }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// The two sample clips served live by `gridwatch serve-rtsp`: (port, server process).
fn serve_sample_streams() -> (u16, Child) {
    let port = free_port();
    let server = crate::ingest::serve_rtsp_process(
        port,
        &[
            &repo("sample-streams/vtest.mp4"),
            &repo("sample-streams/bikes.mp4"),
        ],
    );
    (port, server)
}

/// `n` groups of one live camera each, alternating between the two served clips.
fn groups_and_cameras(n: usize, rtsp_port: u16) -> (String, BTreeMap<String, String>) {
    let mut text = String::new();
    let mut camera_group = BTreeMap::new();
    for i in 1..=n {
        let (clip, zone) = if i % 2 == 1 {
            (
                "vtest",
                r#"
[[cameras.zones]]
id = "all"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
scenarios = ["crowd_gathering"]"#,
            )
        } else {
            ("bikes", "")
        };
        text += &format!(
            r#"
[[groups]]
id = "g{i:02}"
name = "编组 {i}"
unit = "cbd"
analysis_fps = 2.0
[[cameras]]
id = "c{i:02}"
name = "camera {i}"
unit = "cbd"
group = "g{i:02}"
uri = "rtsp://127.0.0.1:{rtsp_port}/{clip}"
{zone}
"#
        );
        camera_group.insert(format!("c{i:02}"), format!("g{i:02}"));
    }
    (text, camera_group)
}

/// What a case says about its episode: (camera, zone, scenario, first seen, confirmed).
type Episode = (String, String, String, String, String);

/// One `gridwatch run` node: its own folder (outbox, log), status port and etcd endpoint.
struct Node {
    id: String,
    dir: PathBuf,
    config: PathBuf,
    status: String,
    child: Option<Child>,
}

impl Node {
    fn new(root: &Path, id: &str, etcd: &str, layout: &str, receiver: &TestReceiver) -> Node {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let text = format!(
            r#"
[centre]
name = "cluster test"
[[units]]
id = "cbd"
name = "商业商务区"
{layout}
[model]
card = "{card}"
[inference]
workers = 1
intra_op_threads = 1
[scenarios.crowd_gathering]
min_persons = 7
min_duration_seconds = 1.0
clear_seconds = 1.0
[cases]
outbox = "outbox.sqlite"
[dispatch]
url = "{url}"
bearer_token = "{TOKEN}"
retry_initial_seconds = 0.2
retry_max_seconds = 1.0
[telemetry]
metrics_listen = "127.0.0.1:{port}"
[cluster]
etcd_endpoints = ["{etcd}"]
lease_ttl_seconds = {TTL_SECONDS}
fence_margin_seconds = {FENCE_MARGIN_SECONDS}
etcd_timeout_seconds = 1.0
poll_interval_ms = 250
advertise_url = "http://127.0.0.1:{port}"
"#,
            card = repo("models/nanodet-g-416-coco.toml").display(),
            url = receiver.cases_url(),
        );
        let config = dir.join("node.toml");
        std::fs::write(&config, text).unwrap();
        Node {
            id: id.to_owned(),
            dir,
            config,
            status: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .env(
                "RUST_LOG",
                "warn,gridwatch::cluster=info,gridwatch::run=info",
            )
            .args(["run", "--config"])
            .arg(&self.config)
            .args(["--node-id", &self.id, "--drain-timeout-seconds", "10"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM and a bounded wait for a clean exit.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "node {} exited with {status}", self.id);
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                panic!("node {} did not exit within 30 s of SIGTERM", self.id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// Every case this node committed, by id.
    fn cases(&self) -> HashMap<String, Episode> {
        let path = self.dir.join("outbox.sqlite");
        if !path.exists() {
            return HashMap::new();
        }
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let Ok(mut stmt) = conn.prepare("SELECT id, body FROM cases") else {
            return HashMap::new();
        };
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .unwrap()
            .map(|row| {
                let (id, body) = row.unwrap();
                let v: Value = serde_json::from_str(&body).unwrap();
                let s = |p: &str| {
                    v.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                (
                    id,
                    (
                        s("/camera/id"),
                        s("/zone/id"),
                        s("/scenario/id"),
                        s("/first_seen_at"),
                        s("/confirmed_at"),
                    ),
                )
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One node at one poll: the groups it analyses (its own report) and its cameras' frame counts
/// and last frame times.
#[derive(Debug, Clone)]
struct Sample {
    /// When the node answered (nodes are read one after another within a round).
    at: Instant,
    analysing: BTreeSet<String>,
    state: String,
    frames: BTreeMap<String, u64>,
    last_frame_at: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Round {
    at: Instant,
    wall: SystemTime,
    nodes: BTreeMap<String, Option<Sample>>,
}

/// Polls every node until dropped.
struct Observer {
    rounds: Arc<Mutex<Vec<Round>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    fn start(nodes: Vec<(String, String)>) -> Observer {
        let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (rounds.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_millis(400))
                .build()
                .unwrap();
            while !s.load(Ordering::SeqCst) {
                let at = Instant::now();
                let wall = SystemTime::now();
                let mut samples = BTreeMap::new();
                for (id, base) in &nodes {
                    samples.insert(id.clone(), sample(&http, base));
                }
                r.lock().unwrap().push(Round {
                    at,
                    wall,
                    nodes: samples,
                });
                std::thread::sleep(OBSERVE_EVERY.saturating_sub(at.elapsed()));
            }
        });
        Observer {
            rounds,
            stop,
            thread: Some(thread),
        }
    }

    fn rounds(&self) -> Vec<Round> {
        self.rounds.lock().unwrap().clone()
    }

    fn latest(&self) -> Option<Round> {
        self.rounds.lock().unwrap().last().cloned()
    }

    fn finish(mut self) -> Vec<Round> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.rounds()
    }
}

fn sample(http: &reqwest::blocking::Client, base: &str) -> Option<Sample> {
    let cluster: Value = http
        .get(format!("{base}/api/v1/cluster"))
        .send()
        .ok()?
        .json()
        .ok()?;
    let cameras: Value = http
        .get(format!("{base}/api/v1/cameras"))
        .send()
        .ok()?
        .json()
        .ok()?;
    let analysing = cluster["groups"]
        .as_array()?
        .iter()
        .filter(|g| g["analysing_here"] == Value::Bool(true))
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect();
    let list = cameras
        .as_array()
        .or_else(|| cameras["cameras"].as_array())?;
    let mut frames = BTreeMap::new();
    let mut last_frame_at = BTreeMap::new();
    for c in list {
        let id = c["id"].as_str()?.to_owned();
        frames.insert(id.clone(), c["frames"].as_u64().unwrap_or(0));
        if let Some(t) = c["last_frame_at"].as_str() {
            last_frame_at.insert(id, t.to_owned());
        }
    }
    Some(Sample {
        at: Instant::now(),
        analysing,
        state: cluster["state"].as_str().unwrap_or("").to_owned(),
        frames,
        last_frame_at,
    })
}

/// group → the node analysing it, if exactly one node does in this round; None when the round
/// shows a group with no analyser.
fn owners(round: &Round) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (node, s) in &round.nodes {
        if let Some(s) = s {
            for g in &s.analysing {
                out.entry(g.clone()).or_default().push(node.clone());
            }
        }
    }
    out
}

/// Every group analysed by exactly one node, `per_node` groups each (among `nodes`).
fn balanced(round: &Round, groups: usize, nodes: &[&str]) -> bool {
    let o = owners(round);
    if o.len() != groups || o.values().any(|n| n.len() != 1) {
        return false;
    }
    let per_node = groups / nodes.len();
    nodes.iter().all(|n| {
        round
            .nodes
            .get(*n)
            .cloned()
            .flatten()
            .is_some_and(|s| s.analysing.len() == per_node)
    })
}

/// The longest time two nodes both reported one group analysed, from each node's own answer
/// times: a run of consecutive answers reporting the group spans [first, last]; runs of two
/// nodes that intersect are a double analysis (no false alarm from reading nodes one after
/// the other). Returns the longest intersection and what it was.
fn double_analysis(rounds: &[Round]) -> (Duration, Vec<String>) {
    // (group, node) → runs
    let mut runs: BTreeMap<(String, String), Vec<(Instant, Instant)>> = BTreeMap::new();
    let mut open: BTreeMap<(String, String), (Instant, Instant)> = BTreeMap::new();
    for r in rounds {
        for (node, s) in &r.nodes {
            let now: BTreeSet<String> = s.as_ref().map(|s| s.analysing.clone()).unwrap_or_default();
            let keys: Vec<(String, String)> = open
                .keys()
                .filter(|(g, n)| n == node && !now.contains(g))
                .cloned()
                .collect();
            for k in keys {
                let run = open.remove(&k).unwrap();
                runs.entry(k).or_default().push(run);
            }
            if let Some(s) = s {
                for g in &s.analysing {
                    open.entry((g.clone(), node.clone()))
                        .and_modify(|run| run.1 = s.at)
                        .or_insert((s.at, s.at));
                }
            }
        }
    }
    for (k, run) in open {
        runs.entry(k).or_default().push(run);
    }
    let mut worst = Duration::ZERO;
    let mut seen = Vec::new();
    for ((g, a), ra) in &runs {
        for ((g2, b), rb) in &runs {
            if g != g2 || a >= b {
                continue;
            }
            for x in ra {
                for y in rb {
                    let (start, end) = (x.0.max(y.0), x.1.min(y.1));
                    if end > start {
                        worst = worst.max(end - start);
                        seen.push(format!("{g}: {a} and {b} for {:?}", end - start));
                    }
                }
            }
        }
    }
    (worst, seen)
}

/// The worst case over the timeline: the most rounds in a row in which some group was reported
/// analysed by two nodes, and (with frames as evidence: the group's camera got new frames on
/// both nodes since the previous round) the same.
fn overlaps(
    rounds: &[Round],
    camera_group: &BTreeMap<String, String>,
) -> (usize, usize, Vec<String>) {
    let mut worst_flag = 0;
    let mut worst_frames = 0;
    let mut run_flag: HashMap<String, usize> = HashMap::new();
    let mut run_frames: HashMap<String, usize> = HashMap::new();
    let mut seen = Vec::new();
    for w in rounds.windows(2) {
        let (prev, cur) = (&w[0], &w[1]);
        let mut flagged: BTreeMap<&str, usize> = BTreeMap::new();
        let mut flowing: BTreeMap<&str, usize> = BTreeMap::new();
        for (node, s) in &cur.nodes {
            let Some(s) = s else { continue };
            for g in &s.analysing {
                *flagged.entry(g.as_str()).or_default() += 1;
            }
            let Some(Some(p)) = prev.nodes.get(node) else {
                continue;
            };
            for (cam, n) in &s.frames {
                if p.frames.get(cam).is_some_and(|before| n > before) {
                    *flowing.entry(camera_group[cam].as_str()).or_default() += 1;
                }
            }
        }
        for g in camera_group.values() {
            let f = run_flag.entry(g.clone()).or_default();
            *f = if flagged.get(g.as_str()).copied().unwrap_or(0) > 1 {
                *f + 1
            } else {
                0
            };
            worst_flag = worst_flag.max(*f);
            let r = run_frames.entry(g.clone()).or_default();
            *r = if flowing.get(g.as_str()).copied().unwrap_or(0) > 1 {
                *r + 1
            } else {
                0
            };
            if *r > 0 {
                seen.push(format!("{g} frames on two nodes at +{:?}", cur.at));
            }
            worst_frames = worst_frames.max(*r);
        }
    }
    (worst_flag, worst_frames, seen)
}

/// The receiver got every case the nodes committed and delivered, once, and no two nodes
/// reported the same camera + zone + scenario with overlapping episodes (what analysing one
/// group twice at a time would produce).
fn check_cases(nodes: &[&Node], receiver: &TestReceiver) -> usize {
    let got = received(&receiver.db);
    let mut by_episode: Vec<(String, Episode)> = Vec::new();
    let mut all = 0;
    for n in nodes {
        for (id, key) in n.cases() {
            all += 1;
            assert!(
                got.contains_key(&id),
                "case {id} of node {} never reached the dispatch API",
                n.id
            );
            by_episode.push((n.id.clone(), key));
        }
    }
    assert_eq!(got.len(), all, "the receiver has cases no node committed");
    for (i, (na, a)) in by_episode.iter().enumerate() {
        for (nb, b) in &by_episode[i + 1..] {
            if na != nb && (&a.0, &a.1, &a.2) == (&b.0, &b.1, &b.2) {
                let overlap = a.3 <= b.4 && b.3 <= a.4;
                assert!(!overlap, "nodes {na} and {nb} both reported {a:?} / {b:?}");
            }
        }
    }
    all
}

/// Waits (bounded) until each of `groups` gets new frames on the one node analysing it;
/// returns when.
fn wait_frames(
    observer: &Observer,
    camera_group: &BTreeMap<String, String>,
    groups: &[String],
) -> Instant {
    let start = observer.latest().unwrap();
    let mut flowing: BTreeSet<String> = BTreeSet::new();
    let ok = wait_until(Duration::from_secs(30), || {
        let r = observer.latest().unwrap();
        let o = owners(&r);
        for g in groups {
            let cam = camera_group.iter().find(|(_, cg)| *cg == g).unwrap().0;
            let Some([owner]) = o.get(g).map(Vec::as_slice) else {
                continue;
            };
            let frames = |r: &Round| {
                r.nodes[owner]
                    .as_ref()
                    .and_then(|s| s.frames.get(cam).copied())
                    .unwrap_or(0)
            };
            if frames(&r) > frames(&start) {
                flowing.insert(g.clone());
            }
        }
        flowing.len() == groups.len()
    });
    assert!(
        ok,
        "frames never flowed for {:?} (flowing: {flowing:?})",
        groups
    );
    Instant::now()
}

#[test]
fn three_nodes_share_twelve_groups_and_take_over_a_killed_one() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("cluster3");
    let etcd = Etcd::start(&dir.0);
    let (rtsp_port, mut rtsp) = serve_sample_streams();
    let receiver = TestReceiver::start(&dir.path("receiver.sqlite"), "127.0.0.1:0");
    let (layout, camera_group) = groups_and_cameras(12, rtsp_port);
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|id| Node::new(&dir.0, id, &etcd.endpoint, &layout, &receiver))
        .collect();
    let observer = Observer::start(
        nodes
            .iter()
            .map(|n| (n.id.clone(), n.status.clone()))
            .collect(),
    );
    let started = Instant::now();
    for n in &mut nodes {
        n.start();
    }
    let all = ["a", "b", "c"];
    assert!(
        wait_until(Duration::from_secs(60), || observer
            .latest()
            .is_some_and(|r| balanced(&r, 12, &all))),
        "12 groups never settled 4/4/4 on three nodes: {:?}\n{}",
        observer.latest().map(|r| owners(&r)),
        nodes[0].log()
    );
    println!(
        "3 nodes: 12 groups owned 4/4/4 after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Frames flow for every camera on its owner.
    let groups: Vec<String> = camera_group.values().cloned().collect();
    wait_frames(&observer, &camera_group, &groups);
    let after = observer.latest().unwrap();

    // kill -9 node b: a and c take its groups once its lease expires.
    let b_groups: Vec<String> = after.nodes["b"]
        .as_ref()
        .unwrap()
        .analysing
        .iter()
        .cloned()
        .collect();
    nodes[1].kill9();
    let killed = Instant::now();
    let mut taken: BTreeMap<String, Duration> = BTreeMap::new();
    let bound = Duration::from_secs(TTL_SECONDS + 5);
    wait_until(bound + Duration::from_secs(5), || {
        let r = observer.latest().unwrap();
        let o = owners(&r);
        for g in &b_groups {
            if !taken.contains_key(g) && o.get(g).is_some_and(|n| n.len() == 1 && n[0] != "b") {
                taken.insert(g.clone(), killed.elapsed());
            }
        }
        taken.len() == b_groups.len()
    });
    println!("takeover after kill -9 (TTL {TTL_SECONDS} s): {taken:?}");
    assert_eq!(
        taken.len(),
        b_groups.len(),
        "b's groups {b_groups:?} not all taken over: {taken:?}"
    );
    for (g, t) in &taken {
        assert!(*t <= bound, "{g} taken over after {t:?} > TTL + 5 s");
    }
    // ... and analysed again: frames flow on the new owners.
    let flowing = wait_frames(&observer, &camera_group, &b_groups);
    println!(
        "b's groups analysed again (new frames on their new owners) {:.1} s after the kill",
        (flowing - killed).as_secs_f64()
    );

    // b comes back with the same outbox: the groups rebalance to 4/4/4.
    nodes[1].start();
    let restarted = Instant::now();
    assert!(
        wait_until(Duration::from_secs(40), || observer
            .latest()
            .is_some_and(|r| balanced(&r, 12, &all))),
        "after b's restart the groups did not rebalance: {:?}",
        observer.latest().map(|r| owners(&r))
    );
    println!(
        "b restarted: rebalanced 4/4/4 after {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    for n in &mut nodes {
        n.stop();
    }
    let rounds = observer.finish();
    let _ = rtsp.kill();
    let _ = rtsp.wait();

    let (_, frame_rounds, seen) = overlaps(&rounds, &camera_group);
    let (double, doubles) = double_analysis(&rounds);
    println!(
        "{} observer rounds; longest double analysis by the nodes' own reports: {double:?}; rounds with frames of one group on two nodes in a row: {frame_rounds} {seen:?}",
        rounds.len()
    );
    assert_eq!(
        double,
        Duration::ZERO,
        "a group was analysed by two nodes at once: {doubles:?}"
    );
    // Frame counts are read one node after the other, so a hand-over can show new frames on
    // both sides within one 100 ms round; never two rounds in a row.
    assert!(
        frame_rounds <= 1,
        "frames of one group flowed on two nodes: {seen:?}"
    );
    let cases = check_cases(&[&nodes[0], &nodes[1], &nodes[2]], &receiver);
    println!("cases: {cases} committed by the nodes, all delivered once");
    for n in &nodes {
        assert!(
            !n.log().contains("panicked"),
            "node {} panicked:\n{}",
            n.id,
            n.log()
        );
    }
}

#[test]
fn a_node_cut_off_from_etcd_stops_before_its_groups_move() {
    let _exclusive = crate::support::exclusive();
    let dir = TempDir::new("cluster-cut");
    let etcd = Etcd::start(&dir.0);
    let etcd_addr: SocketAddr = etcd.endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = CutProxy::start(etcd_addr);
    let (rtsp_port, mut rtsp) = serve_sample_streams();
    let receiver = TestReceiver::start(&dir.path("receiver.sqlite"), "127.0.0.1:0");
    let (layout, camera_group) = groups_and_cameras(4, rtsp_port);
    let mut a = Node::new(&dir.0, "a", &etcd.endpoint, &layout, &receiver);
    let mut b = Node::new(
        &dir.0,
        "b",
        &format!("http://{}", proxy.addr),
        &layout,
        &receiver,
    );
    let observer = Observer::start(vec![
        ("a".into(), a.status.clone()),
        ("b".into(), b.status.clone()),
    ]);
    a.start();
    b.start();
    assert!(
        wait_until(Duration::from_secs(60), || observer
            .latest()
            .is_some_and(|r| balanced(&r, 4, &["a", "b"]))),
        "4 groups never settled 2/2: {:?}\n{}",
        observer.latest().map(|r| owners(&r)),
        b.log()
    );
    // A second process calling itself `a` must not join: it would fight a over a's keys.
    let mut impostor = Node::new(&dir.0, "a2", &etcd.endpoint, &layout, &receiver);
    impostor.id = "a".into();
    impostor.start();
    assert!(
        wait_until(Duration::from_secs(TTL_SECONDS + 15), || impostor
            .log()
            .contains("is in use by another live node")),
        "a duplicate node id was not refused:\n{}",
        impostor.log()
    );
    let http = reqwest::blocking::Client::new();
    let view: Value = http
        .get(format!("{}/api/v1/cluster", impostor.status))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(view["groups_owned"], 0, "{view}");
    assert_eq!(view["state"], "joining", "{view}");
    impostor.kill9();
    let b_groups: Vec<String> = observer.latest().unwrap().nodes["b"]
        .as_ref()
        .unwrap()
        .analysing
        .iter()
        .cloned()
        .collect();

    proxy.cut();
    let cut_at = Instant::now();
    let bound = Duration::from_secs(TTL_SECONDS + 5);
    assert!(
        wait_until(bound, || observer.latest().is_some_and(|r| {
            let o = owners(&r);
            b_groups
                .iter()
                .all(|g| o.get(g).is_some_and(|n| n == &["a".to_owned()]))
        })),
        "a did not take b's groups {b_groups:?} within TTL + 5 s: {:?}",
        observer.latest().map(|r| owners(&r))
    );
    let rounds = observer.rounds();
    let after_cut: Vec<&Round> = rounds.iter().filter(|r| r.at >= cut_at).collect();
    for g in &b_groups {
        let cam = camera_group.iter().find(|(_, cg)| *cg == g).unwrap().0;
        let b_last = after_cut.iter().rposition(|r| {
            r.nodes["b"]
                .as_ref()
                .is_some_and(|s| s.analysing.contains(g))
        });
        let a_first = after_cut
            .iter()
            .position(|r| {
                r.nodes["a"]
                    .as_ref()
                    .is_some_and(|s| s.analysing.contains(g))
            })
            .expect("a analyses the group");
        let b_stop = b_last.map_or(Duration::ZERO, |i| after_cut[i].at - cut_at);
        let a_start = after_cut[a_first].at - cut_at;
        println!(
            "{g}: b stopped {:.2} s after the cut, a took it at {:.2} s (TTL {TTL_SECONDS} s, margin {FENCE_MARGIN_SECONDS} s)",
            b_stop.as_secs_f64(),
            a_start.as_secs_f64()
        );
        assert!(
            b_last.is_none_or(|i| i < a_first),
            "{g}: b still analysed it when a took it"
        );
        // b's own clock agrees: its camera's last frame came before a took the group.
        let b_sample = after_cut[a_first].nodes["b"]
            .clone()
            .expect("b's endpoint answers");
        assert!(
            !b_sample.analysing.contains(g) && b_sample.state != "member",
            "b is {} with {:?}",
            b_sample.state,
            b_sample.analysing
        );
        if let Some(last) = b_sample.last_frame_at.get(cam) {
            let last =
                time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
                    .unwrap();
            let a_took = time::OffsetDateTime::from(after_cut[a_first].wall);
            assert!(
                last < a_took,
                "{cam}: b's last frame {last} is not before a took it {a_took}"
            );
        }
    }

    // Reconnected, b rejoins and gets its share back.
    proxy.heal();
    assert!(
        wait_until(Duration::from_secs(40), || observer
            .latest()
            .is_some_and(|r| balanced(&r, 4, &["a", "b"]))),
        "b did not rejoin after the cut healed: {:?}",
        observer.latest().map(|r| owners(&r))
    );
    a.stop();
    b.stop();
    let rounds = observer.finish();
    let _ = rtsp.kill();
    let _ = rtsp.wait();
    let (_, frame_rounds, seen) = overlaps(&rounds, &camera_group);
    let (double, doubles) = double_analysis(&rounds);
    assert_eq!(
        double,
        Duration::ZERO,
        "a group was analysed by two nodes at once: {doubles:?}"
    );
    assert!(
        frame_rounds <= 1,
        "frames of one group flowed on two nodes: {seen:?}"
    );
    assert!(
        b.log().contains("lease lost"),
        "b never noticed the cut:\n{}",
        b.log()
    );
    check_cases(&[&a, &b], &receiver);
}

/// `gridwatch check` on a `[cluster]` section: the file, line and field of each problem.
#[test]
fn check_reports_cluster_problems_with_their_lines() {
    let dir = TempDir::new("cluster-check");
    let base = format!(
        r#"[centre]
name = "check"
[[units]]
id = "cbd"
name = "cbd"
[[groups]]
id = "g"
name = "g"
unit = "cbd"
[[cameras]]
id = "c"
name = "c"
unit = "cbd"
group = "g"
uri = "{clip}"
[model]
card = "{card}"
[dispatch]
url = "http://127.0.0.1:9/api/v1/cases"
"#,
        clip = repo("sample-streams/vtest.mp4").display(),
        card = repo("models/nanodet-g-416-coco.toml").display(),
    );
    let check = |cluster: &str| {
        let path = dir.path("node.toml");
        std::fs::write(&path, format!("{base}{cluster}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = base.lines().count();
    let stderr = check("[cluster]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nlease_ttl = 4\n");
    assert!(
        stderr.contains(&format!("node.toml:{}:", first + 3))
            && stderr.contains("unknown field `lease_ttl`")
            && stderr.contains("`cluster.lease_ttl`"),
        "{stderr}"
    );
    let stderr = check(
        "[cluster]\netcd_endpoints = [\"127.0.0.1:2379\"]\nlease_ttl_seconds = 4\nfence_margin_seconds = 3.0\nnode_id = \"a b\"\n",
    );
    for (line, field) in [
        (first + 2, "cluster.etcd_endpoints[0]"),
        (first + 4, "cluster.fence_margin_seconds"),
        (first + 5, "cluster.node_id"),
    ] {
        let found = stderr
            .lines()
            .find(|l| l.contains(&format!("`{field}`")))
            .unwrap_or_else(|| panic!("no {field} in:\n{stderr}"));
        assert!(
            found.contains(&format!("node.toml:{line}:")),
            "{field} at line {line}: {found}"
        );
    }
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
}
