//! The key area as data: the command centre, its management units, camera groups (with their
//! shifts and phases), cameras and their zones. Every stage reads the area; none of them owns
//! it, and it imports no stage: the configuration parses and validates it beside the stages'
//! own settings, then hands it out as an `Arc<Area>`.

pub mod geometry;
pub mod kinds;
pub mod organisation;
pub mod profile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use kinds::ObjectKind;

/// Frames analysed per second of a camera whose rate nothing decides: no zone (it only feeds the
/// wall), and no group or phase rate.
pub const DEFAULT_ANALYSIS_FPS: f64 = 2.0;
/// The slowest analysis rate: a frame every 100 s (the watchdog and the pipeline's frame-rate
/// fraction assume no slower).
pub const MIN_ANALYSIS_FPS: f64 = 0.01;
/// The fastest analysis rate: more than a camera delivers is a typo.
pub const MAX_ANALYSIS_FPS: f64 = 60.0;
/// The key area's local time (Shanghai).
pub const DEFAULT_UTC_OFFSET: &str = "+08:00";
/// `decoder = "auto"`: decodebin picks, preferring hardware decoders when installed.
pub const DEFAULT_DECODER: &str = "auto";

/// `scenario_overrides.<scenario id>` = a table of the scenario's thresholds to change; the
/// scenario stage lays them over its catalog.
pub type ScenarioOverrides = BTreeMap<String, toml::Table>;

/// The key area of one configuration.
#[derive(Debug, Clone)]
pub struct Area {
    pub centre: CommandCentre,
    pub units: Vec<Unit>,
    pub groups: Vec<Group>,
    pub cameras: Vec<Camera>,
    /// The plan's phases (实战启动, 实战攻坚, 长效管理), in order.
    pub phases: Vec<organisation::PlanPhase>,
    pub stations: Vec<organisation::Station>,
    pub departments: Vec<organisation::Department>,
    pub mobile_team: Option<organisation::MobileTeam>,
    /// Folder the relative paths of the configuration resolve against (camera files,
    /// pipeline templates).
    pub base_dir: PathBuf,
}

