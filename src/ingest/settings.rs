//! The `[ingest]` section: pacing of sources, the stall watchdog, reconnect timing and how
//! software decoders are run.

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_STALL_TIMEOUT_SECONDS: f64 = 10.0;
pub const DEFAULT_RECONNECT_INITIAL_SECONDS: f64 = 1.0;
pub const DEFAULT_RECONNECT_MAX_SECONDS: f64 = 60.0;
pub const DEFAULT_RTSP_TIMEOUT_SECONDS: f64 = 5.0;
/// Longer timings are typos; `inf` would panic in `Duration` arithmetic.
pub const MAX_INGEST_SECONDS: f64 = 86_400.0;
/// The shortest stall timeout and RTSP timeout.
pub const MIN_TIMEOUT_SECONDS: f64 = 0.1;
/// The shortest reconnect delay.
pub const MIN_RECONNECT_SECONDS: f64 = 0.01;
/// Threads per software decoder. One: a node decodes one stream per camera and has more cameras
/// than cores, so a decoder's own frame threads only add CPU (about 5 % more per 1080p H.264
/// frame, measured in BENCHMARKS.md) and hold a frame each until the next unit arrives.
pub const DEFAULT_DECODER_THREADS: u32 = 1;
/// More threads per decoder than any machine gridwatch runs on has cores is a typo.
pub const MAX_DECODER_THREADS: u32 = 64;
/// Every camera starts at once unless told otherwise: real cameras' keyframes and analysis
/// slots fall where their own clocks put them, so only replays start in phase.
pub const DEFAULT_START_SPREAD_SECONDS: f64 = 0.0;
/// Spreading the start over more than an hour is a typo.
pub const MAX_START_SPREAD_SECONDS: f64 = 3_600.0;
/// A needed keyframe that reaches its decoder later than this (beyond the stream's usual
/// lateness) is left undecoded with its group of pictures. One second: the decision latency
/// the town's command centre works to is a second, so a frame that late is no longer worth
/// the CPU it takes from frames that are still on time.
pub const DEFAULT_MAX_DECODE_LAG_MS: u64 = 1_000;
/// A minute behind real time is a typo (0 turns shedding off).
pub const MAX_DECODE_LAG_MS: u64 = 60_000;
/// Less than this is within a live source's ordinary jitter (a large keyframe's transfer).
pub const MIN_DECODE_LAG_MS: u64 = 250;
/// Niceness of each camera's decoding thread (decoding, scaling, conversion): under
/// overload the model drains the frames already decoded before more are decoded. 10: a node
/// runs one decoding thread per camera against one inference thread per worker, so a smaller
/// step is outweighed by the count (CFS weights 110 against 1024 per thread).
pub const DEFAULT_PIPELINE_NICE: i32 = 10;
/// The niceness range of Linux (an unprivileged process can only raise it).
pub const MAX_PIPELINE_NICE: i32 = 19;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Pace {
    /// Live cameras and demos: sources run at their own speed; a frame that arrives while the
    /// previous one of that camera still waits replaces it (counted as dropped).
    #[default]
    Realtime,
    /// Replays and tests: files are read as fast as inference takes them; no frame is dropped.
    Fast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    pub pace: Pace,
    /// No frame for this long restarts that camera (never less than 3 analysis intervals).
    pub stall_timeout_seconds: f64,
    /// First reconnect delay; doubles per failed attempt (full jitter) up to the max.
    pub reconnect_initial_seconds: f64,
    pub reconnect_max_seconds: f64,
    /// RTSP connection and receive timeout.
    pub rtsp_timeout_seconds: f64,
    /// Threads of each software decoder (`max-threads` of avdec_*); 0: the decoder's choice
    /// (frame threads, one per core), for a node with few high-resolution streams.
    pub decoder_threads: u32,
    /// Leave undecoded the delta units after a GOP's last analysis slot (streams without
    /// B-frames; see `ingest::keyframes`). `false` decodes every frame of the GOP.
    pub skip_gop_tails: bool,
    /// Under overload (a keyframe the analysis needs arrives while the camera's previous frame
    /// still waits for the model), a camera decoding keyframes only leaves that keyframe
    /// undecoded: its frame would only be dropped as superseded, and decoding takes CPU from the
    /// model. Realtime only. Off by default: measured while the templates chose frames with
    /// `videorate`, which held each frame until the next one arrived, the frame found waiting
    /// was rarely the one the keyframe would replace (live: it almost never fired; replays: it
    /// shed frames that would have been analysed). Not measured again since.
    pub shed_when_behind: bool,
    /// Realtime: a keyframe the analysis needs that reaches its decoder more than this late
    /// (beyond the stream's usual lateness, e.g. an RTSP jitter buffer) is left undecoded with
    /// its group of pictures, so a decoder behind real time catches up instead of spending the
    /// CPU on frames that are already late. 0: never.
    pub max_decode_lag_ms: u64,
    /// Niceness (0 to 19) of the thread that decodes, scales and converts each camera's frames
    /// (not its network threads): under overload the model drains the frames already decoded
    /// before more are decoded. 0: as the process.
    pub pipeline_nice: i32,
    /// Camera i of n starts i/n of this after the run: a node's cameras do not all connect,
    /// and replayed files do not all decode their keyframes and analysis slots, at one instant.
    pub start_spread_seconds: f64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            pace: Pace::default(),
            stall_timeout_seconds: DEFAULT_STALL_TIMEOUT_SECONDS,
            reconnect_initial_seconds: DEFAULT_RECONNECT_INITIAL_SECONDS,
            reconnect_max_seconds: DEFAULT_RECONNECT_MAX_SECONDS,
            rtsp_timeout_seconds: DEFAULT_RTSP_TIMEOUT_SECONDS,
            decoder_threads: DEFAULT_DECODER_THREADS,
            skip_gop_tails: true,
            start_spread_seconds: DEFAULT_START_SPREAD_SECONDS,
            shed_when_behind: false,
            max_decode_lag_ms: DEFAULT_MAX_DECODE_LAG_MS,
            pipeline_nice: DEFAULT_PIPELINE_NICE,
        }
    }
}

