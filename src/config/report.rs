//! What `gridwatch check` says about a valid configuration besides "ok": warnings (scenarios
//! that will not run, cases no target takes, models that provide nothing a zone asked for) and
//! notes (which models each camera runs, the fire baseline standing in, cluster mode).

use super::Config;
use crate::area::kinds::ObjectKind;

impl Config {
    /// The lines `check` prints before its verdict, each starting `warning:` or `note:`.
    pub fn check_report(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.report_inactive(&mut out);
        // Cases no dispatch target takes are stored but never sent.
        out.extend(
            self.unrouted()
                .into_iter()
                .map(|gap| format!("warning: {gap}")),
        );
        self.report_models(&mut out);
        self.report_fire_baseline(&mut out);
        if let Some(cluster) = &self.cluster {
            out.push(format!(
                "note: cluster mode: the {} camera groups are divided among the nodes through etcd at {} (lease {} s; a lost node's groups move after it); each node needs its own --node-id",
                self.area.groups.len(),
                cluster.etcd_endpoints.join(", "),
                cluster.lease_ttl_seconds
            ));
        }
        out
    }

    /// Scenarios no configured model (nor the fire baseline) can serve: warnings, not errors.
    fn report_inactive(&self, out: &mut Vec<String>) {
        let Ok(kinds) = self.provided_kinds() else {
            return;
        };
        for i in self.catalog.inactive(&kinds) {
            let zones = if self.scenario_enabled(&i.id) {
                " (enabled in a zone: it will not run)"
            } else {
                ""
            };
            out.push(format!(
                "warning: scenario `{}` inactive{zones}: {}",
                i.id, i.reason
            ));
        }
    }

    fn scenario_enabled(&self, id: &str) -> bool {
        self.area
            .cameras
            .iter()
            .flat_map(|cam| &cam.zones)
            .any(|z| z.scenarios.iter().any(|s| s == id))
    }

    /// With several models: what each camera runs, zones whose named models serve nothing,
    /// and models no camera runs.
    fn report_models(&self, out: &mut Vec<String>) {
        let Ok(kinds) = self.models_kinds() else {
            return;
        };
        let selections = self.camera_models(&kinds);
        let ids = self.model_ids();
        for (camera, sel) in self.area.cameras.iter().zip(&selections) {
            for u in &sel.unserved {
                out.push(format!("warning: camera {}: {u}", camera.id));
            }
            if ids.len() > 1 {
                out.push(format!(
                    "note: camera {} runs {}",
                    camera.id,
                    sel.plan.label()
                ));
            }
        }
        for (i, id) in ids.iter().enumerate().filter(|_| ids.len() > 1) {
            if !selections
                .iter()
                .any(|s| s.plan.models.iter().any(|u| u.index == i))
            {
                out.push(format!(
                    "warning: model `{id}` is configured but no camera runs it (no zone's scenario needs it or names it)"
                ));
            }
        }
    }

    fn report_fire_baseline(&self, out: &mut Vec<String>) {
        let Ok(model) = self.model_kinds() else {
            return;
        };
        if !crate::scenarios::fire_baseline_in_use(&self.scenarios.fire_baseline, &model) {
            return;
        }
        for s in self.catalog.scenarios.iter().filter(|s| {
            s.kinds
                .iter()
                .any(|k| matches!(k, ObjectKind::Fire | ObjectKind::Smoke))
        }) {
            out.push(format!(
                "note: scenario `{}` uses the classical OpenCV fire/smoke baseline: the models have no fire or smoke class ([scenarios.fire_baseline])",
                s.id
            ));
        }
    }
}
