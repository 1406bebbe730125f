//! Configuration reload (SIGHUP): re-reads the configuration file and works out what can change
//! while the pipeline runs — cameras added, removed or edited (only those restart), zones,
//! threshold overrides, groups and units, crowd and fire-baseline thresholds — keeping every
//! running camera's index. Any other change (models, inference, ingest, gate, tracker, cases,
//! dispatch, telemetry, review, the catalog) needs a restart, and such a reload is refused whole:
//! half-applied settings would be worse than none.

use std::path::Path;

use crate::config::{Config, ConfigError};

/// What a reload changes, by camera index in the arranged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Source or group settings changed: the camera's pipeline restarts.
    pub restart: Vec<usize>,
    /// New cameras (indices after the existing ones).
    pub added: Vec<usize>,
    /// Cameras no longer configured: stopped; their slot stays, with no zones.
    pub retired: Vec<usize>,
    /// Cameras whose scenario rules must be rebuilt (zones, overrides, group or thresholds
    /// changed, and every restarted, added or retired camera).
    pub rules_changed: Vec<usize>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        self.restart.is_empty()
            && self.added.is_empty()
            && self.retired.is_empty()
            && self.rules_changed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("reload refused: [{0}] changed, which needs a restart; nothing was applied")]
    NeedsRestart(String),
}

/// Loads `path` and arranges it against the running configuration.
pub fn load(current: &Config, path: Option<&Path>) -> Result<(Config, ReloadPlan), ReloadError> {
    let new = match path {
        Some(path) => Config::load(path)?,
        // No file to re-read (the embedded default, or a configuration given as text): what
        // can still change is the zone-state cards, e.g. one the console just trained.
        None => {
            let mut same = current.clone();
            same.read_state_zones();
            same
        }
    };
    arrange(current, new)
}