/// `seconds` within [`min`, `MAX_INGEST_SECONDS`] as a `Duration`; a value that is not a number
/// (never one that passed `validate`) gives `fallback`. Never panics.
fn bounded(seconds: f64, min: f64, fallback: f64) -> Duration {
    let s = if seconds.is_nan() { fallback } else { seconds };
    Duration::try_from_secs_f64(s.clamp(min, MAX_INGEST_SECONDS)).unwrap_or(Duration::from_secs(1))
}

impl IngestSettings {
    /// No frame for this long restarts the camera (at least [`MIN_TIMEOUT_SECONDS`]).
    pub fn stall_timeout(&self) -> Duration {
        bounded(
            self.stall_timeout_seconds,
            MIN_TIMEOUT_SECONDS,
            DEFAULT_STALL_TIMEOUT_SECONDS,
        )
    }

    /// The first reconnect delay (at least [`MIN_RECONNECT_SECONDS`]).
    pub fn reconnect_initial(&self) -> Duration {
        bounded(
            self.reconnect_initial_seconds,
            MIN_RECONNECT_SECONDS,
            DEFAULT_RECONNECT_INITIAL_SECONDS,
        )
    }

    /// The longest reconnect delay (at least [`MIN_RECONNECT_SECONDS`]).
    pub fn reconnect_max(&self) -> Duration {
        bounded(
            self.reconnect_max_seconds,
            MIN_RECONNECT_SECONDS,
            DEFAULT_RECONNECT_MAX_SECONDS,
        )
    }

    /// RTSP connection and receive timeout (at least [`MIN_TIMEOUT_SECONDS`]).
    pub fn rtsp_timeout(&self) -> Duration {
        bounded(
            self.rtsp_timeout_seconds,
            MIN_TIMEOUT_SECONDS,
            DEFAULT_RTSP_TIMEOUT_SECONDS,
        )
    }

    /// How long camera `index` of `count` waits before its first start: an even share of
    /// `start_spread_seconds` (0 for the first camera). Never panics.
    pub fn start_delay(&self, index: usize, count: usize) -> Duration {
        let spread = if (0.0..=MAX_START_SPREAD_SECONDS).contains(&self.start_spread_seconds) {
            self.start_spread_seconds
        } else {
            0.0
        };
        let share = index.min(count) as f64 / count.max(1) as f64;
        Duration::try_from_secs_f64(spread * share).unwrap_or_default()
    }