impl Area {
    pub fn camera_group(&self, camera: &Camera) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == camera.group)
    }

    pub fn unit(&self, id: &str) -> Option<&Unit> {
        self.units.iter().find(|u| u.id == id)
    }

    /// Resolves a path of the configuration against its folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The group phase named `name` of camera `camera`'s group.
    pub fn phase_named(&self, camera: usize, name: Option<&str>) -> Option<&GroupPhase> {
        let name = name?;
        self.camera_group(&self.cameras[camera])?
            .phases
            .iter()
            .find(|p| p.name == name)
    }

    /// The ids of the camera groups, in the configuration's order.
    pub fn group_ids(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.id.clone()).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCentre {
    pub name: String,
    /// Local time of the key area, for active hours and phases (Shanghai: "+08:00").
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    pub id: String,
    pub name: String,
    /// e.g. "business_district", "village", "residential".
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub unit: String,
    /// Frames analysed per second for every camera of the group, overriding what the zones'
    /// scenarios need; absent: each camera runs at the highest need of its zones.
    #[serde(default)]
    pub analysis_fps: Option<f64>,
    /// Decode keyframes only (decoder skips the rest): for slow scenarios, far cheaper.
    /// Absent: chosen per camera from the stream, when its rate is at or below the keyframe rate.
    #[serde(default)]
    pub keyframes_only: Option<bool>,
    /// Local-time windows when the group is analysed, e.g. ["08:00-20:00"] (day shift) or
    /// ["20:00-08:00"] (night shift); empty = always.
    #[serde(default)]
    pub active_hours: Vec<String>,
    /// Named phases with date ranges (launch, intensive, long-term) overriding the profile.
    #[serde(default)]
    pub phases: Vec<GroupPhase>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPhase {
    pub name: String,
    /// Start of the phase: a local date (from its midnight) or date and time (2026-11-01T08:00:00).
    pub from: toml::value::Datetime,
    /// End: a date is the last day (inclusive), a date and time the first moment after it;
    /// open-ended when absent.
    #[serde(default)]
    pub to: Option<toml::value::Datetime>,
    #[serde(default)]
    pub analysis_fps: Option<f64>,
    #[serde(default)]
    pub keyframes_only: Option<bool>,
    #[serde(default)]
    pub active_hours: Option<Vec<String>>,
    /// Overrides of scenario thresholds during the phase.
    #[serde(default)]
    pub crowd_min_persons: Option<usize>,
    #[serde(default)]
    pub crowd_min_duration_seconds: Option<f64>,
    /// Threshold overrides per scenario id while the phase runs (see `overrides`).
    #[serde(default)]
    pub scenario_overrides: ScenarioOverrides,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub group: String,
    /// `rtsp://…`, `file:///…`, a path (relative to this file), or `test:` for a test pattern.
    pub uri: String,
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub gb28181_device_id: Option<String>,
    #[serde(default)]
    pub gb28181_channel_id: Option<String>,
    /// Replay a file source from the start when it ends.
    #[serde(default)]
    pub r#loop: bool,
    /// A gst-launch template file overriding the one chosen from the uri scheme.
    #[serde(default)]
    pub pipeline: Option<PathBuf>,
    /// RTSP credentials, when not in the uri (kept out of logs).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub rtsp_transport: RtspTransport,
    /// "auto" (hardware decoders when present), "software", or a decoder element name.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// Overrides the group's keyframes-only setting for this camera.
    #[serde(default)]
    pub keyframes_only: Option<bool>,
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Threshold overrides per scenario id for this camera, e.g.
    /// `[cameras.scenario_overrides.illegal_parking] dwell_seconds = 60.0`.
    #[serde(default)]
    pub scenario_overrides: ScenarioOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    Udp,
    /// UDP first, TCP when UDP gets nothing.
    Auto,
}

impl RtspTransport {
    /// rtspsrc's `protocols` flags.
    pub fn protocols(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
            RtspTransport::Auto => "udp+tcp",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Polygon vertices in normalised frame coordinates (0..1, origin top-left).
    pub polygon: Vec<[f64; 2]>,
    /// Scenario ids evaluated in this zone.
    pub scenarios: Vec<String>,
    /// Raises the minimum score of every scenario's objects in this zone.
    #[serde(default)]
    pub min_score: Option<f32>,
    /// Restricts the scenarios' object kinds in this zone (e.g. only `car` for parking).
    #[serde(default)]
    pub kinds: Option<Vec<ObjectKind>>,
    /// Masks cut out of the polygon (a private forecourt, a tree, the on-screen clock).
    #[serde(default)]
    pub exclude: Vec<Vec<[f64; 2]>>,
    /// Which part of a box must be in the zone: `bottom_centre` (where it stands, the
    /// default), `centre`, or `overlap` (at least `min_overlap_ratio` of the box).
    #[serde(default)]
    pub anchor: geometry::Anchor,
    #[serde(default = "default_min_overlap_ratio")]
    pub min_overlap_ratio: f64,
    /// Labels for routing cases to dispatch targets (e.g. `border` for a zone on the boundary
    /// with the neighbouring town); see `[[dispatch.targets.routes]] zone_tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Model ids (`[[models]] id`) this zone's scenarios use; empty: `[scenarios.models]`,
    /// else the first model providing each kind a scenario needs.
    #[serde(default)]
    pub models: Vec<String>,
    /// Frames per second this zone is analysed at; absent: the highest need of its scenarios.
    #[serde(default)]
    pub analysis_fps: Option<f64>,
    /// What the zone's scenarios need (the catalog's rates), set by the configuration once the
    /// catalog is read; 0 until then.
    #[serde(skip)]
    pub scenario_fps: f64,
}

fn default_min_overlap_ratio() -> f64 {
    geometry::DEFAULT_MIN_OVERLAP_RATIO
}
fn default_utc_offset() -> String {
    DEFAULT_UTC_OFFSET.to_owned()
}
fn default_decoder() -> String {
    DEFAULT_DECODER.to_owned()
}

impl Zone {
    /// Frames per second the zone needs: its own rate, else its scenarios' (`None`: unknown).
    pub fn needed_fps(&self) -> Option<f64> {
        self.analysis_fps
            .or((self.scenario_fps > 0.0).then_some(self.scenario_fps))
    }

    /// The zone as the rules test boxes against it.
    pub fn shape(&self) -> geometry::ZoneShape {
        geometry::ZoneShape {
            include: self.polygon.clone(),
            exclude: self.exclude.clone(),
            anchor: self.anchor,
            min_overlap_ratio: self.min_overlap_ratio,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// An area with only a centre (Shanghai time) and the given `[[phases]]`.
    pub fn area_with_phases(toml_text: &str) -> Area {
        #[derive(Deserialize)]
        struct Phases {
            phases: Vec<organisation::PlanPhase>,
        }
        let p: Phases = toml::from_str(toml_text).expect("phases");
        Area {
            centre: CommandCentre {
                name: "c".into(),
                utc_offset: DEFAULT_UTC_OFFSET.into(),
            },
            units: Vec::new(),
            groups: Vec::new(),
            cameras: Vec::new(),
            phases: p.phases,
            stations: Vec::new(),
            departments: Vec::new(),
            mobile_team: None,
            base_dir: PathBuf::new(),
        }
    }
}