/// Settings compared by their debug form: the config types are plain data, so equal text
/// means equal settings.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Orders `new`'s cameras so that every running camera keeps its index (new ones are appended,
/// removed ones stay as retired slots without zones) and lists what changed.
pub fn arrange(current: &Config, mut new: Config) -> Result<(Config, ReloadPlan), ReloadError> {
    let group_ids = |c: &Config| c.area.group_ids();
    // Nodes reloaded one after another would disagree on which group a camera is in, and two
    // of them could analyse it at once.
    let same_camera_groups = current.area.cameras.iter().all(|c| {
        new.area
            .cameras
            .iter()
            .find(|n| n.id == c.id)
            .is_none_or(|n| n.group == c.group)
    });
    let fixed: [(&str, bool); 14] = [
        (
            "cameras (a camera's group, in cluster mode)",
            current.cluster.is_none() || same_camera_groups,
        ),
        ("cluster", same(&current.cluster, &new.cluster)),
        // Nodes divide the groups among themselves by id: all must see the same set.
        (
            "groups (their ids, in cluster mode)",
            current.cluster.is_none() || group_ids(current) == group_ids(&new),
        ),
        ("centre", same(&current.area.centre, &new.area.centre)),
        ("models", same(&current.models, &new.models)),
        ("inference", same(&current.inference, &new.inference)),
        ("ingest", same(&current.ingest, &new.ingest)),
        ("gate", same(&current.gate, &new.gate)),
        ("tracker", same(&current.tracker, &new.tracker)),
        ("cases", same(&current.cases, &new.cases)),
        ("dispatch", same(&current.dispatch, &new.dispatch)),
        ("telemetry", same(&current.telemetry, &new.telemetry)),
        ("review", same(&current.review, &new.review)),
        (
            "scenarios.catalog",
            same(&current.scenarios.catalog, &new.scenarios.catalog)
                && same(&current.catalog.scenarios, &new.catalog.scenarios),
        ),
    ];
    let changed: Vec<&str> = fixed
        .iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect();
    if !changed.is_empty() {
        return Err(ReloadError::NeedsRestart(changed.join("], [")));
    }
    let thresholds_changed = !same(
        &current.scenarios.crowd_gathering,
        &new.scenarios.crowd_gathering,
    ) || !same(
        &current.scenarios.fire_baseline,
        &new.scenarios.fire_baseline,
    );

    let mut plan = ReloadPlan::default();
    let mut new_area = (*new.area).clone();
    let mut incoming = std::mem::take(&mut new_area.cameras);
    let mut arranged = Vec::with_capacity(current.area.cameras.len() + incoming.len());
    for (i, old) in current.area.cameras.iter().enumerate() {
        match incoming.iter().position(|c| c.id == old.id) {
            Some(k) => {
                let cam = incoming.remove(k);
                let source = |c: &crate::area::Camera| {
                    let mut c = c.clone();
                    c.zones.clear();
                    c.scenario_overrides.clear();
                    format!("{c:?}")
                };
                let group_changed = !same(
                    &current.area.camera_group(old),
                    &new_area.groups.iter().find(|g| g.id == cam.group),
                );
                if source(old) != source(&cam) || group_changed {
                    plan.restart.push(i);
                }
                let states = |c: &Config| {
                    c.state_zones
                        .iter()
                        .filter(|(camera, _, _)| *camera == old.id)
                        .cloned()
                        .collect::<Vec<_>>()
                };
                if group_changed
                    || thresholds_changed
                    || states(current) != states(&new)
                    || !same(&old.zones, &cam.zones)
                    || !same(&old.scenario_overrides, &cam.scenario_overrides)
                    || plan.restart.last() == Some(&i)
                {
                    plan.rules_changed.push(i);
                }
                arranged.push(cam);
            }
            None => {
                // A retired slot keeps its old entry for in-flight events; no zones: no rules.
                let mut gone = old.clone();
                gone.zones.clear();
                plan.retired.push(i);
                if !old.zones.is_empty() {
                    plan.rules_changed.push(i);
                }
                arranged.push(gone);
            }
        }
    }
    for cam in incoming {
        let i = arranged.len();
        plan.added.push(i);
        plan.rules_changed.push(i);
        arranged.push(cam);
    }
    new_area.cameras = arranged;
    new.area = std::sync::Arc::new(new_area);
    Ok((new, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn area(cameras: &str, crowd: &str) -> Config {
        let text = format!(
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
{cameras}
[model]
card = "../models/nanodet-g-416-coco.toml"
[scenarios.crowd_gathering]
min_persons = {crowd}
[dispatch]
url = "http://127.0.0.1:1/"
"#
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        Config::from_text(&text, "t.toml", &dir).unwrap_or_else(|e| panic!("{e}"))
    }

    fn cam(id: &str, uri: &str, zone_persons: &str) -> String {
        format!(
            "[[cameras]]\nid = \"{id}\"\nname = \"{id}\"\nunit = \"u\"\ngroup = \"g\"\nuri = \"{uri}\"\n\
             [[cameras.zones]]\nid = \"z\"\npolygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n\
             scenarios = [\"crowd_gathering\"]\n{zone_persons}"
        )
    }

    #[test]
    fn running_cameras_keep_their_index_and_only_edited_ones_restart() {
        let current = area(
            &[
                cam("a", "test:", ""),
                cam("b", "test:", ""),
                cam("c", "test:", ""),
            ]
            .concat(),
            "5",
        );
        // b removed, c's source edited, a's zone edited, d added, listed in another order.
        let edited_zone = "[cameras.scenario_overrides.crowd_gathering]\nmin_persons = 2\n";
        let new = area(
            &[
                cam("d", "test:", ""),
                cam("c", "rtsp://10.0.0.9/stream", ""),
                cam("a", "test:", edited_zone),
            ]
            .concat(),
            "5",
        );
        let (arranged, plan) = arrange(&current, new).unwrap();
        let ids: Vec<&str> = arranged
            .area
            .cameras
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(plan.restart, [2]);
        assert_eq!(plan.retired, [1]);
        assert_eq!(plan.added, [3]);
        assert_eq!(plan.rules_changed, [0, 1, 2, 3]);
        assert!(arranged.area.cameras[1].zones.is_empty());
        // The same file again changes nothing.
        let (_, plan) = arrange(&arranged, arranged.clone()).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        // Global thresholds rebuild every camera's rules but restart none.
        let (_, plan) = arrange(
            &current,
            area(
                &[
                    cam("a", "test:", ""),
                    cam("b", "test:", ""),
                    cam("c", "test:", ""),
                ]
                .concat(),
                "3",
            ),
        )
        .unwrap();
        assert_eq!((plan.restart.len(), plan.rules_changed.len()), (0, 3));
    }

    #[test]
    fn a_new_classifier_card_rebuilds_only_its_cameras_rules() {
        let current = area(
            &[cam("a", "test:", ""), cam("b", "test:", "")].concat(),
            "5",
        );
        let mut new = current.clone();
        new.state_zones = vec![("b".into(), "z".into(), "waterlogging".into())];
        let (_, plan) = arrange(&current, new).unwrap();
        assert_eq!(plan.rules_changed, [1]);
        assert!(plan.restart.is_empty(), "{plan:?}");
    }

    #[test]
    fn without_a_file_a_reload_picks_up_new_cards() {
        let mut current = area(
            &[cam("a", "test:", ""), cam("b", "test:", "")].concat(),
            "5",
        );
        let dir =
            std::env::temp_dir().join(format!("gridwatch-reload-cards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        current.states.cards_dir = Some(dir.clone());
        let (_, plan) = load(&current, None).unwrap();
        assert!(plan.is_empty(), "no card yet: {plan:?}");
        std::fs::write(
            dir.join("b.z.crowd_gathering.toml"),
            "camera = \"b\"\nzone = \"z\"\nstate = \"crowd_gathering\"\n",
        )
        .unwrap();
        let (next, plan) = load(&current, None).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(plan.rules_changed, [1]);
        assert_eq!(next.state_zones.len(), 1);
        assert_eq!(
            next.area.cameras.len(),
            2,
            "the configuration itself is kept"
        );
    }

    #[test]
    fn a_change_that_needs_a_restart_is_refused_whole() {
        let current = area(&cam("a", "test:", ""), "5");
        let mut new = current.clone();
        new.models[0].score_threshold = 0.5;
        let cameras = &mut Arc::make_mut(&mut new.area).cameras;
        cameras.push(current.area.cameras[0].clone());
        cameras[1].id = "b".into();
        let err = arrange(&current, new).unwrap_err();
        assert!(err.to_string().contains("[models]"), "{err}");
    }

    #[test]
    fn in_cluster_mode_groups_and_camera_groups_stay_put() {
        let mut current = area(&cam("a", "test:", ""), "5");
        let mut second = current.area.groups[0].clone();
        second.id = "g2".into();
        Arc::make_mut(&mut current.area).groups.push(second);
        // Without [cluster] a camera may move to another group (it restarts).
        let mut moved = current.clone();
        Arc::make_mut(&mut moved.area).cameras[0].group = "g2".into();
        assert!(arrange(&current, moved.clone()).is_ok());
        current.cluster = Some(crate::cluster::settings::ClusterSettings {
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            node_id: None,
            lease_ttl_seconds: 10,
            fence_margin_seconds: 3.0,
            key_prefix: "/gridwatch".into(),
            etcd_timeout_seconds: 2.0,
            poll_interval_ms: 500,
            advertise_url: None,
        });
        moved.cluster = current.cluster.clone();
        let err = arrange(&current, moved).unwrap_err().to_string();
        assert!(err.contains("a camera's group"), "{err}");
        let mut fewer_groups = current.clone();
        Arc::make_mut(&mut fewer_groups.area).groups.pop();
        let err = arrange(&current, fewer_groups).unwrap_err().to_string();
        assert!(err.contains("groups (their ids"), "{err}");
    }
}