    /// Range checks: (field below `ingest`, message) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // The lower bounds are what the pipeline would use anyway (see the accessors).
        for (field, v, min) in [
            (
                "stall_timeout_seconds",
                self.stall_timeout_seconds,
                MIN_TIMEOUT_SECONDS,
            ),
            (
                "reconnect_initial_seconds",
                self.reconnect_initial_seconds,
                MIN_RECONNECT_SECONDS,
            ),
            (
                "reconnect_max_seconds",
                self.reconnect_max_seconds,
                MIN_RECONNECT_SECONDS,
            ),
            (
                "rtsp_timeout_seconds",
                self.rtsp_timeout_seconds,
                MIN_TIMEOUT_SECONDS,
            ),
        ] {
            if !(min..=MAX_INGEST_SECONDS).contains(&v) {
                out.push((
                    field.to_owned(),
                    format!(
                        "must be a number of seconds in [{min}, {MAX_INGEST_SECONDS}], got {v}"
                    ),
                ));
            }
        }
        if self.decoder_threads > MAX_DECODER_THREADS {
            out.push((
                "decoder_threads".into(),
                format!(
                    "must be 0 (the decoder's choice) to {MAX_DECODER_THREADS}, got {}",
                    self.decoder_threads
                ),
            ));
        }
        if !(0.0..=MAX_START_SPREAD_SECONDS).contains(&self.start_spread_seconds) {
            out.push((
                "start_spread_seconds".into(),
                format!(
                    "must be a number of seconds in [0, {MAX_START_SPREAD_SECONDS}], got {}",
                    self.start_spread_seconds
                ),
            ));
        }
        let lag = self.max_decode_lag_ms;
        if lag != 0 && !(MIN_DECODE_LAG_MS..=MAX_DECODE_LAG_MS).contains(&lag) {
            out.push((
                "max_decode_lag_ms".into(),
                format!(
                    "must be 0 (never shed) or {MIN_DECODE_LAG_MS} to {MAX_DECODE_LAG_MS} ms, got {lag}"
                ),
            ));
        }
        if !(0..=MAX_PIPELINE_NICE).contains(&self.pipeline_nice) {
            out.push((
                "pipeline_nice".into(),
                format!(
                    "must be a niceness from 0 (as the process) to {MAX_PIPELINE_NICE}, got {}",
                    self.pipeline_nice
                ),
            ));
        }
        if self.reconnect_max_seconds < self.reconnect_initial_seconds {
            out.push((
                "reconnect_max_seconds".into(),
                format!(
                    "must not be less than reconnect_initial_seconds ({} < {})",
                    self.reconnect_max_seconds, self.reconnect_initial_seconds
                ),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ODD: [f64; 8] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -1.0,
        0.0,
        5e-324,
        1e300,
        f64::MAX,
    ];

    #[test]
    fn odd_timings_are_refused_and_still_convert_without_a_panic() {
        for v in ODD {
            let s = IngestSettings {
                stall_timeout_seconds: v,
                reconnect_initial_seconds: v,
                reconnect_max_seconds: v,
                rtsp_timeout_seconds: v,
                ..IngestSettings::default()
            };
            assert_eq!(s.validate().len(), 4, "{v}: {:?}", s.validate());
            let max = Duration::from_secs(MAX_INGEST_SECONDS as u64);
            for d in [
                s.stall_timeout(),
                s.reconnect_initial(),
                s.reconnect_max(),
                s.rtsp_timeout(),
            ] {
                assert!(d >= Duration::from_millis(10) && d <= max, "{v}: {d:?}");
            }
        }
        let ok = IngestSettings::default();
        assert!(ok.validate().is_empty());
        let threads = IngestSettings {
            decoder_threads: MAX_DECODER_THREADS + 1,
            ..IngestSettings::default()
        };
        assert_eq!(threads.validate()[0].0, "decoder_threads");
        for (odd, field) in [
            (
                IngestSettings {
                    max_decode_lag_ms: MAX_DECODE_LAG_MS + 1,
                    ..IngestSettings::default()
                },
                "max_decode_lag_ms",
            ),
            (
                IngestSettings {
                    max_decode_lag_ms: MIN_DECODE_LAG_MS - 1,
                    ..IngestSettings::default()
                },
                "max_decode_lag_ms",
            ),
            (
                IngestSettings {
                    pipeline_nice: -1,
                    ..IngestSettings::default()
                },
                "pipeline_nice",
            ),
            (
                IngestSettings {
                    pipeline_nice: MAX_PIPELINE_NICE + 1,
                    ..IngestSettings::default()
                },
                "pipeline_nice",
            ),
        ] {
            assert_eq!(odd.validate()[0].0, field);
        }
        assert_eq!(ok.rtsp_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn cameras_start_spread_evenly_and_odd_spreads_are_refused() {
        let s = IngestSettings {
            start_spread_seconds: 4.0,
            ..IngestSettings::default()
        };
        let delays: Vec<Duration> = (0..4).map(|i| s.start_delay(i, 4)).collect();
        assert_eq!(
            delays,
            [0, 1000, 2000, 3000].map(Duration::from_millis).to_vec()
        );
        assert_eq!(IngestSettings::default().start_delay(3, 4), Duration::ZERO);
        for v in [
            f64::NAN,
            f64::INFINITY,
            -1.0,
            MAX_START_SPREAD_SECONDS + 1.0,
        ] {
            let odd = IngestSettings {
                start_spread_seconds: v,
                ..IngestSettings::default()
            };
            assert_eq!(odd.validate()[0].0, "start_spread_seconds", "{v}");
            assert_eq!(odd.start_delay(1, 2), Duration::ZERO, "{v}");
        }
    }
}
